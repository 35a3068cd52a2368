"""The asyncio edges end to end over real unix sockets."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from arun.testing.ttrpc import ECHO_SERVICE, EchoRequest, EchoResponse, echo_descriptor
from arun.ttrpc import (
    MAX_DATA,
    MD,
    Client,
    ClosedError,
    Code,
    Connection,
    RequestInfo,
    Role,
    Server,
    ServiceStub,
    StatusError,
)
from arun.ttrpc.events import ResponseReceived
from arun.ttrpc.frames import HEADER
from arun.ttrpc.service import methods_of

from .conftest import Echo, assert_no_tasks_left

pytestmark = pytest.mark.asyncio

METHODS = methods_of(ECHO_SERVICE)


class RawPeer:
    """A client that speaks bytes, to send what the real client never would."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = Connection(Role.CLIENT)

    @classmethod
    async def open(cls, path: str) -> RawPeer:
        return cls(*await asyncio.open_unix_connection(path))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self) -> tuple[int, int, Any]:
        """(stream id, code, message) of the next frame, which must be a Response."""
        head = await self.reader.readexactly(10)
        length, sid, type_, _flags = HEADER.unpack(head)
        body = await self.reader.readexactly(length)
        assert type_ == 2
        from arun.api.ttrpc import request_pb2

        resp = request_pb2.Response.FromString(body)
        return sid, resp.status.code, resp.status.message

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


# -- unary ---------------------------------------------------------------------------------------


async def test_unary_round_trip(stub: ServiceStub, client: Client) -> None:
    reply = await stub.Unary(EchoRequest(text="hello", blob=b"\0\1"))
    assert reply == EchoResponse(text="hello", blob=b"\0\1")
    raw = await client.call(ECHO_SERVICE, "Unary", EchoRequest(text="raw").SerializeToString())
    assert EchoResponse.FromString(raw).text == "raw"


async def test_stub_knows_its_methods(stub: ServiceStub, client: Client) -> None:
    assert stub.service_name == ECHO_SERVICE
    assert set(stub.methods) == {"Unary", "ServerStream", "ClientStream", "Bidi"}
    with pytest.raises(AttributeError, match="no method 'Nope'"):
        stub.Nope  # noqa: B018
    by_name = ServiceStub(client, ECHO_SERVICE)
    assert (await by_name.Unary(EchoRequest(text="x"))).text == "x"


async def test_concurrent_calls_multiplex_and_finish_out_of_order(stub: ServiceStub) -> None:
    order: list[str] = []

    async def call(text: str, ms: int) -> None:
        reply = await stub.Unary(EchoRequest(text=text, sleep_ms=ms))
        order.append(reply.text)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(call("slow", 150))
        tg.create_task(call("fast", 1))
        for i in range(50):
            tg.create_task(call(f"n{i}", 0))
    assert order[-1] == "slow" and "fast" in order and len(order) == 52


async def test_metadata_reaches_the_handler(sock_path: str, server: Server, echo: Echo) -> None:
    c = await Client.connect(sock_path, metadata=lambda: [("Containerd-Namespace-Ttrpc", "ns1")])
    try:
        md = MD({"X-Trace": ["a", "b"]})
        await c.invoke(METHODS["Unary"], EchoRequest(text="m"), metadata=md)
        await c.invoke(METHODS["Unary"], EchoRequest(text="m"))
    finally:
        await c.close()
    assert echo.seen_metadata[0] == {"containerd-namespace-ttrpc": ["ns1"], "x-trace": ["a", "b"]}
    assert echo.seen_metadata[1] == {"containerd-namespace-ttrpc": ["ns1"]}


