"""The optional check a server makes when it accepts a connection (Go ttrpc ``Handshaker``).

The one Go ships, ``UnixSocketRequireSameUser``, reads the peer's SO_PEERCRED and closes the
connection without a word unless the peer runs with the server's effective uid and gid;
containerd's ttrpc socket and the shims turn it on. Pass ``require_same_user`` (or any
``(PeerCredentials) -> bool``) as ``Server(peer_check=...)``.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Any, NamedTuple

__all__ = ["PeerCredentials", "peer_credentials", "require_same_user"]

_UCRED = struct.Struct("3i")


class PeerCredentials(NamedTuple):
    pid: int
    uid: int
    gid: int


def peer_credentials(sock: Any) -> PeerCredentials:
    """SO_PEERCRED of a connected unix socket: the peer's credentials when it connected."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return PeerCredentials(*_UCRED.unpack(raw))


def require_same_user(creds: PeerCredentials) -> bool:
    """The peer runs with this process's effective uid and gid."""
    return creds.uid == os.geteuid() and creds.gid == os.getegid()
