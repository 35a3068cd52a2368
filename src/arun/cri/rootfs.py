"""Reading small files (``/etc/passwd``, ``/etc/group``) of a container's root filesystem before
the container exists, from its snapshot's mounts.

Overlay and bind mounts are read in place, layer by layer (upper first; an overlay
whiteout hides the file, an opaque directory hides the layers below it); other
mount types are mounted on a temporary directory.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from arun.core.mount import Mount, overlay_dirs
from arun.mount import temp_mount

_OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(path: str) -> bool:
    for name in _OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name) == b"y":
                return True
        except OSError:
            continue
    return False


def _read_layers(layers: Sequence[str], rel: str) -> bytes | None:
    parts = [p for p in rel.split("/") if p]
    for layer in layers:
        hidden = False
        # A whiteout or opaque directory on the way down hides everything below this layer.
        cur = layer
        for i, part in enumerate(parts):
            cur = os.path.join(cur, part)
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                break
            except OSError:
                break
            if _is_whiteout(st):
                return None
            if i < len(parts) - 1:
                if not stat.S_ISDIR(st.st_mode):
                    return None
                if _opaque(cur):
                    hidden = True
            elif stat.S_ISREG(st.st_mode):
                with open(cur, "rb") as f:
                    return f.read(1 << 20)
            else:
                return None
        if hidden:
            return None
    return None


def _layers(mounts: Sequence[Mount]) -> list[str] | None:
    if len(mounts) != 1:
        return None
    m = mounts[0]
    if m.type == "bind" or "bind" in m.options or "rbind" in m.options:
        return [m.source]
    if m.type == "overlay":
        upper, lowers = overlay_dirs(m)
        return ([upper] if upper else []) + list(lowers)
    return None


def read_file_sync(mounts: Sequence[Mount], rel: str) -> bytes | None:
    layers = _layers(mounts)
    if layers is None:
        raise ValueError("mounts cannot be read in place")
    return _read_layers(layers, rel)


async def read_files(mounts: Sequence[Mount], *rels: str) -> dict[str, bytes | None]:
    """The contents of files at ``rels`` (relative to the root) in the filesystem of ``mounts``."""
    import asyncio

    layers = _layers(mounts)
    if layers is not None:
        found = layers

        def read() -> dict[str, bytes | None]:
            return {r: _read_layers(found, r) for r in rels}

        return await asyncio.to_thread(read)
    async with temp_mount(mounts) as root:

        def read_mounted() -> dict[str, bytes | None]:
            out: dict[str, bytes | None] = {}
            for r in rels:
                p = Path(root) / r.lstrip("/")
                with contextlib.suppress(OSError):
                    resolved = p.resolve()
                    resolved.relative_to(Path(root).resolve())
                    out[r] = resolved.read_bytes() if resolved.is_file() else None
                    continue
                out[r] = None
            return out

        return await asyncio.to_thread(read_mounted)
