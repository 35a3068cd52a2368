"""HTTP-level pieces shared by the exec/attach and port-forward endpoints: timeouts, handshakes, errors."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from arun.cri.streaming import constants as c
from arun.cri.streaming import upgrade


@dataclass(frozen=True)
class Timeouts:
    idle: float | None = 4 * 3600.0
    stream_creation: float = 30.0
    #: After the status is written, how long to wait for the client to hang up.
    close_grace: float = 30.0
    #: How long WebSocket output waits after the upgrade (see :mod:`arun.cri.streaming.websocket`).
    websocket_hold: float = 0.1


def plain_error(http_status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=http_status, text=text + "\n", headers=headers)


def negotiate_spdy(request: web.BaseRequest, supported: tuple[str, ...]) -> str | web.Response:
    """The X-Stream-Protocol-Version handshake: the chosen protocol, or the error response to send."""
    values = request.headers.getall(c.HEADER_PROTOCOL_VERSION, [])
    if not values:
        return plain_error(
            400,
            f"unable to upgrade: header {c.HEADER_PROTOCOL_VERSION} does not exist in request "
            f"with {len(request.headers)} headers",
        )
    offered = c.split_header_values(values)
    if not offered:
        return plain_error(
            400,
            f"unable to upgrade: header {c.HEADER_PROTOCOL_VERSION} contains {values}, "
            "but no valid protocols",
        )
    chosen = c.negotiate(offered, supported)
    if chosen is None:
        response = plain_error(
            403,
            f"unable to upgrade: unable to negotiate protocol: client supports {offered}, "
            f"server accepts {list(supported)}",
        )
        for proto in supported:
            response.headers.add(c.HEADER_ACCEPTED_PROTOCOL_VERSIONS, proto)
        return response
    if not upgrade.is_spdy_upgrade_request(request):
        return plain_error(400, "unable to upgrade: missing upgrade headers in request")
    return chosen


def offered_websocket_protocols(request: web.BaseRequest) -> list[str]:
    return c.split_header_values(request.headers.getall("Sec-WebSocket-Protocol", []))
