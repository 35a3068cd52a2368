"""Taking over an aiohttp connection after ``101 Switching Protocols`` for SPDY/3.1.

aiohttp upgrades only to WebSocket by itself: its HTTP parser treats other
``Upgrade`` values as ordinary requests, so the bytes a SPDY client sends after
the 101 would be parsed as HTTP. The one hook used here is the one aiohttp's own
WebSocket support uses: ``RequestHandler.set_parser(parser)``. Once a payload
parser is set, every byte the connection receives goes to its ``feed_data``
(which returns ``(eof, tail)``), and ``feed_eof`` is called when the connection is
lost. It exists unchanged from aiohttp 3.9 to 3.14; the tests of this package
exercise it, so a release that changes it fails them.

Order matters: the parser is installed before the 101 is written, so no byte the
client sends after reading the 101 can reach the HTTP parser; and the SPDY
server never speaks first (see :mod:`arun.cri.streaming.spdy`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from arun.cri.streaming import constants as c


class _Parser:
    """The payload-parser shape aiohttp's request handler feeds; holds bytes until a consumer attaches."""

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._eof = False
        self._on_data: Callable[[bytes], None] | None = None
        self._on_eof: Callable[[], None] | None = None

    def attach(self, on_data: Callable[[bytes], None], on_eof: Callable[[], None]) -> None:
        self._on_data, self._on_eof = on_data, on_eof
        pending, self._pending = self._pending, []
        for chunk in pending:
            on_data(chunk)
        if self._eof:
            on_eof()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self._on_data is None:
            self._pending.append(bytes(data))
        else:
            self._on_data(bytes(data))
        return False, b""

    def feed_eof(self) -> None:
        self._eof = True
        if self._on_eof is not None:
            self._on_eof()


class SwitchingProtocols(web.StreamResponse):
    """The 101 response; once sent, the connection belongs to the upgraded protocol."""

    async def write_eof(self, data: bytes = b"") -> None:
        # Nothing of HTTP follows a protocol switch; the session closes the transport itself.
        return


class UpgradedConnection:
    """A :class:`~arun.cri.streaming.session.ByteChannel` over the taken-over HTTP connection."""

    def __init__(self, request: web.Request, response: SwitchingProtocols, parser: _Parser) -> None:
        self._request = request
        self._response = response
        self._parser = parser
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("client connection closed before the upgrade")
        self._transport: asyncio.Transport = transport

    @property
    def response(self) -> SwitchingProtocols:
        """The 101 response, which the aiohttp handler returns."""
        return self._response

    def attach(self, on_data: Callable[[bytes], None], on_eof: Callable[[], None]) -> None:
        """Start delivering the connection's bytes (including any that came already)."""
        self._parser.attach(on_data, on_eof)

    async def send(self, data: bytes) -> None:
        if self._transport.is_closing():
            raise ConnectionResetError("connection closed")
        await self._response.write(data)

    def pause_reading(self) -> None:
        if not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if not self._transport.is_closing():
            self._transport.resume_reading()

    def close(self) -> None:
        self._transport.close()


async def switch_to_spdy(
    request: web.Request, protocol: str, *, extra_headers: Mapping[str, str] | None = None
) -> UpgradedConnection:
    """Answer 101 with ``Upgrade: SPDY/3.1`` and take the connection over; ``attach`` a consumer next."""
    headers = {
        "Connection": "Upgrade",
        "Upgrade": c.UPGRADE_SPDY,
        c.HEADER_PROTOCOL_VERSION: protocol,
        **(extra_headers or {}),
    }
    response = SwitchingProtocols(status=101, headers=headers)
    response.force_close()
    parser = _Parser()
    channel = UpgradedConnection(request, response, parser)
    handler: Any = request.protocol
    handler.set_parser(parser)
    await response.prepare(request)
    return channel


def is_upgrade_request(request: web.BaseRequest) -> bool:
    """``Connection`` names ``Upgrade`` (any of its values, case-insensitive)."""
    return any("upgrade" in v.lower() for v in request.headers.getall("Connection", []))


def is_websocket_request(request: web.BaseRequest) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket" and is_upgrade_request(request)


def is_spdy_upgrade_request(request: web.BaseRequest) -> bool:
    return c.UPGRADE_SPDY.lower() in request.headers.get("Upgrade", "").lower() and is_upgrade_request(
        request
    )
