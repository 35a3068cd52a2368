"""Streaming clients that behave like client-go's, for tests of any CRI streaming server.

critest and crictl drive the streaming server through client-go; these clients
follow the same steps so a test against them means something:

SPDY remotecommand (``remotecommand.NewSPDYExecutor``): POST with ``Connection:
Upgrade``, ``Upgrade: SPDY/3.1`` and one ``X-Stream-Protocol-Version`` header per
protocol, v5 first; after the 101, streams are created one at a time, each
waiting for its SYN_REPLY — error first, then stdin, stdout, stderr (not with a
TTY) and resize (v3+ with a TTY). stdin is copied and then half-closed (FIN);
a second reader waits for the server to close stdin and half-closes too. stdout
and stderr are copied until EOF; only then is the error stream's content taken
(read concurrently until EOF) and decoded per protocol. Finally the connection
is closed the spdystream way: RST_STREAM for every stream not yet finished,
GOAWAY, then the socket.

SPDY port-forward (``portforward.PortForwarder``): per connection an error stream
(``streamType: error``, ``port``, ``requestID``) that is half-closed at once and
read until EOF, then a data stream; local data is written and half-closed; the
data stream is read until EOF, then reset; the error stream's text is the
connection's error.

WebSocket (``NewWebSocketExecutor``): only ``v5.channel.k8s.io`` by default; binary
messages only; the stdin close signal ``255, 0`` when stdin ends; results are
taken when the server closes the WebSocket. Port-forward over WebSocket uses
the ``SPDY/3.1+portforward.k8s.io`` tunnel like client-go's current dialer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

from arun.cri.streaming import channels, spdy, status
from arun.cri.streaming import constants as c
from arun.cri.streaming.runtime import TerminalSize
from arun.cri.streaming.session import SpdySession, SpdyStream

#: The protocols client-go's SPDY executor offers, in its order.
CLIENT_GO_SPDY_PROTOCOLS: tuple[str, ...] = (
    c.REMOTECOMMAND_V5,
    c.REMOTECOMMAND_V4,
    c.REMOTECOMMAND_V3,
    c.REMOTECOMMAND_V2,
    c.REMOTECOMMAND_V1,
)


class UpgradeError(Exception):
    """The server answered the upgrade request with something other than 101."""

    def __init__(self, status_code: int, headers: dict[str, str], body: bytes) -> None:
        super().__init__(
            f"unable to upgrade connection: {status_code}: {body.decode(errors='replace').strip()}"
        )
        self.status_code = status_code
        self.headers = headers
        self.body = body


@dataclass
class CommandResult:
    stdout: bytes = b""
    stderr: bytes = b""
    #: The exit code client-go would report (0 for success), or None if the outcome was an error.
    exit_code: int | None = None
    #: The error text client-go would return (protocol errors included), or None.
    error: str | None = None
    protocol: str = ""
    raw_error_stream: bytes = b""


# --- a plain socket as a ByteChannel -----------------------------------------------------------
class _SocketChannel:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._transport = writer.transport

    async def send(self, data: bytes) -> None:
        if self._writer.is_closing():
            raise ConnectionResetError("socket closed")
        self._writer.write(data)
        await self._writer.drain()

    def pause_reading(self) -> None:
        if not self._transport.is_closing():
            self._transport.pause_reading()  # type: ignore[attr-defined]

    def resume_reading(self) -> None:
        if not self._transport.is_closing():
            self._transport.resume_reading()  # type: ignore[attr-defined]

    def close(self) -> None:
        self._writer.close()


class _WebSocketChannel:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._lock = asyncio.Lock()
        self.reading = asyncio.Event()
        self.reading.set()
        self._closer: asyncio.Future[None] | None = None

    async def send(self, data: bytes) -> None:
        async with self._lock:
            if self._ws.closed:
                raise ConnectionResetError("websocket closed")
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
            await self._ws.close()


# --- SPDY connection -----------------------------------------------------------------------------
class SpdyClient:
    """A client SPDY connection made by an HTTP upgrade (or a WebSocket tunnel)."""

    def __init__(self, session: SpdySession, protocol: str, closers: list[object]) -> None:
        self.session = session
        self.protocol = protocol
        self._closers = closers
        self._pump: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        protocols: Sequence[str],
        *,
        method: str = "POST",
        ssl_context: ssl.SSLContext | None = None,
        extra_headers: Iterable[tuple[str, str]] = (),
    ) -> SpdyClient:
        parts = urlsplit(url)
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if parts.scheme == "https" else 80)
        reader, writer = await asyncio.open_connection(
            host, port, ssl=ssl_context if parts.scheme == "https" else None
        )
        try:
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            lines = [
                f"{method} {path} HTTP/1.1",
                f"Host: {parts.netloc}",
                "User-Agent: arun-testing/spdy",
                "Content-Length: 0",
                "Connection: Upgrade",
                f"Upgrade: {c.UPGRADE_SPDY}",
            ]
            lines += [f"{c.HEADER_PROTOCOL_VERSION}: {p}" for p in protocols]
            lines += [f"{k}: {v}" for k, v in extra_headers]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            code = int(status_line.split()[1])
            headers: dict[str, str] = {}
            for line in header_lines:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers.setdefault(k.strip().lower(), v.strip())
            if code != 101:
                length = int(headers.get("content-length", "0") or 0)
                body = await reader.readexactly(length) if length else b""
                raise UpgradeError(code, headers, body)
            if "upgrade" not in headers.get("connection", "").lower() or (
                c.UPGRADE_SPDY.lower() not in headers.get("upgrade", "").lower()
            ):
                raise UpgradeError(code, headers, b"missing upgrade headers in response")
        except BaseException:
            writer.close()
            raise
        session = SpdySession(spdy.Role.CLIENT, _SocketChannel(writer))
        client = cls(session, headers.get(c.HEADER_PROTOCOL_VERSION.lower(), ""), [writer])

        async def pump() -> None:
            try:
                while data := await reader.read(65536):
                    session.feed_data(data)
            except ConnectionError:
                pass
            finally:
                session.feed_eof()

        client._pump = asyncio.ensure_future(pump())
        return client

    @classmethod
    async def connect_tunnel(
        cls,
        url: str,
        protocols: Sequence[str] = (c.PORTFORWARD_V1,),
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> SpdyClient:
        """SPDY inside a WebSocket, as client-go's ``NewSPDYOverWebsocketDialer``."""
        http = aiohttp.ClientSession()
        try:
            ws = await http.ws_connect(
                _ws_url(url),
                protocols=[c.SPDY_TUNNEL_PREFIX + p for p in protocols],
                ssl=ssl_context if ssl_context is not None else True,
                max_msg_size=0,
            )
        except BaseException:
            await http.close()
            raise
        negotiated = ws.protocol or ""
        if negotiated not in [c.SPDY_TUNNEL_PREFIX + p for p in protocols]:
            await ws.close()
            await http.close()
            raise UpgradeError(101, {}, f"invalid protocol {negotiated!r}".encode())
        channel = _WebSocketChannel(ws)
        session = SpdySession(spdy.Role.CLIENT, channel)
        client = cls(session, negotiated.removeprefix(c.SPDY_TUNNEL_PREFIX), [channel, http])

        async def pump() -> None:
            try:
                while True:
                    if not channel.reading.is_set():
                        await channel.reading.wait()
                    msg = await ws.receive()
                    if msg.type != aiohttp.WSMsgType.BINARY:
                        return
                    session.feed_data(msg.data)
            finally:
                session.feed_eof()

        client._pump = asyncio.ensure_future(pump())
        return client

    async def open(self, headers: dict[str, str]) -> SpdyStream:
        return await self.session.open_stream(headers)

    async def close(self) -> None:
        """As client-go's connection Close: reset unfinished streams, GOAWAY, close the socket."""
        session = self.session
        if not session.closed:
            for stream in session.streams():
                if not stream.closed_for_writing:
                    stream.reset(spdy.RstStatus.CANCEL)
            session.conn.go_away()
            with contextlib.suppress(BrokenPipeError):
                await session.flush()
        session.abort()
        for closer in self._closers:
            if isinstance(closer, asyncio.StreamWriter):
                closer.close()
                with contextlib.suppress(OSError):
                    await closer.wait_closed()
            elif isinstance(closer, _WebSocketChannel):
                await closer.aclose()
            elif isinstance(closer, aiohttp.ClientSession):
                await closer.close()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump


