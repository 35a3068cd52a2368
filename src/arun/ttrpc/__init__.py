"""ttrpc: containerd's lightweight RPC over unix sockets, as a sans-IO codec with asyncio edges.

Imports nothing of arun but the generated envelope messages, so it could become its own
distribution. See ``frames`` (the 10-byte header), ``connection`` (the per-stream state
machine), ``server``/``client`` (the only modules that await) and ``service`` (dispatch
and stubs from protobuf descriptors).
"""

from arun.ttrpc.client import Client, ClientStream
from arun.ttrpc.connection import Connection, Role, StreamState
from arun.ttrpc.errors import (
    ClosedError,
    LocalProtocolError,
    OversizedMessageError,
    ProtocolError,
    RemoteProtocolError,
    StatusError,
    TTRPCError,
)
from arun.ttrpc.frames import MAX_DATA, Flags, MessageType
from arun.ttrpc.metadata import MD
from arun.ttrpc.server import PeerCredentials, RequestInfo, Server, require_same_user
from arun.ttrpc.service import Method, ServiceStub
from arun.ttrpc.status import Code

__all__ = [
    "MAX_DATA",
    "MD",
    "Client",
    "ClientStream",
    "ClosedError",
    "Code",
    "Connection",
    "Flags",
    "LocalProtocolError",
    "MessageType",
    "Method",
    "OversizedMessageError",
    "PeerCredentials",
    "ProtocolError",
    "RemoteProtocolError",
    "RequestInfo",
    "Role",
    "Server",
    "ServiceStub",
    "StatusError",
    "StreamState",
    "TTRPCError",
    "require_same_user",
]