async def test_request_context_hook_runs_inside_the_request_task(sock_path: str) -> None:
    namespace: contextvars.ContextVar[str] = contextvars.ContextVar("namespace")
    infos: list[RequestInfo] = []

    @contextlib.contextmanager
    def request_context(info: RequestInfo) -> Iterator[None]:
        infos.append(info)
        token = namespace.set(info.metadata.first("containerd-namespace-ttrpc") or "")
        try:
            yield
        finally:
            namespace.reset(token)

    class NS:
        async def Unary(self, req: Any) -> Any:
            return EchoResponse(text=namespace.get())

    srv = Server(request_context=request_context)
    srv.register(echo_descriptor, NS())
    await srv.serve_unix(sock_path)
    c = await Client.connect(sock_path, deadline=lambda: 30.0)
    try:
        reply = await c.invoke(
            METHODS["Unary"], EchoRequest(), metadata=[("containerd-namespace-ttrpc", "k8s.io")]
        )
        assert reply.text == "k8s.io"
        await c.invoke(METHODS["Unary"], EchoRequest(), timeout=2.5)
    finally:
        await c.close()
        await srv.close()
    assert infos[0].service == ECHO_SERVICE and infos[0].method == "Unary"
    assert infos[0].timeout is not None and 29 < infos[0].timeout <= 30
    assert infos[1].timeout is not None and 2 < infos[1].timeout <= 2.5  # explicit beats the hook
    assert namespace.get(None) is None  # nothing leaked into this context


async def test_hook_errors_become_the_status(sock_path: str) -> None:
    @contextlib.contextmanager
    def request_context(info: RequestInfo) -> Iterator[None]:
        raise StatusError(Code.FAILED_PRECONDITION, "namespace is required")
        yield  # pragma: no cover

    srv = Server(request_context=request_context)
    srv.register(echo_descriptor, Echo())
    await srv.serve_unix(sock_path)
    try:
        async with await Client.connect(sock_path) as c:
            with pytest.raises(StatusError) as info:
                await c.invoke(METHODS["Unary"], EchoRequest())
            assert (info.value.code, info.value.message) == (9, "namespace is required")
    finally:
        await srv.close()


# -- errors --------------------------------------------------------------------------------------


async def test_unknown_service_and_method_are_unimplemented(client: Client, sock_path: str) -> None:
    with pytest.raises(StatusError) as info:
        await client.call("no.such.Service", "Unary")
    assert (info.value.code, info.value.message) == (Code.UNIMPLEMENTED, "service no.such.Service")
    with pytest.raises(StatusError) as info:
        await client.call(ECHO_SERVICE, "Nope")
    assert (info.value.code, info.value.message) == (Code.UNIMPLEMENTED, "method Nope")


async def test_method_missing_on_the_handler_is_unimplemented(sock_path: str) -> None:
    class OnlyUnary:
        async def Unary(self, req: Any) -> Any:
            return EchoResponse()

    srv = Server()
    srv.register(ECHO_SERVICE, OnlyUnary())
    await srv.serve_unix(sock_path)
    try:
        async with await Client.connect(sock_path) as c:
            stream = ServiceStub(c, ECHO_SERVICE).ServerStream(EchoRequest())
            with pytest.raises(StatusError) as info:
                await stream.recv()
            assert (info.value.code, info.value.message) == (12, "method ServerStream")
    finally:
        await srv.close()


async def test_undecodable_payload_is_invalid_argument(client: Client, stub: ServiceStub) -> None:
    with pytest.raises(StatusError) as info:
        await client.call(ECHO_SERVICE, "Unary", b"\x0a\xff\xff")
    assert info.value.code == Code.INVALID_ARGUMENT
    assert (await stub.Unary(EchoRequest(text="still fine"))).text == "still fine"


async def test_handler_errors_map_to_statuses(stub: ServiceStub) -> None:
    cases = [("raise:5", 5, "as asked"), ("boom", 2, "boom"), ("missing", 5, "no such thing")]
    for text, code, message in cases:
        with pytest.raises(StatusError) as info:
            await stub.Unary(EchoRequest(text=text))
        assert (info.value.code, info.value.message) == (code, message)
    with pytest.raises(StatusError) as info:
        await stub.Unary(EchoRequest(text="none"))
    assert (info.value.code, info.value.message) == (2, "ttrpc: marshal called with nil")


async def test_status_details_survive(sock_path: str) -> None:
    from google.protobuf import any_pb2

    detail = any_pb2.Any(type_url="x.Detail", value=b"1")

    class Detailed:
        async def Unary(self, req: Any) -> Any:
            raise StatusError(Code.ABORTED, "with details", [detail])

    srv = Server()
    srv.register(ECHO_SERVICE, Detailed())
    await srv.serve_unix(sock_path)
    try:
        async with await Client.connect(sock_path) as c:
            with pytest.raises(StatusError) as info:
                await c.invoke(METHODS["Unary"], EchoRequest())
                got = [(d.type_url, d.value) for d in info.value.details]
                assert got == [(detail.type_url, detail.value)]
    finally:
        await srv.close()


