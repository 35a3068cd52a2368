"""A private OCI registry for the pull scenario: Debian's ``docker-registry`` on 127.0.0.1.

``LocalRegistry.start()`` runs it on a free port with storage in a temporary
directory; ``push_busybox()`` uploads the built-in busybox image with plain
distribution-API calls (monolithic blob uploads, then the manifest) and
returns its reference. Runtimes pull from ``127.0.0.1:<port>`` over plain
HTTP, which containerd (and arun) do by default for loopback registries.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from arun import errdefs
from arun.bench.images import BuiltImage, busybox_image

__all__ = ["LocalRegistry"]

BINARY = "docker-registry"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as f:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )


def _wait(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise errdefs.UnavailableError(f"docker-registry exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise errdefs.UnavailableError("docker-registry did not start listening")


@dataclass
class LocalRegistry:
    base: Path
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @classmethod
    async def start(cls) -> LocalRegistry:
        if shutil.which(BINARY) is None:
            raise errdefs.NotFoundError(
                "docker-registry is not installed (Debian: apt-get install docker-registry)"
            )
        base = Path(tempfile.mkdtemp(prefix="arun-registry-"))
        port = _free_port()
        config = base / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n"
            f"storage:\n  filesystem:\n    rootdirectory: {base / 'data'}\n"
            f"http:\n  addr: 127.0.0.1:{port}\n"
        )
        proc = await asyncio.to_thread(_spawn, [BINARY, "serve", str(config)], base / "registry.log")
        reg = cls(base, port, proc)
        try:
            await asyncio.to_thread(_wait, port, proc, time.monotonic() + 20)
        except BaseException:
            await reg.stop()
            raise
        return reg

    async def push(self, image: BuiltImage, repository: str, tag: str) -> str:
        """Upload ``image`` as ``<host>/<repository>:<tag>``; the reference."""
        import aiohttp

        base = f"http://{self.host}/v2/{repository}"
        layers = []
        diff_ids = []
        blobs: list[tuple[str, bytes]] = []
        for tar in image.layers:
            buf = io.BytesIO()
            with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as g:
                g.write(tar)
            data = buf.getvalue()
            dg = "sha256:" + hashlib.sha256(data).hexdigest()
            blobs.append((dg, data))
            diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
            layers.append(
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": dg, "size": len(data)}
            )
        config = json.loads(json.dumps(image.config))
        config["rootfs"]["diff_ids"] = diff_ids
        cdata = json.dumps(config, sort_keys=True).encode()
        cdg = "sha256:" + hashlib.sha256(cdata).hexdigest()
        blobs.append((cdg, cdata))
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": cdg,
                    "size": len(cdata),
                },
                "layers": layers,
            }
        ).encode()
        async with aiohttp.ClientSession() as s:
            for dg, data in blobs:
                async with s.post(f"{base}/blobs/uploads/") as r:
                    if r.status != 202:
                        raise errdefs.UnavailableError(f"registry: start upload: HTTP {r.status}")
                    location = r.headers["Location"]
                if location.startswith("/"):
                    location = f"http://{self.host}{location}"
                sep = "&" if "?" in location else "?"
                async with s.put(
                    f"{location}{sep}digest={dg}",
                    data=data,
                    headers={"Content-Type": "application/octet-stream"},
                ) as r:
                    if r.status != 201:
                        raise errdefs.UnavailableError(f"registry: upload {dg}: HTTP {r.status}")
            async with s.put(
                f"{base}/manifests/{tag}",
                data=manifest,
                headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
            ) as r:
                if r.status != 201:
                    raise errdefs.UnavailableError(
                        f"registry: put manifest: HTTP {r.status} {await r.text()}"
                    )
        return f"{self.host}/{repository}:{tag}"

    async def push_busybox(self) -> str:
        return await self.push(busybox_image(), "arun-bench/busybox", "latest")

    async def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)
        await asyncio.to_thread(shutil.rmtree, self.base, True)
