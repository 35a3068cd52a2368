"""Name reservation: one CRI object per name, with kubelet retries answered.

kubelet names pods ``<name>_<namespace>_<uid>_<attempt>`` and containers
``<name>_<pod name>_<pod namespace>_<pod uid>_<attempt>``; a second object with
a name in use is refused (ALREADY_EXISTS). A request that kubelet retries after
its own timeout, with the same name and the same config while the first is still
running, must not fail with "name is reserved": :meth:`NameIndex.claim` lets the
retry wait for the first request and get its outcome.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from arun.errdefs import AlreadyExistsError


@dataclass
class _Entry:
    key: str
    fingerprint: bytes
    # Set while the creating request runs; resolves to the new object's id (or its error).
    pending: asyncio.Future[str] | None = None
    waiters: int = field(default=0)


class Claim:
    """What :meth:`NameIndex.claim` returns: either ours to create, or another request's result."""

    def __init__(self, index: NameIndex, name: str, entry: _Entry, owner: bool) -> None:
        self._index = index
        self.name = name
        self._entry = entry
        self.owner = owner

    @property
    def key(self) -> str:
        return self._entry.key

    async def result(self) -> str:
        """For a non-owner: the id the first request created (its error if it failed)."""
        fut = self._entry.pending
        if fut is None:
            return self._entry.key
        return await asyncio.shield(fut)

    def done(self, id: str) -> None:
        """The owner created the object: keep the name, answer waiting retries."""
        fut, self._entry.pending = self._entry.pending, None
        if fut is not None and not fut.done():
            fut.set_result(id)

    def failed(self, exc: BaseException) -> None:
        """The owner failed: release the name, pass the error to waiting retries."""
        fut, self._entry.pending = self._entry.pending, None
        self._index.release(self.name, self._entry.key)
        if fut is not None and not fut.done():
            if isinstance(exc, Exception):
                fut.set_exception(exc)
                # Nobody may be waiting: mark the exception retrieved so asyncio does not warn.
                fut.exception()
            else:
                fut.cancel()


class NameIndex:
    def __init__(self) -> None:
        self._names: dict[str, _Entry] = {}

    def claim(self, name: str, key: str, fingerprint: bytes = b"") -> Claim:
        """Reserve ``name`` for ``key``.

        If the name is free, the caller owns it (``claim.owner``) and must call
        ``done`` or ``failed``. If it is held by a request still running with the
        same ``fingerprint`` (the same config), the caller gets a non-owner claim
        whose ``result()`` waits for that request. Otherwise AlreadyExistsError.
        """
        entry = self._names.get(name)
        if entry is None:
            entry = _Entry(key, fingerprint, asyncio.get_running_loop().create_future())
            self._names[name] = entry
            return Claim(self, name, entry, True)
        if fingerprint and entry.fingerprint == fingerprint:
            # The same request again (kubelet retrying after its own timeout): the first one's
            # result, once it is there.
            return Claim(self, name, entry, False)
        raise AlreadyExistsError(f"name {name!r} is reserved for {entry.key!r}")

    def reserve(self, name: str, key: str) -> None:
        """Reserve ``name`` for ``key`` outright (recovery); AlreadyExistsError if held by another key."""
        entry = self._names.get(name)
        if entry is not None and entry.key != key:
            raise AlreadyExistsError(f"name {name!r} is reserved for {entry.key!r}")
        if entry is None:
            self._names[name] = _Entry(key, b"")

    def get(self, name: str) -> str | None:
        entry = self._names.get(name)
        return entry.key if entry is not None else None

    def fingerprint(self, name: str) -> bytes:
        entry = self._names.get(name)
        return entry.fingerprint if entry is not None else b""

    def release(self, name: str, key: str | None = None) -> None:
        entry = self._names.get(name)
        if entry is not None and (key is None or entry.key == key):
            del self._names[name]

    def release_by_key(self, key: str) -> None:
        for name in [n for n, e in self._names.items() if e.key == key]:
            del self._names[name]