async def test_wrong_reply_type_is_internal(sock_path: str) -> None:
    class Wrong:
        async def Unary(self, req: Any) -> Any:
            return EchoRequest(text="not the response type")

    srv = Server()
    srv.register(ECHO_SERVICE, Wrong())
    await srv.serve_unix(sock_path)
    try:
        async with await Client.connect(sock_path) as c:
            with pytest.raises(StatusError) as info:
                await c.invoke(METHODS["Unary"], EchoRequest())
            assert info.value.code == Code.INTERNAL
    finally:
        await srv.close()


# -- size limits ---------------------------------------------------------------------------------


async def test_large_messages_up_to_the_limit(stub: ServiceStub) -> None:
    blob = os.urandom(MAX_DATA - 64)
    reply = await stub.Unary(EchoRequest(blob=blob))
    assert reply.blob == blob


async def test_too_large_request_is_resource_exhausted_and_never_sent(stub: ServiceStub, echo: Echo) -> None:
    with pytest.raises(StatusError) as info:
        await stub.Unary(EchoRequest(blob=bytes(MAX_DATA)))
    assert info.value.code == Code.RESOURCE_EXHAUSTED
    assert not echo.started.is_set()
    assert (await stub.Unary(EchoRequest(text="ok"))).text == "ok"


async def test_too_large_reply_is_resource_exhausted(stub: ServiceStub) -> None:
    with pytest.raises(StatusError) as info:
        await stub.Unary(EchoRequest(blob=bytes(MAX_DATA - 20)))  # the reply envelope is larger
    assert info.value.code == Code.RESOURCE_EXHAUSTED


async def test_oversized_frame_on_the_wire_keeps_the_connection(server: Server, sock_path: str) -> None:
    peer = await RawPeer.open(sock_path)
    try:
        over = MAX_DATA + 100
        await peer.send(HEADER.pack(over, 1, 1, 0) + bytes(over))
        sid, code, message = await peer.response()
        assert (sid, code) == (1, Code.RESOURCE_EXHAUSTED)
        assert message == f"message length {over} exceed maximum message size of {MAX_DATA}"
        peer.conn.send_request(ECHO_SERVICE, "Unary", EchoRequest(text="after").SerializeToString())
        await peer.send(peer.conn.data_to_send())
        sid, code, _ = await peer.response()
        assert (sid, code) == (1, 0)  # the raw Connection starts at 1: the skipped id was never taken
    finally:
        await peer.close()


async def test_reused_and_even_ids_on_the_wire(server: Server, sock_path: str) -> None:
    peer = await RawPeer.open(sock_path)
    try:
        body = EchoRequest(text="x").SerializeToString()
        from arun.api.ttrpc import request_pb2

        req = request_pb2.Request(service=ECHO_SERVICE, method="Unary", payload=body).SerializeToString()
        frame = lambda sid: HEADER.pack(len(req), sid, 1, 0) + req  # noqa: E731
        await peer.send(frame(5))
        assert (await peer.response())[:2] == (5, 0)
        await peer.send(frame(5))
        assert await peer.response() == (5, 3, "StreamID cannot be re-used and must increment")
        await peer.send(frame(3))
        assert await peer.response() == (3, 3, "StreamID cannot be re-used and must increment")
        await peer.send(frame(8))
        assert await peer.response() == (8, 3, "StreamID must be odd for client initiated streams")
        await peer.send(frame(7))
        assert (await peer.response())[:2] == (7, 0)
    finally:
        await peer.close()


# -- deadlines -----------------------------------------------------------------------------------


async def test_server_deadline_cancels_the_handler(server: Server, sock_path: str, echo: Echo) -> None:
    peer = await RawPeer.open(sock_path)
    try:
        peer.conn.send_request(
            ECHO_SERVICE, "Unary", EchoRequest(text="hang").SerializeToString(), timeout_nano=50_000_000
        )
        await peer.send(peer.conn.data_to_send())
        sid, code, message = await asyncio.wait_for(peer.response(), 5)
        assert (sid, code, message) == (1, Code.DEADLINE_EXCEEDED, "context deadline exceeded")
        assert echo.cancelled == ["hang"]
    finally:
        await peer.close()


