"""Single-use, expiring streaming tokens."""

from __future__ import annotations

import re

import pytest

from arun import errdefs
from arun.cri.streaming.cache import RequestCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_is_single_use() -> None:
    cache: RequestCache[str] = RequestCache()
    token = cache.insert("req")
    assert re.fullmatch(r"[A-Za-z0-9_-]{8}", token)
    assert cache.consume(token) == "req"
    assert cache.consume(token) is None
    assert cache.consume("nope") is None


def test_tokens_expire_after_the_ttl() -> None:
    clock = Clock()
    cache: RequestCache[str] = RequestCache(ttl=60, clock=clock)
    token = cache.insert("a")
    clock.now += 60
    assert cache.consume(token) == "a"  # at the deadline still valid
    token = cache.insert("b")
    clock.now += 60.001
    assert cache.consume(token) is None


def test_expired_entries_are_collected_on_insert() -> None:
    clock = Clock()
    cache: RequestCache[int] = RequestCache(ttl=10, clock=clock)
    for i in range(5):
        cache.insert(i)
    assert len(cache) == 5
    clock.now += 11
    cache.insert(99)
    assert len(cache) == 1


def test_max_in_flight() -> None:
    clock = Clock()
    cache: RequestCache[int] = RequestCache(ttl=10, max_in_flight=3, clock=clock)
    for i in range(3):
        cache.insert(i)
    with pytest.raises(errdefs.ResourceExhaustedError):
        cache.insert(3)
    clock.now += 11  # the old ones expire: room again
    cache.insert(4)


def test_token_collisions_are_retried_then_fail() -> None:
    cache: RequestCache[int] = RequestCache(token_bytes=lambda n: b"\x00" * n)
    assert cache.insert(1) == "AAAAAAAA"
    with pytest.raises(errdefs.InternalError):
        cache.insert(2)


def test_bad_settings() -> None:
    with pytest.raises(errdefs.InvalidArgumentError):
        RequestCache(ttl=0)
    with pytest.raises(errdefs.InvalidArgumentError):
        RequestCache(max_in_flight=0)
