"""A bare HTTP/2 gRPC call over a unix socket, for checking what is on the wire.

grpclib's client hides how a status arrived; grpc-go clients (crictl, kubelet,
ctr) refuse a response without ``content-type: application/grpc…`` and report
"Unknown: missing HTTP content-type" instead of the real status. ``call()``
returns the raw header blocks so tests can check both. Blocking; run it with
``asyncio.to_thread`` from async tests.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events


@dataclass
class RawResponse:
    headers: list[dict[str, str]] = field(default_factory=list)  # one dict per HEADERS block
    data: bytes = b""
    reset: int | None = None  # RST_STREAM error code, if any

    @property
    def all_headers(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for block in self.headers:
            merged.update(block)
        return merged

    @property
    def grpc_status(self) -> int | None:
        value = self.all_headers.get("grpc-status")
        return None if value is None else int(value)

    @property
    def content_type(self) -> str | None:
        return self.headers[0].get("content-type") if self.headers else None


def frame_message(payload: bytes) -> bytes:
    """A gRPC length-prefixed message (uncompressed)."""
    return struct.pack(">?I", False, len(payload)) + payload


def call(
    path: str,
    method: str,
    payload: bytes = b"",
    *,
    metadata: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> RawResponse:
    """POST one unary gRPC request for ``method`` ("/pkg.Service/Method") to the socket ``path``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        conn = h2.connection.H2Connection(config)
        conn.initiate_connection()
        stream_id = conn.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", method),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            *(metadata or {}).items(),
        ]
        conn.send_headers(stream_id, headers)
        conn.send_data(stream_id, frame_message(payload), end_stream=True)
        sock.sendall(conn.data_to_send())
        resp = RawResponse()
        done = False
        while not done:
            chunk = sock.recv(65536)
            if not chunk:
                break
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    resp.headers.append({str(k): str(v) for k, v in event.headers})
                elif isinstance(event, h2.events.DataReceived):
                    resp.data += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    resp.reset = event.error_code
                    done = True
                elif isinstance(event, h2.events.StreamEnded):
                    done = True
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
        return resp
    finally:
        sock.close()
