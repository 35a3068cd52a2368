"""Request metadata: a key maps to a list of string values (Go ttrpc ``MD``).

On the wire every (key, value) pair is one ``KeyValue`` in ``Request.metadata``;
a key with several values repeats. Keys are lower-cased when set and when looked
up. (Go stores received keys as sent and lower-cases only lookups, so a key sent
in upper case is unreachable there; here received keys are lower-cased too.)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar

__all__ = ["MD", "current", "set_current"]


class MD(Mapping[str, list[str]]):
    __slots__ = ("_d",)

    def __init__(self, initial: Mapping[str, Iterable[str]] | Iterable[tuple[str, str]] = ()) -> None:
        self._d: dict[str, list[str]] = {}
        if not initial:
            return
        if isinstance(initial, Mapping):
            for key, values in initial.items():
                self.set(key, *values)
        else:
            for key, value in initial:
                self.append(key, value)

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> MD:
        """Group received (key, value) pairs back into lists."""
        return cls(pairs)

    def __getitem__(self, key: str) -> list[str]:
        return self._d[key.lower()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._d

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __repr__(self) -> str:
        return f"MD({self._d!r})"

    def first(self, key: str) -> str | None:
        """The first value of ``key``, or None."""
        values = self._d.get(key.lower())
        return values[0] if values else None

    def set(self, key: str, *values: str) -> None:
        """Replace the values of ``key``."""
        self._d[key.lower()] = list(values)

    def append(self, key: str, *values: str) -> None:
        """Add values to ``key``."""
        self._d.setdefault(key.lower(), []).extend(values)

    def delete(self, key: str) -> None:
        self._d.pop(key.lower(), None)

    def pairs(self) -> Iterator[tuple[str, str]]:
        """(key, value) pairs in wire order."""
        for key, values in self._d.items():
            for value in values:
                yield key, value

    def copy(self) -> MD:
        new = MD()
        new._d = {k: list(v) for k, v in self._d.items()}
        return new


_EMPTY = MD()
_incoming: ContextVar[MD] = ContextVar("ttrpc_metadata")


def current() -> MD:
    """The metadata of the request being handled in this task (empty outside a request)."""
    return _incoming.get(_EMPTY)


def set_current(md: MD) -> None:
    """Set by the server inside each request task."""
    _incoming.set(md)
