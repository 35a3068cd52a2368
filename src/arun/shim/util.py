"""Small helpers shared by the shim's one-shot commands and its server (stdlib only)."""

from __future__ import annotations

import os

#: Where runc keeps container state, below which the namespace is appended (containerd uses
#: /run/containerd/runc; arun keeps its own so the two never see each other's containers).
DEFAULT_RUNC_ROOT = "/run/arun/runc"

_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def resolve_binary(binary: str) -> str:
    """An absolute path for ``binary`` (searched on PATH if it has no slash).

    Raises FileNotFoundError if there is none.
    """
    if "/" in binary:
        return binary
    for directory in (os.environ.get("PATH") or _DEFAULT_PATH).split(":"):
        candidate = os.path.join(directory or ".", binary)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    raise FileNotFoundError(f"OCI runtime binary {binary!r} not found in PATH")