def _ws_url(url: str) -> str:
    if url.startswith("https://"):
        return "wss://" + url[len("https://") :]
    if url.startswith("http://"):
        return "ws://" + url[len("http://") :]
    return url


async def _aiter_bytes(data: bytes | AsyncIterator[bytes] | None) -> AsyncIterator[bytes]:
    if data is None:
        return
    if isinstance(data, bytes):
        if data:
            yield data
        return
    async for chunk in data:
        yield chunk


async def _aiter_sizes(
    sizes: Iterable[TerminalSize] | AsyncIterator[TerminalSize],
) -> AsyncIterator[TerminalSize]:
    if isinstance(sizes, AsyncIterator):
        async for size in sizes:
            yield size
    else:
        for size in sizes:
            yield size


def _decode_outcome(protocol: str, raw: bytes, result: CommandResult) -> None:
    result.raw_error_stream = raw
    if protocol in (c.REMOTECOMMAND_V4, c.REMOTECOMMAND_V5, c.BASE64_V4):
        try:
            outcome = status.decode_json(raw)
        except status.StatusDecodeError as exc:
            result.error = str(exc)
            return
    else:
        outcome = status.decode_text(raw)
        if outcome.error is not None:
            outcome = status.Outcome(error=f"error executing remote command: {outcome.error}")
    result.exit_code, result.error = outcome.exit_code, outcome.error


