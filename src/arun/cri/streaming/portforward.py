"""Port-forward over SPDY (``portforward.k8s.io``), SPDY tunnelled in WebSocket, and WebSocket channels.

SPDY — one connection carries any number of forwarded connections. For each,
client-go opens an error stream and then a data stream, both with ``port`` and
``requestID`` headers (an old client without ``requestID`` gets one derived
from the stream ids, as kubelet does). Streams missing a valid ``port`` or
``streamType`` are reset. Once both streams of a request are there, the
runtime's ``port_forward`` runs with the data stream; an error is written on the
error stream (and both streams are reset), success closes both. A request
whose second stream does not come within the stream-creation timeout gets
"timed out waiting for streams" on its error stream.

SPDY over WebSocket — client-go's current port-forward dialer asks for the
subprotocol ``SPDY/3.1+portforward.k8s.io`` and then speaks exactly the SPDY
protocol above inside binary WebSocket messages.

WebSocket channels (``v4.channel.k8s.io``, ``v4.base64.channel.k8s.io``) — the
ports come from the CRI request (or, if it named none, the ``port`` query
parameters); port ``i`` gets data channel ``2i`` and error channel ``2i + 1``,
and the server's first message on each is the port as a little-endian uint16.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from arun.cri.streaming import channels, spdy, upgrade
from arun.cri.streaming import constants as c
from arun.cri.streaming.handshake import Timeouts, offered_websocket_protocols, plain_error
from arun.cri.streaming.runtime import DuplexStream
from arun.cri.streaming.session import SpdySession, SpdyStream
from arun.cri.streaming.websocket import ChannelDuplex, ChannelMux

log = logging.getLogger(__name__)

#: Forward one connection: (port, stream) -> None; raises on failure.
Forwarder = Callable[[int, DuplexStream], Awaitable[None]]


def parse_port(text: str | None) -> int | None:
    """A port as kubelet accepts it: decimal, 1..65535."""
    if not text or not text.isascii() or not text.isdigit():
        return None
    port = int(text)
    return port if 1 <= port <= 0xFFFF else None


# --- SPDY -----------------------------------------------------------------------------------------
@dataclass
class _Pair:
    request_id: str
    data: SpdyStream | None = None
    error: SpdyStream | None = None
    monitor: asyncio.Task[None] | None = None
    forward: asyncio.Task[None] | None = None

    async def print_error(self, message: str) -> None:
        if self.error is not None:
            with contextlib.suppress(BrokenPipeError):
                await self.error.write(message.encode("utf-8"))


@dataclass
class _Handler:
    forward: Forwarder
    timeouts: Timeouts
    target: str
    pairs: dict[str, _Pair] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def on_stream(self, stream: SpdyStream) -> None:
        port = parse_port(stream.header(c.PORT_HEADER))
        kind = stream.header(c.STREAM_TYPE)
        if port is None or kind not in (c.STREAM_TYPE_DATA, c.STREAM_TYPE_ERROR):
            log.warning(
                "port-forward stream rejected: port %r, stream type %r",
                stream.header(c.PORT_HEADER),
                kind,
            )
            stream.reset(spdy.RstStatus.CANCEL)
            return
        stream.accept()
        request_id = stream.header(c.REQUEST_ID_HEADER)
        if not request_id:
            # Clients too old to send requestID open error then data with consecutive odd ids.
            request_id = str(stream.id if kind == c.STREAM_TYPE_ERROR else stream.id - 2)
        pair = self.pairs.get(request_id)
        if pair is None:
            pair = self.pairs[request_id] = _Pair(request_id)
            pair.monitor = self._spawn(self._monitor(pair))
        if kind == c.STREAM_TYPE_ERROR:
            duplicate, pair.error = pair.error is not None, pair.error or stream
        else:
            duplicate, pair.data = pair.data is not None, pair.data or stream
        if duplicate:
            stream.reset(spdy.RstStatus.CANCEL)
            message = f"error processing stream for request {request_id}: {kind} stream already assigned"
            log.warning("%s", message)
            self._spawn(pair.print_error(message))
            return
        if pair.data is not None and pair.error is not None:
            if pair.monitor is not None:
                pair.monitor.cancel()
            pair.forward = self._spawn(self._forward(pair, port))

    async def _monitor(self, pair: _Pair) -> None:
        await asyncio.sleep(self.timeouts.stream_creation)
        if self.pairs.get(pair.request_id) is pair and pair.forward is None:
            message = f"timed out waiting for streams of request {pair.request_id}"
            log.warning("%s", message)
            del self.pairs[pair.request_id]
            await pair.print_error(message)
            if pair.error is not None:
                with contextlib.suppress(BrokenPipeError):
                    await pair.error.close()
            if pair.data is not None:
                pair.data.reset(spdy.RstStatus.CANCEL)

    async def _forward(self, pair: _Pair, port: int) -> None:
        assert pair.data is not None and pair.error is not None
        try:
            await self.forward(port, pair.data)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            message = f"error forwarding port {port} to pod {self.target}, uid : {exc}"
            log.info("%s", message)
            await pair.print_error(message)
            # a failed forward most likely broke the data stream: reset both so the client starts afresh
            pair.data.reset(spdy.RstStatus.CANCEL)
            pair.error.reset(spdy.RstStatus.CANCEL)
        else:
            with contextlib.suppress(BrokenPipeError):
                await pair.data.close()
                await pair.error.close()
        finally:
            self.pairs.pop(pair.request_id, None)
            pair.data.discard()  # whatever the client still sends has no reader any more

    async def cancel_all(self) -> None:
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _run_spdy_session(session: SpdySession, handler: _Handler, timeouts: Timeouts) -> None:
    try:
        while not session.closed:
            await session.wait_goaway_or_closed()
            if session.closed:
                break
            # GOAWAY: the client opens nothing more; finish what runs, then hang up.
            running = [p.forward for p in handler.pairs.values() if p.forward is not None]
            if running:
                await asyncio.wait(running)
            await session.close(grace=timeouts.close_grace)
    finally:
        await handler.cancel_all()


async def serve_spdy(
    request: web.Request,
    protocol: str,
    target: str,
    forward: Forwarder,
    timeouts: Timeouts,
    sessions: set[SpdySession] | None = None,
) -> web.StreamResponse:
    """Upgrade ``request`` (negotiated to ``protocol``) and forward every requested connection."""
    handler = _Handler(forward, timeouts, target)
    connection = await upgrade.switch_to_spdy(request, protocol)
    session = SpdySession(
        spdy.Role.SERVER, connection, on_stream=handler.on_stream, idle_timeout=timeouts.idle
    )
    connection.attach(session.feed_data, session.feed_eof)
    if sessions is not None:
        sessions.add(session)
    try:
        await _run_spdy_session(session, handler, timeouts)
    finally:
        if sessions is not None:
            sessions.discard(session)
        session.abort()
    return connection.response


class _WebSocketByteChannel:
    """A session's bytes as binary WebSocket messages (the SPDY tunnel)."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws
        self._lock = asyncio.Lock()
        self.reading = asyncio.Event()
        self.reading.set()
        self._closer: asyncio.Future[None] | None = None

    async def send(self, data: bytes) -> None:
        async with self._lock:
            if self._ws.closed:
                raise ConnectionResetError("websocket is closed")
            await self._ws.send_bytes(data)

    def pause_reading(self) -> None:
        self.reading.clear()

    def resume_reading(self) -> None:
        self.reading.set()

    def close(self) -> None:
        if self._closer is None:
            self._closer = asyncio.ensure_future(self.aclose())

    async def aclose(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError, asyncio.TimeoutError):
            await self._ws.close(code=c.WS_CLOSE_NORMAL)


