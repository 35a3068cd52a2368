"""Small images built here, so benchmarks and tests never need a registry on the internet.

- ``busybox_image``: one layer with the host's static ``/bin/busybox`` and the
  applet links a shell session needs; ``Cmd ["sh"]``.
- ``pause_image``: the pod sandbox image. Its ``/pause`` is compiled from a few
  lines of C with the host's ``gcc -static`` when that works (sleeps in
  ``pause()``, exits on SIGINT/SIGTERM, reaps children — what Kubernetes' pause
  does); otherwise it is busybox running a shell that traps those signals.

``write_oci_archive`` writes images as an OCI image layout tar that
``ctr images import`` and ``arun.Client.import_archive`` read.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arun import errdefs

__all__ = [
    "BUSYBOX",
    "BuiltImage",
    "busybox_image",
    "pause_image",
    "write_oci_archive",
]

BUSYBOX = Path("/bin/busybox")
MTIME = 1_700_000_000
APPLETS = (
    "sh", "ls", "cat", "echo", "sleep", "true", "false", "env", "id", "ps", "hostname", "mount",
    "mkdir", "rm", "touch", "wc", "head", "tail", "grep", "printf", "kill", "ip", "ifconfig", "test",
    "uname", "whoami", "pwd", "readlink", "stat", "date", "seq", "tr", "yes", "dd",
)  # fmt: skip

PAUSE_C = r"""
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
    struct sigaction s = {0};
    s.sa_handler = stop;
    sigaction(SIGINT, &s, NULL);
    sigaction(SIGTERM, &s, NULL);
    s.sa_handler = reap;
    s.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &s, NULL);
    for (;;) pause();
    return 1;
}
"""


@dataclass
class _Entry:
    path: str
    kind: str = "file"  # file, dir, symlink
    data: bytes = b""
    mode: int = 0o644


@dataclass
class BuiltImage:
    """An image ready to be written: its name, config document and (uncompressed) layer tars."""

    name: str
    config: dict[str, Any]
    layers: list[bytes] = field(default_factory=list)


def _tar(entries: Sequence[_Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            info = tarfile.TarInfo(e.path)
            info.mtime = MTIME
            info.mode = e.mode
            if e.kind == "dir":
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            elif e.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = e.data.decode()
                tf.addfile(info)
            else:
                info.size = len(e.data)
                tf.addfile(info, io.BytesIO(e.data))
    return buf.getvalue()


def _goarch() -> str:
    m = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(m, m)


def _config(entrypoint: Sequence[str], cmd: Sequence[str], env: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "architecture": _goarch(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", *env],
            "Entrypoint": list(entrypoint) or None,
            "Cmd": list(cmd) or None,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [{"created_by": "arun.bench.images", "created": "2023-11-14T22:13:20Z"}],
    }


def _busybox_entries() -> list[_Entry]:
    if not BUSYBOX.exists():
        raise errdefs.NotFoundError(f"{BUSYBOX} is needed to build the test images (Debian: busybox-static)")
    entries = [
        _Entry("bin", "dir", mode=0o755),
        _Entry("bin/busybox", "file", BUSYBOX.read_bytes(), 0o755),
        *(_Entry(f"bin/{a}", "symlink", b"busybox") for a in APPLETS),
        _Entry("etc", "dir", mode=0o755),
        _Entry(
            "etc/passwd", "file", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
        ),
        _Entry("etc/group", "file", b"root:x:0:\nnogroup:x:65534:\n"),
        _Entry("root", "dir", mode=0o700),
        _Entry("tmp", "dir", mode=0o1777),
    ]
    return entries


def busybox_image(name: str = "docker.io/library/busybox:arun") -> BuiltImage:
    return BuiltImage(name, _config([], ["sh"]), [_tar(_busybox_entries())])


def _compile_pause() -> bytes | None:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "arun"
    digest = hashlib.sha256(PAUSE_C.encode()).hexdigest()[:16]
    cached = cache / f"pause-{digest}"
    if cached.exists():
        return cached.read_bytes()
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        return None
    with tempfile.TemporaryDirectory(prefix="arun-pause-") as d:
        src = Path(d) / "pause.c"
        src.write_text(PAUSE_C)
        out = Path(d) / "pause"
        r = subprocess.run(
            [gcc, "-Os", "-static", "-s", "-o", str(out), str(src)],
            capture_output=True,
            check=False,
            timeout=120,
        )
        if r.returncode != 0 or not out.exists():
            return None
        data = out.read_bytes()
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(cached)
    except OSError:
        pass
    return data


def pause_image(name: str = "registry.k8s.io/pause:3.6") -> BuiltImage:
    """The sandbox image, named as the runtime expects it (containerd 1.6 defaults to pause:3.6)."""
    binary = _compile_pause()
    if binary is not None:
        layer = _tar([_Entry("pause", "file", binary, 0o755)])
        return BuiltImage(name, _config(["/pause"], []), [layer])
    script = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"
    return BuiltImage(name, _config(["/bin/sh", "-c", script], []), [_tar(_busybox_entries())])


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def write_oci_archive(
    path: str | Path, images: Sequence[BuiltImage], *, annotations: Mapping[str, str] | None = None
) -> Path:
    """Write ``images`` into one OCI layout tar at ``path`` (gzip layers, deterministic bytes)."""
    blobs: dict[str, bytes] = {}
    index: list[dict[str, Any]] = []
    for img in images:
        layer_descs = []
        diff_ids = []
        for tar in img.layers:
            gz = io.BytesIO()
            with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0) as g:
                g.write(tar)
            dg, data = _blob(gz.getvalue())
            blobs[dg] = data
            diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
            layer_descs.append(
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": dg, "size": len(data)}
            )
        config = json.loads(json.dumps(img.config))
        config["rootfs"]["diff_ids"] = diff_ids
        cdg, cdata = _blob(json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
        blobs[cdg] = cdata
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": cdg,
                "size": len(cdata),
            },
            "layers": layer_descs,
        }
        mdg, mdata = _blob(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode())
        blobs[mdg] = mdata
        tag = img.name.rpartition(":")[2] if ":" in img.name.rsplit("/", 1)[-1] else "latest"
        index.append(
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": mdg,
                "size": len(mdata),
                "annotations": {
                    "io.containerd.image.name": img.name,
                    "org.opencontainers.image.ref.name": tag,
                    **dict(annotations or {}),
                },
                "platform": {"architecture": config["architecture"], "os": "linux"},
            }
        )
    files = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps({"schemaVersion": 2, "manifests": index}, separators=(",", ":")).encode(),
    }
    for dg, data in blobs.items():
        files["blobs/sha256/" + dg.split(":", 1)[1]] = data
    out = Path(path)
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for dirname in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(dirname)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, MTIME
            tf.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, MTIME
            tf.addfile(info, io.BytesIO(data))
    tmp.replace(out)
    return out