async def test_client_deadline_gives_up_and_drops_the_late_reply(stub: ServiceStub, client: Client) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(StatusError) as info:
        await stub.Unary(EchoRequest(text="slow", sleep_ms=300), timeout=0.05)
    assert info.value.code == Code.DEADLINE_EXCEEDED
    assert loop.time() - t0 < 0.25
    assert client._conn.open_streams == 0 and not client._calls
    await asyncio.sleep(0.4)  # the server's reply arrives and is dropped
    assert (await stub.Unary(EchoRequest(text="next"))).text == "next"


async def test_client_deadline_hook(sock_path: str, server: Server) -> None:
    remaining = [0.05]
    async with await Client.connect(sock_path, deadline=lambda: remaining[0]) as c:
        stub = ServiceStub(c, echo_descriptor)
        with pytest.raises(StatusError) as info:
            await stub.Unary(EchoRequest(text="hang"))
        assert info.value.code == Code.DEADLINE_EXCEEDED
        remaining[0] = -1.0  # already past: fails before sending anything
        with pytest.raises(StatusError) as info:
            await stub.Unary(EchoRequest(text="x"))
        assert info.value.code == Code.DEADLINE_EXCEEDED


# -- connection loss -----------------------------------------------------------------------------


async def test_server_going_away_fails_pending_calls_with_closed(sock_path: str, echo: Echo) -> None:
    srv = Server()
    srv.register(ECHO_SERVICE, echo)
    await srv.serve_unix(sock_path)
    closed = asyncio.Event()
    c = await Client.connect(sock_path, on_close=closed.set)
    stub = ServiceStub(c, echo_descriptor)
    calls = [asyncio.create_task(stub.Unary(EchoRequest(text="hang"))) for _ in range(3)]
    stream = stub.ServerStream(EchoRequest(text="hang", count=1))
    assert (await stream.recv()).index == 0
    await echo.started.wait()
    await srv.close()
    for call in calls:
        with pytest.raises(ClosedError, match="ttrpc: closed"):
            await call
    with pytest.raises(ClosedError):
        await stream.recv()
    await asyncio.wait_for(closed.wait(), 5)
    assert echo.cancelled.count("hang") == 3
    with pytest.raises(ClosedError):
        await stub.Unary(EchoRequest())
    await c.close()
    await assert_no_tasks_left()


async def test_client_going_away_cancels_its_handlers(server: Server, sock_path: str, echo: Echo) -> None:
    c = await Client.connect(sock_path)
    call = asyncio.create_task(ServiceStub(c, echo_descriptor).Unary(EchoRequest(text="hang")))
    await echo.started.wait()
    assert server.active_requests == 1
    await c.close()
    with pytest.raises(ClosedError):
        await call
    for _ in range(100):
        if echo.cancelled:
            break
        await asyncio.sleep(0.01)
    assert echo.cancelled == ["hang"] and echo.finished == ["hang"]
    assert server.active_requests == 0
    await assert_no_tasks_left()


async def test_connect_to_nothing_fails(sock_dir: str) -> None:
    with pytest.raises(OSError):
        await Client.connect(os.path.join(sock_dir, "absent"))


# -- streaming -----------------------------------------------------------------------------------


async def test_server_streaming(stub: ServiceStub) -> None:
    got = [r.index async for r in stub.ServerStream(EchoRequest(text="s", count=500))]
    assert got == list(range(500))  # more than the per-stream buffer: reading pauses and resumes
    assert [r async for r in stub.ServerStream(EchoRequest(count=0))] == []


async def test_server_streaming_error_after_messages(stub: ServiceStub) -> None:
    stream = stub.ServerStream(EchoRequest(text="fail-after", count=2))
    assert [(await stream.recv()).index, (await stream.recv()).index] == [0, 1]
    with pytest.raises(StatusError) as info:
        await stream.recv()
    assert (info.value.code, info.value.message) == (9, "stream failed")


async def test_client_streaming(stub: ServiceStub) -> None:
    stream = stub.ClientStream()
    for i in range(300):
        await stream.send(EchoRequest(text=str(i)))
    reply = await stream.close_and_recv()
    assert reply.index == 300 and reply.text.split(",")[-1] == "299"
    assert await stream.recv() is None


