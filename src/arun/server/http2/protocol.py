"""grpclib's server protocol on ``ServerConnection`` instead of h2's ``H2Connection``.

``H2Protocol.connection_made`` is where grpclib creates its HTTP/2 connection object; this
subclass creates ours and sets it up the way grpclib sets up h2's (our SETTINGS, then the
connection and stream receive windows from grpclib's ``Configuration``). Everything above it —
grpclib's ``Connection``, ``Stream``, ``EventsProcessor``, the handlers — is grpclib's own.

``data_received`` differs from grpclib's in one line: on a protocol error the GOAWAY the
connection queued is written before the connection is closed, so the client learns why (grpclib
closes without flushing it).
"""

from __future__ import annotations

import logging
import socket
from asyncio import BaseTransport, Transport
from typing import cast

from grpclib.protocol import Connection, EventsProcessor, H2Protocol
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes

from arun.server.http2.connection import ServerConnection

log = logging.getLogger(__name__)


class LeanH2Protocol(H2Protocol):
    """grpclib's ``H2Protocol`` over ``ServerConnection``."""

    def connection_made(self, transport: BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = ServerConnection()
        conn.initiate_connection()
        initial = conn.local_settings.initial_window_size
        connection_delta = self.config.http2_connection_window_size - initial
        if connection_delta:
            conn.increment_flow_control_window(connection_delta)
        if self.config.http2_stream_window_size != initial:
            conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: self.config.http2_stream_window_size})
        self.connection = Connection(conn, cast(Transport, transport), config=self.config)  # type: ignore[arg-type]
        self.connection.flush()
        self.connection.initialize()
        self.processor = EventsProcessor(self.handler, self.connection)

    def data_received(self, data: bytes) -> None:
        connection = self.connection
        try:
            events = connection.feed(data)
        except ProtocolError:
            log.debug("HTTP/2 protocol error from the client", exc_info=True)
            connection.flush()
            self.processor.close("Protocol error")
            return
        connection.flush()
        process = self.processor.process
        for event in events:
            process(event)
        connection.flush()


__all__ = ["LeanH2Protocol"]
