"""exec and attach over SPDY (remotecommand v1-v4) and WebSocket (channel.k8s.io v1, v4, v5, base64).

The server side of client-go's ``remotecommand`` executors, as kubelet serves it:

SPDY — the client opens one stream per ``streamType`` header, the error stream
first, then stdin, stdout, stderr (not with a TTY) and, from v3 on with a TTY,
resize; each waits for its SYN_REPLY before the next. The server expects one
error stream plus one per requested stdio stream (and resize for v3/v4 with a
TTY), replying to each; counting stops there, and a session whose streams do not
all arrive within the stream-creation timeout is dropped.

When the command ends the server closes stdout and stderr (FIN), writes the exit
status on the error stream (JSON from v4 on, the failure text before) and closes
it, then closes its side of stdin and resize. It then waits for the client to
hang up: client-go tears the connection down once stdout, stderr and the error
stream have all ended, and sending GOAWAY first would make spdystream drop
frames it has read but not yet delivered.

WebSocket — one message per write, behind a channel byte (see
:mod:`~arun.cri.streaming.channels`); an empty message on the lowest writable
channel tells the client the streams are ready; the status is written on channel
3 and the server then closes the WebSocket normally.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from arun.cri.streaming import channels, spdy, status, upgrade
from arun.cri.streaming import constants as c
from arun.cri.streaming.handshake import Timeouts, offered_websocket_protocols, plain_error
from arun.cri.streaming.runtime import InputStream, OutputStream, ResizeEvents, TerminalSize
from arun.cri.streaming.session import SpdySession, SpdyStream
from arun.cri.streaming.websocket import ChannelMux

log = logging.getLogger(__name__)

_RESIZE_PROTOCOLS = {c.REMOTECOMMAND_V3, c.REMOTECOMMAND_V4}
_KNOWN_TYPES = {
    c.STREAM_TYPE_ERROR,
    c.STREAM_TYPE_STDIN,
    c.STREAM_TYPE_STDOUT,
    c.STREAM_TYPE_STDERR,
    c.STREAM_TYPE_RESIZE,
}
MAX_RESIZE_BUFFER = 64 << 10


@dataclass(frozen=True)
class StreamOptions:
    """Which streams the CRI request asked for."""

    stdin: bool = False
    stdout: bool = False
    stderr: bool = False
    tty: bool = False


@dataclass
class CommandStreams:
    """What the command gets: the streams the client opened, and resize events with a TTY."""

    stdin: InputStream | None = None
    stdout: OutputStream | None = None
    stderr: OutputStream | None = None
    resize: ResizeEvents | None = None


#: Runs the exec or attach and returns the status for the error stream.
Command = Callable[[CommandStreams], Awaitable[status.Status]]


# --- resize ---------------------------------------------------------------------------------------
class ResizeEventStream:
    """Terminal sizes decoded from a stream of JSON objects (``{"Width":80,"Height":24}``).

    Reads on demand, like Go's ``json.Decoder`` over the resize stream: field
    names match case-insensitively, a missing field is 0, and anything that is
    not a pair of uint16 ends the events (as the Go decoder's first error does).
    """

    def __init__(self, source: InputStream) -> None:
        self._source = source
        self._text = ""
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._json = json.JSONDecoder()
        self._done = False

    def __aiter__(self) -> ResizeEventStream:
        return self

    async def __anext__(self) -> TerminalSize:
        while not self._done:
            size = self._parse_one()
            if size is not None:
                return size
            if self._done:
                break
            chunk = await self._source.read()
            if not chunk:
                self._done = True
                break
            self._text += self._utf8.decode(chunk)
            if len(self._text) > MAX_RESIZE_BUFFER:
                self._done = True
        raise StopAsyncIteration

    def _parse_one(self) -> TerminalSize | None:
        text = self._text.lstrip()
        if not text:
            self._text = ""
            return None
        try:
            obj, end = self._json.raw_decode(text)
        except json.JSONDecodeError:
            self._text = text
            return None  # maybe incomplete: wait for more
        self._text = text[end:]
        size = _to_size(obj)
        if size is None:
            self._done = True
        return size


def _to_size(obj: object) -> TerminalSize | None:
    if not isinstance(obj, dict):
        return None
    values = {"width": 0, "height": 0}
    for key in values:
        exact = key.capitalize()
        found = obj[exact] if exact in obj else next((v for k, v in obj.items() if k.lower() == key), None)
        if found is None:
            continue
        if isinstance(found, bool) or not isinstance(found, int) or not 0 <= found <= 0xFFFF:
            return None
        values[key] = found
    return TerminalSize(values["width"], values["height"])


# --- shared ---------------------------------------------------------------------------------------
async def _run_command(
    command: Command, streams: CommandStreams, closed: Awaitable[object]
) -> status.Status | None:
    """Run ``command``; None if the connection went away first (the command is then cancelled)."""
    task = asyncio.ensure_future(command(streams))
    watcher = asyncio.ensure_future(closed)
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        log.info("client connection lost: cancelling the command")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        return None
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


# --- SPDY -----------------------------------------------------------------------------------------
@dataclass
class _Collector:
    expected: int
    protocol: str
    streams: dict[str, SpdyStream] = field(default_factory=dict)
    complete: asyncio.Event = field(default_factory=asyncio.Event)

    def on_stream(self, stream: SpdyStream) -> None:
        kind = stream.header(c.STREAM_TYPE) or ""
        if self.complete.is_set() or kind in self.streams:
            stream.reset(spdy.RstStatus.REFUSED_STREAM)
            return
        stream.accept()
        if kind not in _KNOWN_TYPES or (
            kind == c.STREAM_TYPE_RESIZE and self.protocol not in _RESIZE_PROTOCOLS
        ):
            log.warning("unexpected stream type %r", kind)
            stream.discard()
            return
        self.streams[kind] = stream
        if len(self.streams) >= self.expected:
            self.complete.set()


async def serve_spdy(
    request: web.Request,
    protocol: str,
    options: StreamOptions,
    command: Command,
    timeouts: Timeouts,
    sessions: set[SpdySession] | None = None,
) -> web.StreamResponse:
    """Upgrade ``request`` (already negotiated to ``protocol``) and run ``command`` over SPDY."""
    expected = 1 + options.stdin + options.stdout + options.stderr
    if options.tty and protocol in _RESIZE_PROTOCOLS:
        expected += 1
    collector = _Collector(expected, protocol)
    connection = await upgrade.switch_to_spdy(request, protocol)
    session = SpdySession(
        spdy.Role.SERVER, connection, on_stream=collector.on_stream, idle_timeout=timeouts.idle
    )
    connection.attach(session.feed_data, session.feed_eof)
    if sessions is not None:
        sessions.add(session)
    try:
        await _spdy_exchange(session, collector, protocol, command, timeouts)
    finally:
        if sessions is not None:
            sessions.discard(session)
        session.abort()
    return connection.response


async def _wait_streams(session: SpdySession, collector: _Collector, within: float) -> bool:
    done = asyncio.ensure_future(collector.complete.wait())
    lost = asyncio.ensure_future(session.wait_closed())
    try:
        await asyncio.wait((done, lost), timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        done.cancel()
        lost.cancel()
    return collector.complete.is_set() and not session.closed


async def _spdy_exchange(
    session: SpdySession, collector: _Collector, protocol: str, command: Command, timeouts: Timeouts
) -> None:
    if not await _wait_streams(session, collector, timeouts.stream_creation):
        if not session.closed:
            log.warning("timed out waiting for client to create streams")
        return
    got = collector.streams
    error_stream = got.get(c.STREAM_TYPE_ERROR)
    stdin = got.get(c.STREAM_TYPE_STDIN)
    if protocol == c.REMOTECOMMAND_V1:
        # What 1.0-era kubelets did, and v1 clients expect: the error stream is
        # reset as soon as the streams are set up (so errors are never reported),
        # and the server closes its side of stdin.
        if error_stream is not None:
            error_stream.reset(spdy.RstStatus.CANCEL)
            error_stream = None
        if stdin is not None:
            await stdin.close()
    resize_stream = got.get(c.STREAM_TYPE_RESIZE)
    streams = CommandStreams(
        stdin=stdin,
        stdout=got.get(c.STREAM_TYPE_STDOUT),
        stderr=got.get(c.STREAM_TYPE_STDERR),
        resize=ResizeEventStream(resize_stream) if resize_stream is not None else None,
    )
    result = await _run_command(command, streams, session.wait_closed())
    if result is None:
        return
    with contextlib.suppress(BrokenPipeError):
        for kind in (c.STREAM_TYPE_STDOUT, c.STREAM_TYPE_STDERR):
            out = got.get(kind)
            if out is not None:
                await out.close()
        if error_stream is not None:
            payload = status.encode(result, json_status=protocol == c.REMOTECOMMAND_V4)
            if payload and not error_stream.closed_for_writing:
                await error_stream.write(payload)
            await error_stream.close()
        for kind in (c.STREAM_TYPE_STDIN, c.STREAM_TYPE_RESIZE):
            inbound = got.get(kind)
            if inbound is not None:
                inbound.discard()
                await inbound.close()
    # client-go hangs up once it has read everything; give it the time to.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeouts.close_grace):
            await session.wait_goaway_or_closed()


# --- WebSocket ------------------------------------------------------------------------------------
async def serve_websocket(
    request: web.Request,
    options: StreamOptions,
    command: Command,
    timeouts: Timeouts,
    muxes: set[ChannelMux] | None = None,
) -> web.StreamResponse:
    """Run ``command`` over a WebSocket with the channel protocol the client prefers."""
    offered = offered_websocket_protocols(request)
    proto = channels.negotiate(offered, channels.REMOTECOMMAND_PROTOCOLS)
    if proto is None:
        supported = [p for p in channels.REMOTECOMMAND_PROTOCOLS if p]
        return plain_error(403, f"requested protocol(s) are not supported: {offered}; supports {supported}")
    ws = web.WebSocketResponse(protocols=(proto.name,) if proto.name else (), max_msg_size=0)
    await ws.prepare(request)
    readable = [channels.RESIZE]
    if options.stdin:
        readable.append(channels.STDIN)
    mux = ChannelMux(
        ws, proto, readable=readable, idle_timeout=timeouts.idle, hold_output=timeouts.websocket_hold
    )
    if muxes is not None:
        muxes.add(mux)
    receiver = asyncio.ensure_future(mux.run())
    try:
        # an empty message on the lowest writable channel: the streams are ready
        first = channels.STDOUT if options.stdout else channels.STDERR if options.stderr else channels.ERROR
        with contextlib.suppress(BrokenPipeError):
            await mux.send(first, b"")
        streams = CommandStreams(
            stdin=mux.reader(channels.STDIN) if options.stdin else None,
            stdout=mux.writer(channels.STDOUT) if options.stdout else None,
            stderr=mux.writer(channels.STDERR) if options.stderr else None,
            resize=ResizeEventStream(mux.reader(channels.RESIZE)) if options.tty else None,
        )
        result = await _run_command(command, streams, mux.wait_closed())
        if result is not None:
            payload = status.encode(result, json_status=proto.json_status)
            if payload:
                with contextlib.suppress(BrokenPipeError):
                    await mux.send(channels.ERROR, payload)
    finally:
        await mux.close()
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiver
        if muxes is not None:
            muxes.discard(mux)
    return ws
