from __future__ import annotations

import asyncio

import pytest

from arun.cri.store.names import NameIndex
from arun.cri.store.truncindex import TruncIndex
from arun.errdefs import AlreadyExistsError, InvalidArgumentError, NotFoundError


async def test_claim_done_and_retries() -> None:
    idx = NameIndex()
    first = idx.claim("pod_ns_uid_0", "id-1", b"cfg")
    assert first.owner
    retry = idx.claim("pod_ns_uid_0", "id-2", b"cfg")
    assert not retry.owner
    waiter = asyncio.create_task(retry.result())
    await asyncio.sleep(0)
    assert not waiter.done()
    first.done("id-1")
    assert await waiter == "id-1"
    # After completion the same request still gets the same answer; another config does not.
    assert await idx.claim("pod_ns_uid_0", "id-3", b"cfg").result() == "id-1"
    with pytest.raises(AlreadyExistsError, match="id-1"):
        idx.claim("pod_ns_uid_0", "id-4", b"other")


async def test_claim_failed_releases_and_reports() -> None:
    idx = NameIndex()
    first = idx.claim("n", "a", b"x")
    retry = idx.claim("n", "b", b"x")
    waiter = asyncio.create_task(retry.result())
    await asyncio.sleep(0)
    first.failed(ValueError("boom"))
    with pytest.raises(ValueError, match="boom"):
        await waiter
    assert idx.get("n") is None
    assert idx.claim("n", "c", b"x").owner


async def test_reserve_and_release() -> None:
    idx = NameIndex()
    idx.reserve("n", "a")
    idx.reserve("n", "a")
    with pytest.raises(AlreadyExistsError):
        idx.reserve("n", "b")
    with pytest.raises(AlreadyExistsError):
        idx.claim("n", "b", b"")
    idx.release_by_key("a")
    assert idx.get("n") is None


def test_truncindex() -> None:
    t = TruncIndex(["abc123", "abd456", "ffff"])
    assert t.get("abc") == "abc123" and t.get("ff") == "ffff" and t.get("abd456") == "abd456"
    with pytest.raises(InvalidArgumentError, match="ambiguous"):
        t.get("ab")
    with pytest.raises(NotFoundError):
        t.get("zz")
    with pytest.raises(NotFoundError):
        t.get("")
    t.delete("abc123")
    assert t.get("ab") == "abd456"
    assert "ffff" in t and "fff" not in t
