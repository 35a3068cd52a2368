"""HPACK micro benchmark (not a test): arun.server.http2.hpack against the ``hpack`` library.

    PYTHONPATH=src python tools/hpacklean/micro.py [ROUNDS]

Decode: 400 grpc-go-like request blocks (8 headers, ``:path`` cycling over 4 methods), encoded
statefully by the ``hpack`` library with Huffman, so the first blocks carry Huffman-coded
literals that go into the dynamic table and the rest are all indexed (8 bytes); decoded block by
block on one decoder, the same blocks for both. Encode: an answer's headers
``[(':status', '200'), ('content-type', 'application/grpc')]`` plus its trailers
``[('grpc-status', '0'), ('grpc-message', '')]``, one encoder across all rounds. The two
libraries alternate (A B A B ...) for ROUNDS rounds; medians in microseconds per block / per
answer are printed as JSON. Ours remembers short blocks that left the dynamic table unchanged, so
its all-indexed blocks are also timed with that memory emptied before each
(``decode_indexed_uncached_us``).
"""

from __future__ import annotations

import functools
import json
import statistics
import sys
import time
from collections.abc import Callable

import hpack

from arun.server.http2 import hpack as lean

PATHS = [
    "/containerd.services.images.v1.Images/Get",
    "/containerd.services.content.v1.Content/Info",
    "/containerd.services.content.v1.Content/Read",
    "/containerd.services.snapshots.v1.Snapshots/Stat",
]
BLOCKS = 400
HEADERS = [(":status", "200"), ("content-type", "application/grpc")]
TRAILERS = [("grpc-status", "0"), ("grpc-message", "")]


def request_blocks() -> list[bytes]:
    encoder = hpack.Encoder()
    blocks = []
    for i in range(BLOCKS):
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", PATHS[i % len(PATHS)]),
            (":authority", "/run/arun/arun.sock"),
            ("content-type", "application/grpc"),
            ("user-agent", "grpc-go/1.59.0"),
            ("te", "trailers"),
            ("containerd-namespace", "default"),
        ]
        blocks.append(encoder.encode(headers, huffman=True))
    return blocks


def decode_us(decode: Callable[[bytes], object], blocks: list[bytes]) -> tuple[float, float]:
    """(us for the first 4 blocks, which carry the literals; us per later, all-indexed block)."""
    t0 = time.perf_counter()
    for block in blocks[:4]:
        decode(block)
    t1 = time.perf_counter()
    for block in blocks[4:]:
        decode(block)
    t2 = time.perf_counter()
    return (t1 - t0) * 1e6, (t2 - t1) / (len(blocks) - 4) * 1e6


def decode_uncached_us(decoder: lean.Decoder, blocks: list[bytes]) -> float:
    """us per all-indexed block with the decoder's memory of known blocks emptied before each
    (what a block costs when the table changed since it was last seen; includes a dict.clear)."""
    for block in blocks[:4]:
        decoder.decode(block)
    known = decoder._known
    t0 = time.perf_counter()
    for block in blocks[4:]:
        known.clear()
        decoder.decode(block)
    return (time.perf_counter() - t0) / (len(blocks) - 4) * 1e6


def encode_us(encode: Callable[[list[tuple[str, str]]], bytes], n: int = 400) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        encode(HEADERS)
        encode(TRAILERS)
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    blocks = request_blocks()
    results: dict[str, dict[str, list[float]]] = {
        name: {"decode_first4_us": [], "decode_indexed_us": [], "encode_answer_us": []}
        for name in ("lean", "hpack")
    }
    results["lean"]["decode_indexed_uncached_us"] = []
    expected = [(n, v) for n, v in hpack.Decoder().decode(blocks[0], raw=True)]
    assert lean.Decoder().decode(blocks[0]) == expected
    for _ in range(rounds):
        for name in ("lean", "hpack"):
            if name == "lean":
                decoder = lean.Decoder()
                first, indexed = decode_us(decoder.decode, blocks)
                results[name]["decode_indexed_uncached_us"].append(decode_uncached_us(lean.Decoder(), blocks))
                enc = lean.Encoder()
                answer = encode_us(enc.encode)
            else:
                hdecoder = hpack.Decoder()
                first, indexed = decode_us(functools.partial(hdecoder.decode, raw=True), blocks)
                henc = hpack.Encoder()
                answer = encode_us(henc.encode)
            results[name]["decode_first4_us"].append(first)
            results[name]["decode_indexed_us"].append(indexed)
            results[name]["encode_answer_us"].append(answer)
    summary = {
        name: {key: round(statistics.median(vals), 2) for key, vals in series.items()}
        for name, series in results.items()
    }
    summary["block_bytes"] = {"first": len(blocks[0]), "later": len(blocks[-1])}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
