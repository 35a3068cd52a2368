"""Small helpers shared by the shim's one-shot commands and its server (stdlib only)."""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)

__all__ = ["DEFAULT_RUNC_ROOT", "record", "resolve_binary"]

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


def _record(cls: type) -> type:
    """A dependency-free stand-in for ``@dataclass`` (which imports ``inspect``, tens of ms on
    the ``start`` path): ``__init__`` from the annotated fields and their defaults (list
    defaults are copied), ``__eq__`` and ``__repr__``."""
    names = list(cls.__dict__.get("__annotations__", {}))  # noqa: RUF063 - no inspect here
    defaults = {n: cls.__dict__[n] for n in names if n in cls.__dict__}

    def __init__(self: object, *args: object, **kwargs: object) -> None:
        if len(args) > len(names):
            raise TypeError(f"{cls.__name__}() takes at most {len(names)} positional arguments")
        values = dict(zip(names, args, strict=False))
        for key, value in kwargs.items():
            if key not in names or key in values:
                raise TypeError(f"{cls.__name__}() got an unexpected or repeated argument {key!r}")
            values[key] = value
        for name in names:
            if name in values:
                value = values[name]
            elif name in defaults:
                value = defaults[name]
                if isinstance(value, list):
                    value = list(value)
            else:
                raise TypeError(f"{cls.__name__}() missing argument {name!r}")
            setattr(self, name, value)

    def __eq__(self: object, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in names)

    def __repr__(self: object) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
        return f"{cls.__name__}({fields})"

    cls.__init__ = __init__  # type: ignore[misc]
    cls.__eq__ = __eq__  # type: ignore[method-assign,assignment]
    cls.__repr__ = __repr__  # type: ignore[method-assign,assignment]
    cls.__hash__ = None  # type: ignore[assignment]
    return cls


if TYPE_CHECKING:
    from dataclasses import dataclass as record
else:
    record = _record
