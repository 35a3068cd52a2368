"""Unix socket files of the daemon: refuse a live one, replace a stale one, set mode and owner."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from pathlib import Path

from arun.errdefs import FailedPreconditionError

SOCKET_MODE = 0o660
DIR_MODE = 0o711


async def is_live(path: Path, wait: float = 1.0) -> bool:
    """Whether something accepts connections on the unix socket at ``path`` within ``wait`` seconds."""
    try:
        async with asyncio.timeout(wait):
            _, writer = await asyncio.open_unix_connection(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except TimeoutError:
        # A listener that does not accept in time still holds the socket (full backlog).
        return True
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def prepare(path: Path) -> None:
    """Make ``path`` free for a new listener.

    A socket a live process answers on is refused with FailedPrecondition (another
    daemon owns it); a stale socket file is removed; any other kind of file is
    refused rather than deleted.
    """
    if not _existing_socket(path):
        return
    if await is_live(path):
        raise FailedPreconditionError(f"another daemon is serving on {str(path)!r}")
    remove(path, None)


def _existing_socket(path: Path) -> bool:
    """Create the parent directory; whether ``path`` is a socket file (refuse any other file)."""
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(st.st_mode):
        raise FailedPreconditionError(f"{str(path)!r} exists and is not a socket")
    return True


def secure(path: Path, uid: int, gid: int) -> int:
    """Set mode 0660 and, when asked for another owner, chown; returns the inode for ``remove``."""
    os.chmod(path, SOCKET_MODE)
    st = path.stat()
    if (uid, gid) != (st.st_uid, st.st_gid) and (uid or gid):
        os.chown(path, uid, gid)
    return st.st_ino


def remove(path: Path, inode: int | None) -> None:
    """Unlink our socket file, unless something else has replaced it since."""
    with contextlib.suppress(FileNotFoundError):
        if inode is None or path.lstat().st_ino == inode:
            path.unlink()
