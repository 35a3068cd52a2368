"""A stand-in for the API server and kubelet, so that a real ``kubectl`` can drive a streaming server.

``kubectl exec``/``attach``/``port-forward`` are client-go's remotecommand and
port-forward clients. Pointed at this proxy (``kubectl --server http://...``),
they read the pod from a one-pod API, then send the streaming request to the
pod's ``exec``/``attach``/``portforward`` subresource. The proxy does what
kubelet does with such a request: it builds the CRI request from the query
(``command``, ``container``, ``stdin``/``stdout``/``stderr``/``tty``,
``ports``), asks the streaming server for a URL (``get_exec`` …), and then
relays the connection, upgrade and all, byte for byte, to that URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from arun.api.cri.runtime.v1 import api_pb2

POD_TEMPLATE = {
    "kind": "Pod",
    "apiVersion": "v1",
    "metadata": {"name": "", "namespace": "default", "uid": "00000000-0000-0000-0000-000000000001"},
    "spec": {"containers": [{"name": "", "image": "busybox"}]},
    "status": {"phase": "Running"},
}

_DISCOVERY = {
    "/version": {"major": "1", "minor": "32", "gitVersion": "v1.32.0", "platform": "linux/amd64"},
    "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
    "/api/v1": {
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            {
                "name": "pods",
                "singularName": "pod",
                "namespaced": True,
                "kind": "Pod",
                "verbs": ["get", "list"],
                "shortNames": ["po"],
            },
            *(
                {"name": f"pods/{sub}", "namespaced": True, "kind": kind, "verbs": ["create", "get"]}
                for sub, kind in (
                    ("exec", "PodExecOptions"),
                    ("attach", "PodAttachOptions"),
                    ("portforward", "PodPortForwardOptions"),
                )
            ),
        ],
    },
}  # fmt: skip


class StreamingServerLike:
    """What the proxy needs: the ``get_*`` methods of :class:`~arun.cri.streaming.StreamingServer`."""

    get_exec: Callable[[api_pb2.ExecRequest], api_pb2.ExecResponse]
    get_attach: Callable[[api_pb2.AttachRequest], api_pb2.AttachResponse]
    get_port_forward: Callable[[api_pb2.PortForwardRequest], api_pb2.PortForwardResponse]


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return query.get(name, ["false"])[-1].lower() in ("1", "true")


class KubeProxy:
    """One pod (``pod``, container ``container``, sandbox ``sandbox``) served over plain HTTP on loopback."""

    def __init__(
        self, streaming: object, *, pod: str = "pod", container: str = "ctr", sandbox: str = "pod"
    ) -> None:
        self._streaming = streaming
        self.pod = pod
        self.container = container
        self.sandbox = sandbox
        self.requests: list[str] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def __aenter__(self) -> KubeProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _pod(self) -> dict[str, object]:
        pod = json.loads(json.dumps(POD_TEMPLATE))
        pod["metadata"]["name"] = self.pod
        pod["spec"]["containers"][0]["name"] = self.container
        return dict(pod)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, v in (h.split(":", 1) for h in header_lines if ":" in h)
                }
                length = int(headers.get("content-length", "0") or 0)
                body = await reader.readexactly(length) if length else b""
                del body
                self.requests.append(f"{method} {target}")
                parts = urlsplit(target)
                streaming_url = self._streaming_url(parts.path, parse_qs(parts.query))
                if streaming_url is not None:
                    await self._relay(reader, writer, head, target, streaming_url)
                    return
                await self._answer(writer, parts.path)
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _answer(self, writer: asyncio.StreamWriter, path: str) -> None:
        prefix = f"/api/v1/namespaces/default/pods/{self.pod}"
        if path in _DISCOVERY:
            code, doc = 200, _DISCOVERY[path]
        elif path == prefix:
            code, doc = 200, self._pod()
        else:
            code, doc = (
                404,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "reason": "NotFound",
                    "code": 404,
                },
            )
        body = json.dumps(doc).encode()
        reason = "OK" if code == 200 else "Not Found"
        head = f"HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\n"
        head += f"Content-Length: {len(body)}\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()

    def _streaming_url(self, path: str, query: dict[str, list[str]]) -> str | None:
        prefix = f"/api/v1/namespaces/default/pods/{self.pod}/"
        if not path.startswith(prefix):
            return None
        sub = path[len(prefix) :]
        server = self._streaming
        if sub == "exec":
            exec_req = api_pb2.ExecRequest(
                container_id=query.get("container", [self.container])[-1],
                cmd=query.get("command", []),
                stdin=_flag(query, "stdin"),
                stdout=_flag(query, "stdout"),
                stderr=_flag(query, "stderr"),
                tty=_flag(query, "tty"),
            )
            return str(server.get_exec(exec_req).url)  # type: ignore[attr-defined]
        if sub == "attach":
            attach_req = api_pb2.AttachRequest(
                container_id=query.get("container", [self.container])[-1],
                stdin=_flag(query, "stdin"),
                stdout=_flag(query, "stdout"),
                stderr=_flag(query, "stderr"),
                tty=_flag(query, "tty"),
            )
            return str(server.get_attach(attach_req).url)  # type: ignore[attr-defined]
        if sub == "portforward":
            ports = [int(p) for value in query.get("ports", []) for p in value.split(",") if p]
            pf_req = api_pb2.PortForwardRequest(pod_sandbox_id=self.sandbox, port=ports)
            return str(server.get_port_forward(pf_req).url)  # type: ignore[attr-defined]
        return None

    async def _relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: bytes,
        target: str,
        streaming_url: str,
    ) -> None:
        dest = urlsplit(streaming_url)
        up_reader, up_writer = await asyncio.open_connection(dest.hostname, dest.port)
        new_head = head.replace(target.encode("latin-1"), dest.path.encode("latin-1"), 1)
        up_writer.write(new_head)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                with contextlib.suppress(OSError, RuntimeError):
                    if dst.can_write_eof():
                        dst.write_eof()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            up_writer.close()
