"""Ids by unique prefix, as CRI clients pass them (``crictl rm 3f2a``)."""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from arun.errdefs import InvalidArgumentError, NotFoundError


class TruncIndex:
    """A sorted list of ids; :meth:`get` resolves a prefix that matches exactly one."""

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._ids: list[str] = sorted(set(ids))

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, id: object) -> bool:
        if not isinstance(id, str):
            return False
        i = bisect.bisect_left(self._ids, id)
        return i < len(self._ids) and self._ids[i] == id

    def add(self, id: str) -> None:
        if not id or " " in id:
            raise InvalidArgumentError(f"illegal id {id!r}")
        i = bisect.bisect_left(self._ids, id)
        if i < len(self._ids) and self._ids[i] == id:
            return
        self._ids.insert(i, id)

    def delete(self, id: str) -> None:
        i = bisect.bisect_left(self._ids, id)
        if i < len(self._ids) and self._ids[i] == id:
            del self._ids[i]

    def get(self, prefix: str, kind: str = "id") -> str:
        """The one id starting with ``prefix``; NotFoundError if none, InvalidArgumentError if several."""
        if not prefix:
            raise NotFoundError(f"{kind} is empty")
        i = bisect.bisect_left(self._ids, prefix)
        if i >= len(self._ids) or not self._ids[i].startswith(prefix):
            raise NotFoundError(f"{kind} {prefix!r} not found")
        if self._ids[i] != prefix and i + 1 < len(self._ids) and self._ids[i + 1].startswith(prefix):
            raise InvalidArgumentError(f"{kind} prefix {prefix!r} is ambiguous")
        return self._ids[i]
