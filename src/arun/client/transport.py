"""How the client reaches a daemon: gRPC over a socket, or calls into an embedded one.

Everything above this module speaks in terms of method paths
(``/containerd.services.images.v1.Images/List``) and protobuf messages; a
``Transport`` carries them. Two implementations exist:

- ``GrpcTransport``: grpclib over a unix socket (``unix:///run/arun/arun.sock``,
  or a bare path) or TCP (``tcp://host:port``). Works with arun and with
  containerd alike.
- ``arun.embedded.InProcessTransport``: no socket; the request goes straight to
  the handler table of a plugin graph booted in the same event loop.

Both raise the errdefs class of the status code they received (the one mapping
in ``arun.errdefs.grpc``), so callers never see grpclib's exceptions. The
namespace travels in the ``containerd-namespace`` header and a lease in
``containerd-lease``, as containerd's Go client sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import urlparse

from google.protobuf.message import Message

from arun import errdefs, namespaces
from arun.errdefs import grpc as errgrpc

__all__ = [
    "DEFAULT_ADDRESS",
    "LEASE_HEADER",
    "BidiStream",
    "CallOptions",
    "Endpoint",
    "GrpcTransport",
    "Transport",
    "parse_endpoint",
]

DEFAULT_ADDRESS = "/run/arun/arun.sock"
LEASE_HEADER = "containerd-lease"

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class CallOptions:
    """Per-call context: namespace, lease and timeout (seconds)."""

    namespace: str | None = None
    lease: str | None = None
    timeout: float | None = None

    def metadata(self) -> dict[str, str]:
        md: dict[str, str] = {}
        if self.namespace:
            md[namespaces.GRPC_HEADER] = self.namespace
        if self.lease:
            md[LEASE_HEADER] = self.lease
        return md


class BidiStream(Protocol):
    """A bidirectional stream: send requests, receive replies (None at the end)."""

    async def send(self, message: Message, *, end: bool = False) -> None:
        """Send one request (``end``: and half-close, the last one)."""

    async def recv(self) -> Any: ...

    async def end(self) -> None:
        """Half-close: no more requests."""


class Transport(Protocol):
    """What the client needs from a connection to a daemon."""

    async def unary(self, path: str, request: Message, reply_type: type[M], opts: CallOptions) -> M:
        """One request, one reply."""

    def server_stream(
        self, path: str, request: Message, reply_type: type[M], opts: CallOptions
    ) -> contextlib.AbstractAsyncContextManager[AsyncIterator[M]]:
        """One request, replies until the server ends the stream (leaving the block cancels it)."""

    def bidi(
        self, path: str, request_type: type[Message], reply_type: type[Message], opts: CallOptions
    ) -> contextlib.AbstractAsyncContextManager[BidiStream]:
        """A bidirectional stream (content Write)."""

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Endpoint:
    """Where a daemon listens: a unix socket ``path`` or a TCP ``host``/``port``."""

    path: str | None = None
    host: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        return f"unix://{self.path}" if self.path else f"tcp://{self.host}:{self.port}"


def parse_endpoint(address: str) -> Endpoint:
    """``unix:///run/x.sock``, ``/run/x.sock``, ``tcp://127.0.0.1:5000`` or ``host:port``.

    InvalidArgumentError for anything else (an unknown scheme, a relative path
    without a scheme, a port that is not a number).
    """
    text = address.strip()
    if not text:
        raise errdefs.InvalidArgumentError("empty endpoint address")
    if text.startswith("/"):
        return Endpoint(path=text)
    if "://" not in text:
        host, sep, port = text.rpartition(":")
        if sep and host and port.isdigit():
            return Endpoint(host=host, port=int(port))
        raise errdefs.InvalidArgumentError(
            f"endpoint {address!r}: expected unix:///path, an absolute socket path or tcp://host:port"
        )
    u = urlparse(text)
    if u.scheme == "unix":
        path = u.path or u.netloc
        if not path.startswith("/"):
            path = "/" + (u.netloc + u.path).lstrip("/") if u.netloc else path
        if not path or path == "/":
            raise errdefs.InvalidArgumentError(f"endpoint {address!r}: no socket path")
        return Endpoint(path=path)
    if u.scheme in ("tcp", "http", "grpc"):
        if not u.hostname or u.port is None:
            raise errdefs.InvalidArgumentError(f"endpoint {address!r}: expected tcp://host:port")
        return Endpoint(host=u.hostname, port=u.port)
    raise errdefs.InvalidArgumentError(f"endpoint {address!r}: unsupported scheme {u.scheme!r}")


def native_error(exc: BaseException, where: str = "") -> errdefs.ArunError:
    """The errdefs error for a grpclib failure (status, reset stream, refused connection)."""
    from grpclib.exceptions import GRPCError, StreamTerminatedError

    prefix = f"{where}: " if where else ""
    if isinstance(exc, errdefs.ArunError):
        return exc
    if isinstance(exc, GRPCError):
        # The daemon's message says what failed; the method name would only add noise.
        return errgrpc.from_code(int(exc.status.value), exc.message or f"{prefix}{exc.status.name.lower()}")
    if isinstance(exc, StreamTerminatedError):
        return errdefs.UnavailableError(f"{prefix}connection closed: {exc}")
    if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
        return errdefs.UnavailableError(f"{prefix}daemon not reachable: {exc.strerror or exc}")
    if isinstance(exc, PermissionError):
        return errdefs.PermissionDeniedError(f"{prefix}{exc.strerror or exc}")
    if isinstance(exc, ConnectionError | OSError):
        return errdefs.UnavailableError(f"{prefix}{exc}")
    if isinstance(exc, TimeoutError):
        return errdefs.DeadlineExceededError(f"{prefix}deadline exceeded")
    return errdefs.UnknownError(f"{prefix}{type(exc).__name__}: {exc}")


@contextlib.contextmanager
def _converted(where: str) -> Iterator[None]:
    """Re-raise grpclib and socket errors as errdefs errors."""
    try:
        yield
    except errdefs.ArunError:
        raise
    except (GeneratorExit, asyncio.CancelledError):
        raise
    except Exception as e:
        raise native_error(e, where) from e


class _GrpcBidi:
    def __init__(self, stream: Any, path: str) -> None:
        self._stream = stream
        self._path = path

    async def send(self, message: Message, *, end: bool = False) -> None:
        try:
            await self._stream.send_message(message, end=end)
        except Exception as e:
            raise native_error(e, self._path) from e

    async def recv(self) -> Any:
        try:
            msg = await self._stream.recv_message()
            if msg is None:
                # The end of the replies: an error status arrives in the trailers.
                await self._stream.recv_trailing_metadata()
            return msg
        except Exception as e:
            raise native_error(e, self._path) from e

    async def end(self) -> None:
        try:
            await self._stream.end()
        except Exception as e:
            raise native_error(e, self._path) from e


class GrpcTransport:
    """grpclib over a unix socket or TCP; one HTTP/2 connection, opened on first use."""

    def __init__(self, address: str = DEFAULT_ADDRESS) -> None:
        self.endpoint = parse_endpoint(address)
        self._channel: Any = None

    def _chan(self) -> Any:
        if self._channel is None:
            from grpclib.client import Channel

            if self.endpoint.path:
                if not os.path.exists(self.endpoint.path):
                    raise errdefs.UnavailableError(
                        f"daemon not reachable: no socket at {self.endpoint.path!r}"
                    )
                self._channel = Channel(path=self.endpoint.path)
            else:
                self._channel = Channel(self.endpoint.host, self.endpoint.port)
        return self._channel

    def _request(self, path: str, kind: Any, req_t: Any, rep_t: Any, opts: CallOptions) -> Any:
        return self._chan().request(path, kind, req_t, rep_t, timeout=opts.timeout, metadata=opts.metadata())

    async def unary(self, path: str, request: Message, reply_type: type[M], opts: CallOptions) -> M:
        from grpclib.const import Cardinality

        with _converted(_method(path)):
            async with self._request(path, Cardinality.UNARY_UNARY, type(request), reply_type, opts) as s:
                await s.send_message(request, end=True)
                reply = await s.recv_message()
                await s.recv_trailing_metadata()
        if reply is None:
            raise errdefs.UnknownError(f"{_method(path)}: no reply")
        result: M = reply
        return result

    @contextlib.asynccontextmanager
    async def server_stream(
        self, path: str, request: Message, reply_type: type[M], opts: CallOptions
    ) -> AsyncIterator[AsyncIterator[M]]:
        from grpclib.const import Cardinality

        name = _method(path)
        with _converted(name):
            async with self._request(path, Cardinality.UNARY_STREAM, type(request), reply_type, opts) as s:
                await s.send_message(request, end=True)
                state = {"done": False}

                async def messages() -> AsyncIterator[M]:
                    with _converted(name):
                        while True:
                            msg = await s.recv_message()
                            if msg is None:
                                await s.recv_trailing_metadata()
                                state["done"] = True
                                return
                            yield msg

                it = messages()
                try:
                    yield it
                finally:
                    await it.aclose()  # type: ignore[attr-defined]
                    if not state["done"]:
                        with contextlib.suppress(Exception):
                            await s.cancel()

    @contextlib.asynccontextmanager
    async def bidi(
        self, path: str, request_type: type[Message], reply_type: type[Message], opts: CallOptions
    ) -> AsyncIterator[BidiStream]:
        from grpclib.const import Cardinality

        name = _method(path)
        with _converted(name):
            async with self._request(path, Cardinality.STREAM_STREAM, request_type, reply_type, opts) as s:
                await s.send_request()
                try:
                    yield _GrpcBidi(s, name)
                finally:
                    with contextlib.suppress(Exception):
                        await s.cancel()

    async def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None


def _method(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def merge_labels(*maps: Mapping[str, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for m in maps:
        if m:
            out.update(m)
    return out
