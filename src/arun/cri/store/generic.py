"""A map of CRI objects by id, with prefix lookup and name reservation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Generic, Protocol, TypeVar

from arun.cri.store.names import NameIndex
from arun.cri.store.truncindex import TruncIndex
from arun.errdefs import AlreadyExistsError, NotFoundError


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


T = TypeVar("T", bound=_HasId)


class ObjectStore(Generic[T]):
    kind: ClassVar[str] = "object"

    def __init__(self) -> None:
        self._objects: dict[str, T] = {}
        self._ids = TruncIndex()
        self.names = NameIndex()

    def __len__(self) -> int:
        return len(self._objects)

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._objects.values()))

    def add(self, obj: T) -> None:
        if obj.id in self._objects:
            raise AlreadyExistsError(f"{self.kind} {obj.id!r} already exists")
        self._objects[obj.id] = obj
        self._ids.add(obj.id)

    def get(self, id_or_prefix: str) -> T:
        """By full id or unique prefix; NotFoundError otherwise."""
        obj = self._objects.get(id_or_prefix)
        if obj is not None:
            return obj
        try:
            full = self._ids.get(id_or_prefix, self.kind)
        except NotFoundError:
            raise NotFoundError(
                f"an error occurred when try to find {self.kind} {id_or_prefix!r}: not found"
            ) from None
        return self._objects[full]

    def find(self, id_or_prefix: str) -> T | None:
        try:
            return self.get(id_or_prefix)
        except NotFoundError:
            return None

    def delete(self, id: str) -> None:
        if self._objects.pop(id, None) is not None:
            self._ids.delete(id)

    def list(self) -> list[T]:
        return list(self._objects.values())