# --- SPDY remotecommand ------------------------------------------------------------------------------
async def spdy_remotecommand(
    url: str,
    *,
    stdin: bytes | AsyncIterator[bytes] | None = None,
    stdout: bool = True,
    stderr: bool = True,
    tty: bool = False,
    resizes: Iterable[TerminalSize] | AsyncIterator[TerminalSize] = (),
    protocols: Sequence[str] = CLIENT_GO_SPDY_PROTOCOLS,
    method: str = "POST",
    ssl_context: ssl.SSLContext | None = None,
) -> CommandResult:
    """Run the exec/attach behind ``url`` the way client-go's SPDY executor does."""
    client = await SpdyClient.connect(url, protocols, method=method, ssl_context=ssl_context)
    result = CommandResult(protocol=client.protocol)
    try:
        await _spdy_stream(client, result, stdin, stdout, stderr, tty, resizes)
    finally:
        await client.close()
    return result


async def _spdy_stream(
    client: SpdyClient,
    result: CommandResult,
    stdin: bytes | AsyncIterator[bytes] | None,
    want_stdout: bool,
    want_stderr: bool,
    tty: bool,
    resizes: Iterable[TerminalSize] | AsyncIterator[TerminalSize],
) -> None:
    proto = client.protocol or c.REMOTECOMMAND_V1
    error_stream = await client.open({"streamType": c.STREAM_TYPE_ERROR})
    remote_stdin = await client.open({"streamType": c.STREAM_TYPE_STDIN}) if stdin is not None else None
    remote_stdout = await client.open({"streamType": c.STREAM_TYPE_STDOUT}) if want_stdout else None
    remote_stderr = (
        await client.open({"streamType": c.STREAM_TYPE_STDERR}) if want_stderr and not tty else None
    )
    resize_stream = None
    if tty and proto in (c.REMOTECOMMAND_V3, c.REMOTECOMMAND_V4, c.REMOTECOMMAND_V5):
        resize_stream = await client.open({"streamType": c.STREAM_TYPE_RESIZE})

    background: list[asyncio.Task[None]] = []
    error_read = asyncio.ensure_future(error_stream.read_all())

    if resize_stream is not None:

        async def send_resizes() -> None:
            with contextlib.suppress(BrokenPipeError):
                async for size in _aiter_sizes(resizes):
                    line = json.dumps({"Width": size.width, "Height": size.height}, separators=(",", ":"))
                    await resize_stream.write(line.encode() + b"\n")

        background.append(asyncio.ensure_future(send_resizes()))

    if remote_stdin is not None:
        closed_once = False

        async def close_stdin() -> None:
            nonlocal closed_once
            if not closed_once:
                closed_once = True
                await remote_stdin.close()

        async def copy_stdin() -> None:
            with contextlib.suppress(BrokenPipeError):
                async for chunk in _aiter_bytes(stdin):
                    await remote_stdin.write(chunk)
            await close_stdin()

        async def wait_server_closes_stdin() -> None:
            await remote_stdin.read_all()
            await close_stdin()

        background.append(asyncio.ensure_future(copy_stdin()))
        background.append(asyncio.ensure_future(wait_server_closes_stdin()))

    async def copy(stream: SpdyStream | None) -> bytes:
        return await stream.read_all() if stream is not None else b""

    if proto == c.REMOTECOMMAND_V1:
        # v1 reports a non-empty error stream as soon as it arrives
        outputs = asyncio.gather(copy(remote_stdout), copy(remote_stderr))
        await asyncio.wait((outputs, error_read), return_when=asyncio.FIRST_COMPLETED)
        if error_read.done() and error_read.result():
            _decode_outcome(proto, error_read.result(), result)
            outputs.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await outputs
        else:
            result.stdout, result.stderr = await outputs
            result.exit_code = 0
            error_read.cancel()
    else:
        result.stdout, result.stderr = await asyncio.gather(copy(remote_stdout), copy(remote_stderr))
        _decode_outcome(proto, await error_read, result)
    for task in background:
        task.cancel()
    for task in background:
        with contextlib.suppress(asyncio.CancelledError, BrokenPipeError):
            await task