async def serve_tunnel(
    request: web.Request,
    target: str,
    forward: Forwarder,
    timeouts: Timeouts,
    sessions: set[SpdySession] | None = None,
) -> web.StreamResponse:
    """SPDY port-forward inside a WebSocket (``SPDY/3.1+portforward.k8s.io``)."""
    ws = web.WebSocketResponse(protocols=(c.PORTFORWARD_TUNNEL,), max_msg_size=0)
    await ws.prepare(request)
    channel = _WebSocketByteChannel(ws)
    handler = _Handler(forward, timeouts, target)
    session = SpdySession(spdy.Role.SERVER, channel, on_stream=handler.on_stream, idle_timeout=timeouts.idle)
    if sessions is not None:
        sessions.add(session)

    async def pump() -> None:
        try:
            while not session.closed:
                if not channel.reading.is_set():
                    await channel.reading.wait()
                msg = await ws.receive()
                if msg.type == WSMsgType.BINARY:
                    session.feed_data(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    log.warning("text message in a SPDY tunnel: closing")
                    return
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    return
        finally:
            session.feed_eof()

    pumper = asyncio.ensure_future(pump())
    try:
        await _run_spdy_session(session, handler, timeouts)
    finally:
        if sessions is not None:
            sessions.discard(session)
        session.abort()
        await channel.aclose()
        pumper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pumper
    return ws


# --- WebSocket channels ---------------------------------------------------------------------------
def ports_from_query(request: web.BaseRequest) -> list[int] | str:
    """The ``port`` query parameters (comma-separated lists allowed), or why they are invalid."""
    values = request.query.getall(c.PORT_HEADER, [])
    if not values:
        return f'query parameter "{c.PORT_HEADER}" is required'
    ports: list[int] = []
    for value in values:
        if not value:
            return f'query parameter "{c.PORT_HEADER}" cannot be empty'
        for item in value.split(","):
            port = parse_port(item)
            if port is None:
                return f"unable to parse {value!r} as a port"
            ports.append(port)
    return ports


async def serve_websocket(
    request: web.Request,
    ports: Sequence[int],
    forward: Forwarder,
    timeouts: Timeouts,
    target: str,
    muxes: set[ChannelMux] | None = None,
    sessions: set[SpdySession] | None = None,
) -> web.StreamResponse:
    """Port-forward over WebSocket: the SPDY tunnel if offered, else channel pairs, one per port."""
    offered = offered_websocket_protocols(request)
    if c.PORTFORWARD_TUNNEL in offered:
        return await serve_tunnel(request, target, forward, timeouts, sessions)
    if not ports:
        parsed = ports_from_query(request)
        if isinstance(parsed, str):
            return plain_error(400, parsed)
        ports = parsed
    proto = channels.negotiate(offered, channels.PORTFORWARD_PROTOCOLS)
    if proto is None:
        supported = [p for p in channels.PORTFORWARD_PROTOCOLS if p] + [c.PORTFORWARD_TUNNEL]
        return plain_error(403, f"requested protocol(s) are not supported: {offered}; supports {supported}")
    if len(ports) * 2 > (10 if proto.base64 else 255):
        return plain_error(400, f"too many ports for {proto.name or 'the channel protocol'}: {len(ports)}")
    ws = web.WebSocketResponse(protocols=(proto.name,) if proto.name else (), max_msg_size=0)
    await ws.prepare(request)
    mux = ChannelMux(
        ws,
        proto,
        readable=[2 * i for i in range(len(ports))],
        idle_timeout=timeouts.idle,
        hold_output=timeouts.websocket_hold,
    )
    if muxes is not None:
        muxes.add(mux)
    receiver = asyncio.ensure_future(mux.run())

    async def one(i: int, port: int) -> None:
        data_writer, error_writer = mux.writer(2 * i), mux.writer(2 * i + 1)
        with contextlib.suppress(BrokenPipeError):
            await data_writer.write(channels.encode_port(port))
            await error_writer.write(channels.encode_port(port))
        try:
            await forward(port, ChannelDuplex(mux.reader(2 * i), data_writer))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            message = f"error forwarding port {port} to pod {target}, uid : {exc}"
            log.info("%s", message)
            with contextlib.suppress(BrokenPipeError):
                await error_writer.write(message.encode("utf-8"))

    forwards = [asyncio.ensure_future(one(i, port)) for i, port in enumerate(ports)]
    closed = asyncio.ensure_future(mux.wait_closed())
    try:
        pending: set[asyncio.Future[None]] = set(forwards)
        while pending and not closed.done():
            done, _ = await asyncio.wait([*pending, closed], return_when=asyncio.FIRST_COMPLETED)
            pending -= done
    finally:
        closed.cancel()
        for f in forwards:
            f.cancel()
        for f in forwards:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await f
        await mux.close()
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiver
        if muxes is not None:
            muxes.discard(mux)
    return ws
