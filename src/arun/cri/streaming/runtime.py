"""What the streaming server needs from the container runtime, and the stream types it hands over.

The CRI plugin implements :class:`StreamingRuntime` on top of the tasks service;
tests use :class:`arun.testing.streaming.FakeStreamingRuntime`.

Streams are small async objects, the same whatever the transport (SPDY stream
or WebSocket channel):

* ``stdin`` (:class:`InputStream`): ``await read(n)`` returns up to ``n`` bytes,
  ``b""`` once the client has closed its stdin (or gone away);
* ``stdout``/``stderr`` (:class:`OutputStream`): ``await write(data)`` sends,
  raising ``BrokenPipeError`` once the client is gone; ``await close()`` tells
  the client no more output follows (the server also closes them when the call
  returns, so closing is optional);
* ``resize`` (:class:`ResizeEvents`): an async iterator of terminal sizes, ending
  when the client stops sending them;
* port-forward's ``stream`` (:class:`DuplexStream`): ``read``/``write`` as above,
  and ``close()`` to half-close the direction toward the client.

Cancellation: if the client connection is lost (or idles out) before the call
returns, the server cancels the call. An exec implementation should then kill
the process, as containerd does when its context ends; attach should detach.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import NamedTuple, Protocol, runtime_checkable


class TerminalSize(NamedTuple):
    width: int
    height: int


@runtime_checkable
class InputStream(Protocol):
    async def read(self, n: int = 65536) -> bytes:
        """Up to ``n`` bytes; waits for at least one; ``b""`` at end of input."""
        ...


@runtime_checkable
class OutputStream(Protocol):
    async def write(self, data: bytes) -> None:
        """Send ``data``; raises ``BrokenPipeError`` if the client is gone or the stream closed."""
        ...

    async def close(self) -> None:
        """No more data follows (idempotent)."""
        ...


@runtime_checkable
class DuplexStream(InputStream, OutputStream, Protocol):
    """A port-forward connection's stream: read what the client sends, write what the pod answers."""


ResizeEvents = AsyncIterator[TerminalSize]


@runtime_checkable
class StreamingRuntime(Protocol):
    async def exec(
        self,
        container_id: str,
        cmd: Sequence[str],
        stdin: InputStream | None,
        stdout: OutputStream | None,
        stderr: OutputStream | None,
        tty: bool,
        resize: ResizeEvents | None,
    ) -> int:
        """Run ``cmd`` in the container with the given streams; return its exit code (0..255).

        Raise an errdefs error (e.g. NotFoundError for an unknown container) when
        the command could not run; the client gets it as an internal error status.
        """
        ...

    async def attach(
        self,
        container_id: str,
        stdin: InputStream | None,
        stdout: OutputStream | None,
        stderr: OutputStream | None,
        tty: bool,
        resize: ResizeEvents | None,
    ) -> None:
        """Wire the streams to the container's stdio until the client closes stdin or the container ends."""
        ...

    async def port_forward(self, pod_sandbox_id: str, port: int, stream: DuplexStream) -> None:
        """Copy between ``stream`` and TCP ``port`` on localhost in the pod's network namespace.

        :func:`arun.cri.streaming.netns.port_forward` does the copying once the
        plugin has found the pod's network namespace path.
        """
        ...