# --- SPDY port-forward ------------------------------------------------------------------------------
@dataclass
class ForwardResult:
    data: bytes = b""
    error: str = ""


@dataclass
class PortForwardClient:
    """One port-forward connection (``portforward.k8s.io``) carrying any number of forwarded connections."""

    client: SpdyClient
    _next_request_id: int = 0
    results: list[ForwardResult] = field(default_factory=list)

    @classmethod
    async def connect(
        cls, url: str, *, websocket: bool = False, ssl_context: ssl.SSLContext | None = None
    ) -> PortForwardClient:
        if websocket:
            client = await SpdyClient.connect_tunnel(url, ssl_context=ssl_context)
        else:
            client = await SpdyClient.connect(url, (c.PORTFORWARD_V1,), ssl_context=ssl_context)
        if client.protocol != c.PORTFORWARD_V1:
            await client.close()
            raise UpgradeError(
                101, {}, f"unable to negotiate protocol: server returned {client.protocol!r}".encode()
            )
        return cls(client)

    async def forward(
        self, port: int, data: bytes | AsyncIterator[bytes] = b"", *, half_close: bool = True
    ) -> ForwardResult:
        """One forwarded connection: send ``data``, half-close, read the answer until EOF."""
        request_id = self._next_request_id
        self._next_request_id += 1
        headers = {"streamType": c.STREAM_TYPE_ERROR, "port": str(port), "requestID": str(request_id)}
        error_stream = await self.client.open(headers)
        await error_stream.close()
        error_read = asyncio.ensure_future(error_stream.read_all())
        data_stream = await self.client.open({**headers, "streamType": c.STREAM_TYPE_DATA})

        async def send() -> None:
            with contextlib.suppress(BrokenPipeError):
                async for chunk in _aiter_bytes(data):
                    await data_stream.write(chunk)
                if half_close:
                    await data_stream.close()

        sender = asyncio.ensure_future(send())
        received = await data_stream.read_all()
        data_stream.reset()
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        error = await error_read
        result = ForwardResult(received, error.decode("utf-8", "replace"))
        self.results.append(result)
        return result

    async def close(self) -> None:
        await self.client.close()


