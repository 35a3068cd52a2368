"""containerd 1.6 (Debian) drives arun's shim: ``ctr run --runtime io.containerd.arun.v1``.

A private containerd (own root, state, sockets; CRI disabled) finds ``containerd-shim-arun-v1``
on its PATH — a wrapper that runs ``python -m arun.shim`` from this worktree — and runs a
busybox image imported from an OCI archive built here.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import SRC, pid_alive

pytestmark = [
    pytest.mark.root,
    pytest.mark.runc,
    pytest.mark.integration,
    pytest.mark.ctr,
    pytest.mark.containerd,
]

IMAGE = "docker.io/library/arun-busybox:latest"
RUNTIME = "io.containerd.arun.v1"


def build_image(out: Path) -> None:
    """An OCI image archive whose only layer holds /bin/busybox and a few applet links."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        d = tarfile.TarInfo("bin")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        t.addfile(d)
        t.add("/bin/busybox", "bin/busybox")
        for name in ("sh", "echo", "sleep", "cat"):
            link = tarfile.TarInfo(f"bin/{name}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            t.addfile(link)
    raw = layer.getvalue()
    blobs: dict[str, bytes] = {}

    def add(data: bytes, media: str) -> dict[str, object]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"mediaType": media, "digest": digest, "size": len(data)}

    layer_desc = add(raw, "application/vnd.oci.image.layer.v1.tar")
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]},
    }
    config_desc = add(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer_desc],
    }
    manifest_desc = add(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
    manifest_desc["annotations"] = {
        "io.containerd.image.name": IMAGE,
        "org.opencontainers.image.ref.name": "latest",
    }
    index = json.dumps({"schemaVersion": 2, "manifests": [manifest_desc]}).encode()
    with tarfile.open(out, "w") as t:

        def put(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))

        put("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        put("index.json", index)
        for digest, data in blobs.items():
            put("blobs/sha256/" + digest.split(":")[1], data)


@dataclass
class Containerd:
    root: Path
    namespace: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return str(self.root / "c.sock")

    def ctr(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = ["ctr", "--address", self.address, "--namespace", self.namespace, *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr}")
        return res

    def start(self) -> None:
        env = dict(os.environ, PATH=f"{self.root / 'bin'}:{os.environ.get('PATH', '')}")
        log = open(self.root / "containerd.log", "ab")
        self.proc = subprocess.Popen(
            ["containerd", "--config", str(self.root / "config.toml")],
            stdout=log,
            stderr=log,
            env=env,
            cwd=self.root,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if (
                subprocess.run(["ctr", "--address", self.address, "version"], capture_output=True).returncode
                == 0
            ):
                return
            time.sleep(0.1)
        raise AssertionError(
            "containerd did not come up:\n" + (self.root / "containerd.log").read_text()[-3000:]
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)
            self.proc = None

    def shim_pids(self) -> list[int]:
        pids = []
        for path in (self.root / "state").glob(f"io.containerd.runtime.v2.task/{self.namespace}/*/shim.pid"):
            with contextlib.suppress(ValueError, OSError):
                pids.append(int(path.read_text()))
        return pids


@pytest.fixture
def containerd() -> Iterator[Containerd]:
    root = Path(tempfile.mkdtemp(prefix="ctd-", dir="/tmp"))
    (root / "bin").mkdir()
    wrapper = root / "bin" / "containerd-shim-arun-v1"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"export PYTHONPATH={SRC} ARUN_SHIM_SOCKET_DIR={root / 's'} ARUN_SHIM_RUNC_ROOT={root / 'runc'}\n"
        f'exec {sys.executable} -m arun.shim "$@"\n'
    )
    wrapper.chmod(0o755)
    (root / "config.toml").write_text(
        "version = 2\n"
        f'root = "{root / "root"}"\n'
        f'state = "{root / "state"}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{root / "c.sock"}"\n'
        f'[ttrpc]\n  address = "{root / "c.sock.ttrpc"}"\n'
    )
    build_image(root / "image.tar")
    c = Containerd(root, f"arun-shim-{uuid.uuid4().hex[:8]}")
    try:
        c.start()
        c.ctr("images", "import", str(root / "image.tar"))
        yield c
    finally:
        _cleanup(c)


def _cleanup(c: Containerd) -> None:
    shims = c.shim_pids()
    if c.proc is not None:
        for task in c.ctr("task", "ls", "-q", check=False).stdout.split():
            c.ctr("task", "kill", "-s", "9", task, check=False)
            time.sleep(0.2)
            c.ctr("task", "delete", task, check=False)
        for container in c.ctr("containers", "ls", "-q", check=False).stdout.split():
            c.ctr("containers", "rm", container, check=False)
        c.stop()
    for pid in shims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    runc_root = c.root / "runc" / c.namespace
    if runc_root.is_dir():
        listed = subprocess.run(
            ["runc", "--root", str(runc_root), "list", "-q"], capture_output=True, text=True
        )
        for id in listed.stdout.split():
            subprocess.run(["runc", "--root", str(runc_root), "delete", "--force", id], capture_output=True)
    prefix = str(c.root) + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f if line.split()[4].startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
    for hierarchy in os.listdir("/sys/fs/cgroup"):
        parent = os.path.join("/sys/fs/cgroup", hierarchy, c.namespace)
        if os.path.isdir(parent):
            for child in os.listdir(parent):
                if os.path.isdir(os.path.join(parent, child)):
                    with contextlib.suppress(OSError):
                        os.rmdir(os.path.join(parent, child))
            with contextlib.suppress(OSError):
                os.rmdir(parent)
    shutil.rmtree(c.root, ignore_errors=True)


def run(c: Containerd, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return c.ctr("run", "--runtime", RUNTIME, *args, check=check)


def test_ctr_run_through_arun_shim(containerd: Containerd) -> None:
    c = containerd
    assert run(c, "--rm", IMAGE, "hello", "/bin/echo", "hi").stdout == "hi\n"
    # exit codes propagate
    res = run(c, "--rm", IMAGE, "fails", "/bin/sh", "-c", "exit 42", check=False)
    assert res.returncode == 42, res.stderr
    # a detached task, managed with ctr task …
    run(c, "-d", IMAGE, "d1", "/bin/sleep", "1000")
    ls = c.ctr("task", "ls").stdout
    assert "d1" in ls and "RUNNING" in ls
    ps = c.ctr("task", "ps", "d1").stdout.split()
    assert ps[2].isdigit()
    assert c.ctr("task", "exec", "--exec-id", "e1", "d1", "/bin/echo", "from-exec").stdout == "from-exec\n"
    res = c.ctr("task", "exec", "--exec-id", "e2", "d1", "/bin/sh", "-c", "exit 9", check=False)
    assert res.returncode == 9
    c.ctr("task", "pause", "d1")
    assert "PAUSED" in c.ctr("task", "ls").stdout
    c.ctr("task", "resume", "d1")
    assert "RUNNING" in c.ctr("task", "ls").stdout
    metrics = c.ctr("task", "metrics", "d1").stdout
    assert "memory.usage_in_bytes" in metrics and "pids.current" in metrics
    c.ctr("task", "kill", "-s", "9", "d1")
    deadline = time.monotonic() + 10
    while "STOPPED" not in c.ctr("task", "ls").stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "STOPPED" in c.ctr("task", "ls").stdout
    c.ctr("task", "delete", "d1")
    c.ctr("containers", "rm", "d1")
    # every shim has gone away with its last task
    for pid in c.shim_pids():
        assert not pid_alive(pid)


def test_ctr_run_with_a_terminal(containerd: Containerd) -> None:
    c = containerd
    ctr = f"ctr --address {c.address} --namespace {c.namespace} run -t --rm --runtime {RUNTIME}"
    ctr += f" {IMAGE} tty1 /bin/sh"
    res = subprocess.run(
        ["script", "-qec", ctr, "/dev/null"],
        input="tty; exit 3\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 3, res.stdout + res.stderr
    assert "/dev/pts/" in res.stdout


def test_tasks_survive_a_containerd_restart(containerd: Containerd) -> None:
    c = containerd
    run(c, "-d", IMAGE, "r1", "/bin/sleep", "1000")
    pid = c.ctr("task", "ls").stdout.split()[4]
    assert c.proc is not None
    c.stop(signal.SIGKILL)
    c.start()
    deadline = time.monotonic() + 15
    ls: list[str] = []
    while time.monotonic() < deadline:  # the restarted daemon reconnects its shims as it loads
        ls = c.ctr("task", "ls", check=False).stdout.split()
        if ls[3:6] == ["r1", pid, "RUNNING"]:
            break
        time.sleep(0.2)
    log = (c.root / "containerd.log").read_text()[-4000:]
    assert ls[3:6] == ["r1", pid, "RUNNING"], f"{ls}\n{log}"
    assert c.ctr("task", "exec", "--exec-id", "x", "r1", "/bin/echo", "still-here").stdout == "still-here\n"
    c.ctr("task", "kill", "-s", "9", "r1")
    deadline = time.monotonic() + 10
    while "STOPPED" not in c.ctr("task", "ls").stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    c.ctr("task", "delete", "r1")
