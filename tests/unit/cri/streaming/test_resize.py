"""Terminal resize events decoded from the resize stream, as Go's json.Decoder reads them."""

from __future__ import annotations

from arun.cri.streaming.remotecommand import ResizeEventStream
from arun.cri.streaming.runtime import TerminalSize


class Chunks:
    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)

    async def read(self, n: int = 65536) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


async def sizes(*chunks: bytes) -> list[TerminalSize]:
    return [s async for s in ResizeEventStream(Chunks(*chunks))]


async def test_client_go_encoding() -> None:
    # json.Encoder: one object and a newline per event
    got = await sizes(b'{"Width":80,"Height":24}\n{"Width":100,"Height":30}\n')
    assert got == [TerminalSize(80, 24), TerminalSize(100, 30)]


async def test_objects_split_across_reads_and_packed_together() -> None:
    got = await sizes(b'{"Width":8', b'0,"Height":24}{"Width":1,', b'"Height":2}  \n\t{"Width":3,"Height":4}')
    assert got == [TerminalSize(80, 24), TerminalSize(1, 2), TerminalSize(3, 4)]


async def test_field_names_match_case_insensitively_and_default_to_zero() -> None:
    got = await sizes(b'{"width":5,"HEIGHT":6}{"Height":7}{}{"Width":1,"extra":true}')
    assert got == [TerminalSize(5, 6), TerminalSize(0, 7), TerminalSize(0, 0), TerminalSize(1, 0)]


async def test_the_first_bad_value_ends_the_events() -> None:
    assert await sizes(b'{"Width":80,"Height":24}{"Width":-1,"Height":2}{"Width":1,"Height":1}') == [
        TerminalSize(80, 24)
    ]
    assert await sizes(b'{"Width":65536,"Height":1}') == []
    assert await sizes(b'{"Width":1.5,"Height":1}') == []
    assert await sizes(b'{"Width":true,"Height":1}') == []
    assert await sizes(b"[1,2]") == []
    assert await sizes(b'"text"') == []


async def test_garbage_and_eof() -> None:
    assert await sizes(b"not json at all") == []
    assert await sizes(b'{"Width":1,"Height":1}{"Width":') == [TerminalSize(1, 1)]
    assert await sizes() == []