async def test_client_streaming_error_ends_the_stream(stub: ServiceStub) -> None:
    stream = stub.ClientStream()
    await stream.send(EchoRequest(text="fail"))
    with pytest.raises(StatusError) as info:
        await stream.recv()
    assert info.value.code == 11
    with pytest.raises(StatusError):
        await stream.send(EchoRequest(text="more"))  # the stream ended with that error


async def test_bidi_streaming(stub: ServiceStub) -> None:
    async with stub.Bidi() as stream:
        for word in ["a", "b", "c"]:
            await stream.send(EchoRequest(text=word))
            reply = await stream.recv()
            assert reply.text == word.upper()
        await stream.close_send()
        assert await stream.recv() is None


async def test_streams_and_unary_share_a_connection(stub: ServiceStub) -> None:
    async def bidi(n: int) -> list[str]:
        out = []
        async with stub.Bidi() as s:
            for i in range(n):
                await s.send(EchoRequest(text=f"b{i}"))
            await s.close_send()
            async for r in s:
                out.append(r.text)
        return out

    results = await asyncio.gather(
        bidi(20),
        stub.Unary(EchoRequest(text="u")),
        bidi(5),
        asyncio.create_task(_collect(stub.ServerStream(EchoRequest(count=30)))),
    )
    assert results[0] == [f"B{i}" for i in range(20)]
    assert results[1].text == "u"
    assert len(results[2]) == 5 and len(results[3]) == 30


async def _collect(stream: Any) -> list[Any]:
    return [r async for r in stream]


async def test_stream_deadline(stub: ServiceStub, echo: Echo) -> None:
    stream = stub.ServerStream(EchoRequest(text="hang", count=1), timeout=0.1)
    assert (await stream.recv()).index == 0
    with pytest.raises(StatusError) as info:
        await stream.recv()
    assert info.value.code == Code.DEADLINE_EXCEEDED
    for _ in range(100):  # the server's own deadline (timeout_nano) cancels the handler too
        if echo.cancelled:
            break
        await asyncio.sleep(0.01)
    assert echo.cancelled == ["ServerStream"]


async def test_data_on_a_unary_stream_is_rejected(server: Server, sock_path: str, echo: Echo) -> None:
    peer = await RawPeer.open(sock_path)
    try:
        # A unary method asked for with remote-open, then a Data frame: the server refuses it.
        from arun.api.ttrpc import request_pb2

        req = request_pb2.Request(
            service=ECHO_SERVICE, method="Unary", payload=EchoRequest(text="hang").SerializeToString()
        ).SerializeToString()
        await peer.send(HEADER.pack(len(req), 1, 1, 2) + req)
        await echo.started.wait()
        await peer.send(HEADER.pack(1, 1, 3, 0) + b"x")
        sid, code, _ = await peer.response()
        assert (sid, code) == (1, Code.INVALID_ARGUMENT)
        for _ in range(100):
            if echo.cancelled:
                break
            await asyncio.sleep(0.01)
        assert echo.cancelled == ["hang"]
    finally:
        await peer.close()


# -- graceful shutdown ---------------------------------------------------------------------------


async def test_shutdown_lets_active_requests_finish(sock_path: str, echo: Echo) -> None:
    srv = Server()
    srv.register(ECHO_SERVICE, echo)
    await srv.serve_unix(sock_path)
    busy = await Client.connect(sock_path)
    idle_closed = asyncio.Event()
    idle = await Client.connect(sock_path, on_close=idle_closed.set)
    await idle.call(ECHO_SERVICE, "Unary", b"")
    call = asyncio.create_task(ServiceStub(busy, echo_descriptor).Unary(EchoRequest(text="w", sleep_ms=200)))
    await asyncio.sleep(0.05)
    shutdown = asyncio.create_task(srv.shutdown(grace=5))
    await asyncio.wait_for(idle_closed.wait(), 2)  # idle connections are closed at once
    assert not await _can_connect(sock_path)  # no longer accepting
    assert (await call).text == "w"  # the active one finished
    await asyncio.wait_for(shutdown, 5)
    assert srv.connections == 0
    await busy.close()
    await idle.close()
    await assert_no_tasks_left()


async def _can_connect(path: str) -> bool:
    try:
        c = await Client.connect(path)
    except OSError:
        return False
    await c.close()
    return True


