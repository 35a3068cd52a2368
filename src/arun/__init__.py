"""arun: a containerd-compatible container runtime daemon in Python.

``arun.Client`` (``arun.client``) talks to a daemon over its socket;
``arun.Runtime`` (``arun.embedded``) is the same API over an arun booted in
the caller's event loop. Both are imported on first use, so ``import arun``
stays cheap (the shim imports this package on its fast start path) and the
package root adds no import edges between layers. Their types are declared
in ``__init__.pyi``.
"""

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = ["Client", "Runtime", "__version__"]

_LAZY = {"Client": "arun.client", "Runtime": "arun.embedded"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'arun' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
