"""A scriptable :class:`~arun.cri.streaming.runtime.StreamingRuntime` for tests of the streaming server.

Commands are interpreted, not run:

=========================  ====================================================================
``echo ARGS...``           ARGS joined by spaces and a newline on stdout; exit 0
``cat``                    stdin copied to stdout until stdin ends; exit 0
``to-stderr TEXT``         TEXT and a newline on stderr; exit 0
``exit N``                 exit code N
``sleep SECONDS``          sleeps (cancellable), exit 0
``resize [N]``             one ``WxH`` line on stdout per resize event, for N events (or all); exit 0
``bulk N``                 N bytes of a repeating pattern on stdout; exit 0
``fail MESSAGE``           raises RuntimeError(MESSAGE)
=========================  ====================================================================

Containers must be registered (:meth:`FakeStreamingRuntime.add_container`);
an unknown one raises ``NotFoundError`` as the real runtime would. ``attach``
behaves like a shell on its stdin: a line ``echo TEXT`` prints TEXT; anything
else is echoed back; it returns when stdin ends (as containerd's attach does
when the client closes stdin). ``port_forward`` serves in-memory services, or
forwards to a real local TCP port registered with :meth:`map_port`.

Every call is recorded in :attr:`FakeStreamingRuntime.calls`, with whether it
finished or was cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from arun import errdefs
from arun.cri.streaming import netns
from arun.cri.streaming.runtime import DuplexStream, InputStream, OutputStream, ResizeEvents, TerminalSize

Service = Callable[[DuplexStream], Awaitable[None]]


@dataclass
class Call:
    kind: str  # "exec", "attach", "port_forward"
    target: str  # container or sandbox id
    cmd: tuple[str, ...] = ()
    tty: bool = False
    port: int = 0
    streams: tuple[bool, bool, bool] = (False, False, False)  # stdin, stdout, stderr given
    resizes: list[TerminalSize] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: bool = False
    result: object = None


async def _write(out: OutputStream | None, data: bytes) -> None:
    if out is not None and data:
        await out.write(data)


async def upper_echo(stream: DuplexStream) -> None:
    """A port-forward service: everything read comes back upper-cased; EOF is returned as EOF."""
    while data := await stream.read():
        await stream.write(data.upper())
    await stream.close()


async def greeter(stream: DuplexStream) -> None:
    """Speaks first (``hello\\n``), then closes without reading: tests pod-side EOF."""
    await stream.write(b"hello\n")
    await stream.close()


class FakeStreamingRuntime:
    def __init__(self) -> None:
        self.containers: set[str] = set()
        self.sandboxes: set[str] = set()
        self.services: dict[tuple[str, int], Service] = {}
        self.ports: dict[tuple[str, int], int] = {}
        self.calls: list[Call] = []
        self._call_added = asyncio.Event()

    # ----- setup
    def add_container(self, container_id: str) -> None:
        self.containers.add(container_id)

    def add_sandbox(self, sandbox_id: str) -> None:
        self.sandboxes.add(sandbox_id)

    def add_service(self, sandbox_id: str, port: int, service: Service) -> None:
        self.sandboxes.add(sandbox_id)
        self.services[(sandbox_id, port)] = service

    def map_port(self, sandbox_id: str, port: int, local_port: int) -> None:
        """Forward ``port`` of the sandbox to a real TCP server on 127.0.0.1:``local_port``."""
        self.sandboxes.add(sandbox_id)
        self.ports[(sandbox_id, port)] = local_port

    # ----- StreamingRuntime
    async def call(self, index: int) -> Call:
        """The ``index``-th call, once it has started."""
        while len(self.calls) <= index:
            self._call_added.clear()
            await self._call_added.wait()
        return self.calls[index]

    async def _recorded(self, call: Call, body: Awaitable[object]) -> object:
        self.calls.append(call)
        self._call_added.set()
        try:
            call.result = await body
            return call.result
        except asyncio.CancelledError:
            call.cancelled = True
            raise
        finally:
            call.done.set()

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
        call = Call(
            "exec",
            container_id,
            tuple(cmd),
            tty,
            streams=(stdin is not None, stdout is not None, stderr is not None),
        )
        result = await self._recorded(call, self._exec(call, stdin, stdout, stderr, resize))
        assert isinstance(result, int)
        return result

    async def _exec(
        self,
        call: Call,
        stdin: InputStream | None,
        stdout: OutputStream | None,
        stderr: OutputStream | None,
        resize: ResizeEvents | None,
    ) -> int:
        if call.target not in self.containers:
            raise errdefs.NotFoundError(f"container {call.target!r} not found")
        if not call.cmd:
            raise errdefs.InvalidArgumentError("empty command")
        name, args = call.cmd[0], call.cmd[1:]
        if name == "echo":
            await _write(stdout, " ".join(args).encode() + b"\n")
            return 0
        if name == "cat":
            if stdin is not None:
                while chunk := await stdin.read():
                    await _write(stdout, chunk)
            return 0
        if name == "to-stderr":
            await _write(stderr, " ".join(args).encode() + b"\n")
            return 0
        if name == "exit":
            return int(args[0])
        if name == "sleep":
            await asyncio.sleep(float(args[0]))
            return 0
        if name == "resize":
            wanted = int(args[0]) if args else -1
            if resize is not None and wanted:
                async for size in resize:
                    call.resizes.append(size)
                    await _write(stdout, f"{size.width}x{size.height}\n".encode())
                    if len(call.resizes) == wanted:
                        break
            return 0
        if name == "bulk":
            total = int(args[0])
            pattern = bytes(range(256)) * 256
            sent = 0
            while sent < total:
                chunk = pattern[: min(len(pattern), total - sent)]
                await _write(stdout, chunk)
                sent += len(chunk)
            return 0
        if name == "fail":
            raise RuntimeError(" ".join(args))
        await _write(stderr, f"{name}: not found\n".encode())
        return 127

    async def attach(
        self,
        container_id: str,
        stdin: InputStream | None,
        stdout: OutputStream | None,
        stderr: OutputStream | None,
        tty: bool,
        resize: ResizeEvents | None,
    ) -> None:
        call = Call(
            "attach",
            container_id,
            tty=tty,
            streams=(stdin is not None, stdout is not None, stderr is not None),
        )
        await self._recorded(call, self._attach(call, stdin, stdout))

    async def _attach(self, call: Call, stdin: InputStream | None, stdout: OutputStream | None) -> None:
        if call.target not in self.containers:
            raise errdefs.NotFoundError(f"container {call.target!r} not found")
        if stdin is None:
            return
        buf = b""
        while chunk := await stdin.read():
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line[5:] if line.startswith(b"echo ") else line
                await _write(stdout, text + b"\n")

    async def port_forward(self, pod_sandbox_id: str, port: int, stream: DuplexStream) -> None:
        call = Call("port_forward", pod_sandbox_id, port=port)
        await self._recorded(call, self._port_forward(pod_sandbox_id, port, stream))

    async def _port_forward(self, sandbox_id: str, port: int, stream: DuplexStream) -> None:
        if sandbox_id not in self.sandboxes:
            raise errdefs.NotFoundError(f"sandbox {sandbox_id!r} not found")
        service = self.services.get((sandbox_id, port))
        if service is not None:
            await service(stream)
            return
        local = self.ports.get((sandbox_id, port))
        if local is None:
            raise ConnectionRefusedError(
                f"failed to connect to localhost:{port} inside namespace {sandbox_id!r}"
            )
        await netns.port_forward(None, local, stream)
