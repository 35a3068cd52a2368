"""In-process cost of one grpc-go-like unary call on the server's HTTP/2 connection: h2 vs arun's.

Receive = HEADERS + DATA of the request plus the PING and connection WINDOW_UPDATE grpc-go sends
after each answer (all in one read, as grpc-go's writes arrive), the PING ACK out, and the
acknowledge of the request's bytes; send = response HEADERS, DATA, trailing HEADERS (each with its
data_to_send, as grpclib writes them). ``--null-hpack`` swaps arun's HPACK codec for a constant one
(the header lists are the same every call), to show the connection's own cost.

    PYTHONPATH=src python tools/http2/micro.py [--calls N] [--null-hpack] h2 arun h2 arun
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import h2.config
import h2.connection
import h2.events

from arun.server.http2.connection import ServerConnection

REQUEST = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/containerd.services.version.v1.Version/Version"),
    (":authority", "localhost"),
    ("content-type", "application/grpc"),
    ("user-agent", "grpc-go/1.50"),
    ("te", "trailers"),
    ("containerd-namespace", "default"),
]


class NullDecoder:
    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.headers = headers

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        return self.headers


class NullEncoder:
    def encode(self, headers: Any) -> bytes:
        return b"\x88"

    def set_max_table_size(self, size: int) -> None:
        pass


def server(kind: str, null_hpack: bool) -> Any:
    if kind == "h2":
        return h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=False,
                header_encoding="ascii",
                validate_inbound_headers=False,
                validate_outbound_headers=False,
                normalize_inbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
    conn = ServerConnection()
    if null_hpack:
        conn._decoder = NullDecoder([(n.encode(), v.encode()) for n, v in REQUEST])  # type: ignore[assignment]
        conn._encoder = NullEncoder()  # type: ignore[assignment]
    return conn


def run(kind: str, calls: int, null_hpack: bool) -> tuple[float, float]:
    s = server(kind, null_hpack)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    s.initiate_connection()
    c.initiate_connection()
    s.receive_data(c.data_to_send())
    c.receive_data(s.data_to_send())
    s.receive_data(c.data_to_send())
    s.data_to_send()
    recv = send = 0.0
    warm = 200
    for i in range(calls + warm):
        sid = c.get_next_available_stream_id()
        c.send_headers(sid, REQUEST)
        c.send_data(sid, b"\0\0\0\0\0", end_stream=True)
        c.ping(b"12345678")
        c.increment_flow_control_window(5)
        req = c.data_to_send()
        t0 = time.perf_counter()
        events = s.receive_data(req)
        s.data_to_send()
        for e in events:
            if isinstance(e, h2.events.DataReceived):
                s.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
        t1 = time.perf_counter()
        s.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
        out = s.data_to_send()
        s.send_data(sid, b"\0\0\0\0\x05abcde")
        out += s.data_to_send()
        s.send_headers(sid, [("grpc-status", "0"), ("grpc-message", "")], end_stream=True)
        out += s.data_to_send()
        t2 = time.perf_counter()
        if not null_hpack:
            c.receive_data(out)
        else:  # our constant header block is not what the client's table expects; skip it
            c.reset_stream(sid) if sid in c.streams and not c.streams[sid].closed else None
        c.data_to_send()
        if i >= warm:
            recv += t1 - t0
            send += t2 - t1
    return recv / calls * 1e6, send / calls * 1e6


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=3000)
    p.add_argument("--null-hpack", action="store_true")
    p.add_argument("kinds", nargs="+", choices=["h2", "arun"])
    a = p.parse_args()
    for kind in a.kinds:
        null = a.null_hpack and kind == "arun"
        r, s = run(kind, a.calls, null)
        print(f"{kind:5} receive {r:6.1f} us  send {s:6.1f} us" + ("  (null HPACK)" if null else ""))


if __name__ == "__main__":
    main()
