"""Small helpers shared by the shim's one-shot commands and its server (stdlib only)."""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    T = TypeVar("T")

__all__ = [
    "DEFAULT_RUNC_ROOT",
    "make_temp_dir",
    "make_temp_file",
    "percent_decode",
    "record",
    "remove_tree",
    "resolve_binary",
    "split_uri",
    "which",
]

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


def which(binary: str) -> str | None:
    """:func:`resolve_binary`, or None when there is none (``shutil.which`` without ``shutil``,
    which would bring bz2, lzma and fnmatch into every shim's image)."""
    try:
        path = resolve_binary(binary)
    except FileNotFoundError:
        return None
    return path if os.access(path, os.X_OK) and not os.path.isdir(path) else None


# -- temporary files and directories, without ``tempfile`` (and its ``random``) -----------------

_TEMP_ATTEMPTS = 100


def _create_unique(
    directory: str | None, prefix: str, suffix: str, create: Callable[[str], T], what: str
) -> T:
    """``create(path)`` at a new random name in ``directory`` (``$TMPDIR``, else /tmp), trying
    another name while one exists."""
    base = directory if directory is not None else os.environ.get("TMPDIR") or "/tmp"
    for _ in range(_TEMP_ATTEMPTS):
        path = os.path.join(base, f"{prefix}{os.urandom(6).hex()}{suffix}")
        try:
            return create(path)
        except FileExistsError:
            continue
    raise FileExistsError(f"no unused temporary {what} name with prefix {prefix!r}")


def make_temp_file(prefix: str = "tmp", suffix: str = "", directory: str | None = None) -> tuple[int, str]:
    """Create a new file (mode 0600, ``O_EXCL``: never one that existed) with a random name;
    its descriptor (close-on-exec) and path, like ``tempfile.mkstemp``."""

    def create(path: str) -> tuple[int, str]:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), path

    return _create_unique(directory, prefix, suffix, create, "file")


def make_temp_dir(prefix: str = "tmp", directory: str | None = None) -> str:
    """Create a new directory (mode 0700, never one that existed) with a random name; its path,
    like ``tempfile.mkdtemp``."""

    def create(path: str) -> str:
        os.mkdir(path, 0o700)
        return path

    return _create_unique(directory, prefix, "", create, "directory")


def remove_tree(path: str) -> None:
    """Remove a directory and everything below it, ignoring errors (``shutil.rmtree(path,
    ignore_errors=True)`` for the shim's own small private directories). Symbolic links are
    removed, never followed."""
    try:
        entries = list(os.scandir(path))
    except OSError:
        entries = []
    for entry in entries:
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
        except OSError:
            is_dir = False
        if is_dir:
            remove_tree(entry.path)
        else:
            try:
                os.unlink(entry.path)
            except OSError:
                pass
    try:
        os.rmdir(path)
    except OSError:
        pass


# -- URIs (the stdio strings), without ``urllib.parse`` (and its ``ipaddress``) ----------------

_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_LEADING_JUNK = "".join(chr(c) for c in range(0x21))  # C0 controls and space


def split_uri(uri: str) -> tuple[str, str, str, str, str]:
    """(scheme, authority, path, query, fragment) of a URI, split the way
    ``urllib.parse.urlsplit`` does for the URIs the shim sees (``fifo:``, ``file:``,
    ``binary:``, bare paths): the scheme lower-cased, nothing percent-decoded."""
    uri = uri.lstrip(_LEADING_JUNK)
    for c in "\t\r\n":
        uri = uri.replace(c, "")
    scheme = ""
    colon = uri.find(":")
    if colon > 0 and uri[0].isascii() and uri[0].isalpha() and all(c in _SCHEME_CHARS for c in uri[:colon]):
        scheme, uri = uri[:colon].lower(), uri[colon + 1 :]
    authority = ""
    if uri[:2] == "//":
        end = len(uri)
        for c in "/?#":
            at = uri.find(c, 2)
            if at >= 0:
                end = min(end, at)
        authority, uri = uri[2:end], uri[end:]
    uri, _, fragment = uri.partition("#")
    path, _, query = uri.partition("?")
    return scheme, authority, path, query, fragment


def percent_decode(text: str) -> str:
    """``text`` with its ``%XX`` escapes decoded, each run of them as UTF-8 (invalid bytes
    become U+FFFD) and a ``%`` not followed by two hex digits kept as it is, like
    ``urllib.parse.unquote``."""
    if "%" not in text:
        return text
    pieces = text.split("%")
    out = [pieces[0]]
    run = bytearray()
    for piece in pieces[1:]:
        if len(piece) >= 2 and piece[0] in _HEX_DIGITS and piece[1] in _HEX_DIGITS:
            run.append(int(piece[:2], 16))
            rest = piece[2:]
        else:
            rest = "%" + piece
        if rest:
            if run:
                out.append(run.decode("utf-8", "replace"))
                run.clear()
            out.append(rest)
    if run:
        out.append(run.decode("utf-8", "replace"))
    return "".join(out)


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
