"""The hand-over of a downloading layer to its extraction thread (``arun.transfer.pull``)."""

from __future__ import annotations

import threading

import pytest

from arun import errdefs
from arun.transfer.pull import _LayerFeed

BLOB = bytes(range(256)) * 64  # 16 KiB


def _consume(feed: _LayerFeed, out: list[bytes], errors: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            while chunk := feed():
                out.append(chunk)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    return t


def _no_store(offset: int) -> bytes:
    raise AssertionError(f"unexpected store read at {offset}")


def test_pieces_in_order_and_the_end_only_after_finish() -> None:
    feed = _LayerFeed(_no_store)
    assert feed.attach()
    out: list[bytes] = []
    errors: list[BaseException] = []
    t = _consume(feed, out, errors)
    for i in range(0, len(BLOB), 1000):
        feed.push(BLOB[i : i + 1000])
    t.join(0.2)
    assert t.is_alive()  # every byte is there, but the commit has not verified them yet
    feed.finish()
    t.join(5)
    assert not errors and b"".join(out) == BLOB


def test_past_its_limit_the_rest_comes_from_the_store_after_the_commit() -> None:
    reads: list[int] = []

    def stored(offset: int) -> bytes:
        reads.append(offset)
        return BLOB[offset : offset + 3000]

    feed = _LayerFeed(stored, limit=4000)
    assert feed.attach()
    for i in range(0, len(BLOB), 1000):
        feed.push(BLOB[i : i + 1000])
    out: list[bytes] = []
    errors: list[BaseException] = []
    t = _consume(feed, out, errors)
    t.join(0.2)
    assert t.is_alive() and reads == []  # the store is read only once the blob is committed
    feed.finish()
    t.join(5)
    assert not errors and b"".join(out) == BLOB
    assert reads[0] == 4000


def test_a_failed_download_fails_the_extraction() -> None:
    feed = _LayerFeed(_no_store)
    assert feed.attach()
    feed.push(BLOB[:100])
    bad = errdefs.FailedPreconditionError("unexpected commit digest")
    feed.finish(bad)
    out: list[bytes] = []
    errors: list[BaseException] = []
    _consume(feed, out, errors).join(5)
    assert out == [BLOB[:100]] and errors == [bad]


def test_a_download_finished_unclaimed_drops_its_buffer() -> None:
    feed = _LayerFeed(_no_store)
    feed.push(BLOB)
    feed.finish()
    assert not feed.attach()  # the unpack reads the committed blob instead
    assert feed._buffered == 0


def test_release_wakes_a_waiting_extraction() -> None:
    feed = _LayerFeed(_no_store)
    assert feed.attach()
    out: list[bytes] = []
    errors: list[BaseException] = []
    t = _consume(feed, out, errors)
    t.join(0.1)
    feed.release()
    t.join(5)
    assert not t.is_alive() and len(errors) == 1
    with pytest.raises(errdefs.CanceledError):
        raise errors[0]