async def test_shutdown_cancels_after_the_grace_period(sock_path: str, echo: Echo) -> None:
    srv = Server()
    srv.register(ECHO_SERVICE, echo)
    await srv.serve_unix(sock_path)
    c = await Client.connect(sock_path)
    call = asyncio.create_task(ServiceStub(c, echo_descriptor).Unary(EchoRequest(text="hang")))
    await echo.started.wait()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await srv.shutdown(grace=0.2)
    assert 0.15 < loop.time() - t0 < 3
    assert echo.cancelled == ["hang"] and echo.finished == ["hang"]
    with pytest.raises(ClosedError):
        await call
    await c.close()
    await assert_no_tasks_left()


# -- peer credentials ----------------------------------------------------------------------------


async def test_peer_check_refuses_without_a_word(sock_path: str, echo: Echo) -> None:
    seen = []

    def check(creds: Any) -> bool:
        seen.append(creds)
        return False

    srv = Server(peer_check=check)
    srv.register(ECHO_SERVICE, echo)
    await srv.serve_unix(sock_path)
    try:
        async with await Client.connect(sock_path) as c:
            with pytest.raises(ClosedError):
                await c.call(ECHO_SERVICE, "Unary", b"")
        assert seen and seen[0].pid == os.getpid() and seen[0].uid == os.geteuid()
        assert not echo.started.is_set()
    finally:
        await srv.close()


async def test_same_user_check_accepts_this_process(sock_path: str, echo: Echo) -> None:
    from arun.ttrpc import require_same_user

    srv = Server(peer_check=require_same_user)
    srv.register(ECHO_SERVICE, echo)
    await srv.serve_unix(sock_path)
    try:
        async with await Client.connect(sock_path) as c:
            assert (await ServiceStub(c, echo_descriptor).Unary(EchoRequest(text="me"))).text == "me"
    finally:
        await srv.close()


@pytest.mark.root
async def test_same_user_check_refuses_another_uid(sock_dir: str, echo: Echo) -> None:
    from arun.ttrpc import require_same_user

    path = os.path.join(sock_dir, "s")
    os.chmod(sock_dir, 0o755)
    srv = Server(peer_check=require_same_user)
    srv.register(ECHO_SERVICE, echo)
    await srv.serve_unix(path, mode=0o777)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become nobody, connect, send a request, report what came back
        code = 1
        try:
            os.close(rfd)
            os.setgid(65534)
            os.setuid(65534)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(path)
            s.sendall(bytes.fromhex("00000000 00000001 01 00"))
            try:
                got = s.recv(100)
            except ConnectionResetError:  # closed with our request unread: a reset, not EOF
                got = b""
            os.write(wfd, b"CLOSED" if got == b"" else b"DATA")
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    try:
        _, status = await asyncio.to_thread(os.waitpid, pid, 0)
        result = os.read(rfd, 10)
    finally:
        os.close(rfd)
        await srv.close()
    assert os.waitstatus_to_exitcode(status) == 0
    assert result == b"CLOSED"  # closed without a reply
    assert not echo.started.is_set()


async def test_serve_socket_and_accept_socket(sock_path: str, echo: Echo) -> None:
    srv = Server()
    srv.register(ECHO_SERVICE, echo)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen()
    await srv.serve_socket(listener)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    await srv.accept_socket(a)
    try:
        async with await Client.connect(sock_path) as c1, await Client.from_socket(b) as c2:
            for c in (c1, c2):
                assert (await ServiceStub(c, echo_descriptor).Unary(EchoRequest(text="s"))).text == "s"
    finally:
        await srv.close()


async def test_register_twice_and_unknown_names() -> None:
    srv = Server()
    srv.register(ECHO_SERVICE, Echo())
    with pytest.raises(ValueError, match="already registered"):
        srv.register(echo_descriptor, Echo())
    with pytest.raises(LookupError):
        srv.register("no.such.Service", Echo())
    assert srv.services == [ECHO_SERVICE]
    await srv.close()


async def test_response_event_for_unknown_stream_is_ignored_by_client(client: Client) -> None:
    # The protocol callback tolerates replies nobody waits for (late replies after a deadline).
    client.data_received(HEADER.pack(2, 99, 2, 0) + b"\x0a\x00")
    assert isinstance(ResponseReceived(99, b""), ResponseReceived)