# --- WebSocket remotecommand ---------------------------------------------------------------------------
async def ws_remotecommand(
    url: str,
    *,
    protocols: Sequence[str] = (c.REMOTECOMMAND_V5,),
    stdin: bytes | AsyncIterator[bytes] | None = None,
    tty: bool = False,
    resizes: Iterable[TerminalSize] | AsyncIterator[TerminalSize] = (),
    ssl_context: ssl.SSLContext | None = None,
) -> CommandResult:
    """Exec/attach over WebSocket as client-go's WebSocket executor does (v5 by default).

    Base64 protocols are spoken too (text messages), for servers' sake; client-go
    itself only uses the binary ones.
    """
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(
            _ws_url(url),
            protocols=list(protocols),
            ssl=ssl_context if ssl_context is not None else True,
            max_msg_size=0,
            autoping=True,
        )
        negotiated = ws.protocol or ""
        if protocols and negotiated not in protocols:
            await ws.close()
            raise UpgradeError(101, {}, f"invalid protocol {negotiated!r}".encode())
        proto = channels.REMOTECOMMAND_PROTOCOLS.get(negotiated, channels.REMOTECOMMAND_PROTOCOLS[""])
        result = CommandResult(protocol=negotiated)
        buffers: dict[int, bytearray] = {
            channels.STDOUT: bytearray(),
            channels.STDERR: bytearray(),
            3: bytearray(),
        }
        lock = asyncio.Lock()

        async def send(message: bytes | str) -> None:
            async with lock:
                if isinstance(message, str):
                    await ws.send_str(message)
                else:
                    await ws.send_bytes(message)

        async def send_stdin() -> None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                async for chunk in _aiter_bytes(stdin):
                    await send(channels.encode(proto, channels.STDIN, chunk))
                if proto.close_signal:
                    await send(channels.encode_close(channels.STDIN))

        async def send_resizes() -> None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                async for size in _aiter_sizes(resizes):
                    line = json.dumps({"Width": size.width, "Height": size.height}) + "\n"
                    await send(channels.encode(proto, channels.RESIZE, line.encode()))

        tasks = []
        if stdin is not None:
            tasks.append(asyncio.ensure_future(send_stdin()))
        if tty:
            tasks.append(asyncio.ensure_future(send_resizes()))
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    if proto.base64:
                        result.error = "unexpected binary message"
                        break
                    decoded = channels.decode(proto, msg.data)
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    if not proto.base64:
                        result.error = f"unexpected message type: {msg.type}"
                        break
                    decoded = channels.decode(proto, msg.data)
                else:
                    break
                if isinstance(decoded, channels.ChannelData) and decoded.channel in buffers:
                    buffers[decoded.channel] += decoded.data
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await ws.close()
        result.stdout, result.stderr = bytes(buffers[channels.STDOUT]), bytes(buffers[channels.STDERR])
        if result.error is None:
            _decode_outcome(negotiated or c.REMOTECOMMAND_V1, bytes(buffers[3]), result)
        return result


# --- WebSocket port-forward with channel pairs ------------------------------------------------------------
async def ws_portforward(
    url: str,
    ports: Sequence[int],
    sends: dict[int, bytes],
    *,
    protocol: str = c.REMOTECOMMAND_V4,
    ssl_context: ssl.SSLContext | None = None,
    settle: float = 0.5,
) -> dict[int, ForwardResult]:
    """Port-forward over ``v4.channel.k8s.io`` channel pairs: send, collect until the server closes.

    The first message of each channel must start with the port prefix; it is
    checked and stripped. After everything has been sent the client waits up to
    ``settle`` seconds of silence, then closes.
    """
    proto = channels.PORTFORWARD_PROTOCOLS[protocol]
    out: dict[int, ForwardResult] = {p: ForwardResult() for p in ports}
    seen_prefix: set[int] = set()
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(
            _ws_url(url), protocols=[protocol] if protocol else [], ssl=ssl_context if ssl_context else True
        )
        for i, port in enumerate(ports):
            payload = sends.get(port)
            if payload:
                message = channels.encode(proto, 2 * i, payload)
                if isinstance(message, str):
                    await ws.send_str(message)
                else:
                    await ws.send_bytes(message)
        while True:
            try:
                msg = await ws.receive(timeout=settle)
            except TimeoutError:
                break
            if msg.type not in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                break
            decoded = channels.decode(proto, msg.data)
            if not isinstance(decoded, channels.ChannelData):
                continue
            index, is_error = divmod(decoded.channel, 2)
            port = ports[index]
            data = decoded.data
            if decoded.channel not in seen_prefix:
                seen_prefix.add(decoded.channel)
                if channels.decode_port(data) != port:
                    raise AssertionError(
                        f"channel {decoded.channel} announced port {channels.decode_port(data)}"
                    )
                data = data[2:]
            if is_error:
                out[port].error += data.decode("utf-8", "replace")
            else:
                out[port].data += data
        await ws.close()
    return out
