"""The client's transport without a socket: requests go straight to the gRPC handler table.

Each call runs the handler — wrapped by the server middleware exactly as the
daemon's gRPC server runs it (namespace and lease from the metadata, request
id, deadline, logging, the one error mapping) — in a task of its own, so the
context it sets never leaks into the caller's. Messages cross as protobuf
objects; nothing is serialised.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, TypeVar

from google.protobuf.message import Message

from arun import errdefs
from arun.client.transport import BidiStream, CallOptions, native_error

__all__ = ["InProcessTransport"]

M = TypeVar("M", bound=Message)
_END = object()


class _Deadline:
    def __init__(self, timeout: float) -> None:
        self._at = time.monotonic() + timeout

    def time_remaining(self) -> float:
        return max(0.0, self._at - time.monotonic())


class _ServerStream:
    """What a grpclib handler sees of its stream: metadata, deadline, recv/send."""

    def __init__(self, metadata: Mapping[str, str], timeout: float | None) -> None:
        self.metadata = dict(metadata)
        self.deadline = _Deadline(timeout) if timeout is not None else None
        self.peer = None
        self.user_agent = "arun-embedded"
        self.requests: asyncio.Queue[Any] = asyncio.Queue()
        self.replies: asyncio.Queue[Any] = asyncio.Queue()
        self.initial_metadata_sent = asyncio.Event()

    async def recv_message(self) -> Any:
        msg = await self.requests.get()
        return None if msg is _END else msg

    async def send_message(self, message: Any, **_: Any) -> None:
        self.initial_metadata_sent.set()
        await self.replies.put(message)

    async def send_initial_metadata(self, **_: Any) -> None:
        self.initial_metadata_sent.set()

    async def send_trailing_metadata(self, **_: Any) -> None:
        return None

    async def cancel(self) -> None:
        return None


class _Bidi:
    def __init__(self, stream: _ServerStream, task: asyncio.Task[None], path: str) -> None:
        self._s = stream
        self._task = task
        self._path = path

    async def send(self, message: Message, *, end: bool = False) -> None:
        if self._task.done():
            _raise_from(self._task, self._path)
        await self._s.requests.put(message)
        if end:
            await self._s.requests.put(_END)

    async def recv(self) -> Any:
        return await _next_reply(self._s, self._task, self._path)

    async def end(self) -> None:
        await self._s.requests.put(_END)


def _raise_from(task: asyncio.Task[None], path: str) -> None:
    exc = task.exception()
    if exc is not None:
        raise native_error(exc, path.rsplit("/", 1)[-1]) from exc


async def _next_reply(s: _ServerStream, task: asyncio.Task[None], path: str) -> Any:
    """The next reply, or None once the handler returned; the handler's error as errdefs."""
    if not s.replies.empty():
        return s.replies.get_nowait()
    getter = asyncio.ensure_future(s.replies.get())
    try:
        done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        getter.cancel()
        raise
    if getter in done:
        return getter.result()
    getter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await getter
    if not s.replies.empty():
        return s.replies.get_nowait()
    if task.cancelled():
        raise errdefs.CanceledError(f"{path}: cancelled")
    _raise_from(task, path)
    return None


class InProcessTransport:
    """A ``Transport`` over a route table (``{path: grpclib Handler}``, middleware-wrapped)."""

    def __init__(self, routes: Mapping[str, Any] | None = None) -> None:
        self.routes = routes
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    def _start(self, path: str, opts: CallOptions) -> tuple[_ServerStream, asyncio.Task[None]]:
        if self.routes is None or self.closed:
            raise errdefs.UnavailableError("the embedded runtime is not running")
        handler = self.routes.get(path)
        if handler is None:
            raise errdefs.UnimplementedError(f"unknown method {path}")
        stream = _ServerStream(opts.metadata(), opts.timeout)
        # A task of its own: the handler sets contextvars (namespace, request id) for the request.
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(handler.func(stream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return stream, task

    async def unary(self, path: str, request: Message, reply_type: type[M], opts: CallOptions) -> M:
        stream, task = self._start(path, opts)
        await stream.requests.put(request)
        await stream.requests.put(_END)
        method = path.rsplit("/", 1)[-1]
        try:
            # grpclib's server cancels a handler at its deadline; so does this transport.
            async with asyncio.timeout(opts.timeout):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise errdefs.DeadlineExceededError(f"{method}: deadline exceeded") from None
        except asyncio.CancelledError:
            if not task.done():
                task.cancel()
                raise
            if task.cancelled():
                raise errdefs.CanceledError(f"{path}: cancelled") from None
        except Exception as e:
            raise native_error(e, method) from e
        if stream.replies.empty():
            raise errdefs.UnknownError(f"{path}: no reply")
        reply: M = stream.replies.get_nowait()
        return reply

    @contextlib.asynccontextmanager
    async def server_stream(
        self, path: str, request: Message, reply_type: type[M], opts: CallOptions
    ) -> AsyncIterator[AsyncIterator[M]]:
        stream, task = self._start(path, opts)
        await stream.requests.put(request)
        await stream.requests.put(_END)

        async def messages() -> AsyncIterator[M]:
            while True:
                msg = await _next_reply(stream, task, path)
                if msg is None:
                    return
                yield msg

        it = messages()
        try:
            # Like a network client, wait for the handler to accept (headers) or end first.
            waiter = asyncio.ensure_future(stream.initial_metadata_sent.wait())
            await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            yield it
        finally:
            await it.aclose()  # type: ignore[attr-defined]
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    @contextlib.asynccontextmanager
    async def bidi(
        self, path: str, request_type: type[Message], reply_type: type[Message], opts: CallOptions
    ) -> AsyncIterator[BidiStream]:
        stream, task = self._start(path, opts)
        try:
            yield _Bidi(stream, task, path)
        finally:
            if not task.done():
                await stream.requests.put(_END)
                try:
                    async with asyncio.timeout(5):
                        await asyncio.shield(task)
                except (TimeoutError, Exception):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def close(self) -> None:
        """Cancel every request still running (the runtime is going away)."""
        self.closed = True
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
