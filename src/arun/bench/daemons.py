"""Private daemons on temporary directories: a containerd 1.6 and an arun, side by side.

``PrivateContainerd.start()`` runs Debian's ``containerd`` with everything of
its own under one directory — root, state, sockets, runc root, CNI conf and
IPAM data, pod network namespaces (``netns_mounts_under_state_dir``), temp
mounts — plus a CNI network with a bridge named for this instance and a
random /24, and (``import_images``) the pause and busybox images built by
``arun.bench.images`` imported into ``k8s.io`` through its containerd API, so
CRI sandboxes start without a registry.

``PrivateArun.start()`` does the same for ``python -m arun daemon`` (with the
arun package this one was imported from).

``stop()`` ends everything the instance started: pods and containers it can
still reach through CRI, then the daemon, leftover shims (found by their
``-address``), runc state, mounts and network namespaces under its
directory, the bridge, the CNI cache entries of its network, and the directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import arun
from arun import errdefs

__all__ = ["DaemonStartError", "PrivateArun", "PrivateContainerd", "free_subnet"]

CONTAINERD = "containerd"
CNI_BIN_DIR = "/usr/lib/cni"
CNI_CACHE = Path("/var/lib/cni/results")
SANDBOX_IMAGE = "registry.k8s.io/pause:3.6"
BUSYBOX_IMAGE = "docker.io/library/busybox:arun"
K8S_NAMESPACE = "k8s.io"
_SRC = Path(arun.__file__).resolve().parent.parent


class DaemonStartError(errdefs.UnavailableError):
    """A private daemon did not come up (its log tail is in the message)."""


def _socket_answers(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(1)
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_subnet() -> ipaddress.IPv4Network:
    """A random 10.x.y.0/24 that no local address or route uses."""
    used: list[ipaddress.IPv4Network] = []
    with contextlib.suppress(OSError):
        with open("/proc/net/route") as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                dest = ipaddress.IPv4Address(bytes.fromhex(parts[1])[::-1])
                mask = ipaddress.IPv4Address(bytes.fromhex(parts[7])[::-1])
                used.append(ipaddress.IPv4Network(f"{dest}/{mask}", strict=False))
    for _ in range(200):
        net = ipaddress.IPv4Network(f"10.{random.randint(100, 250)}.{random.randint(0, 255)}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise errdefs.ResourceExhaustedError("no free 10.x.y.0/24 subnet found")


@dataclass
class _Network:
    name: str
    bridge: str
    subnet: ipaddress.IPv4Network
    conf_dir: Path
    ipam_dir: Path

    def write(self) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        conf = {
            "cniVersion": "1.0.0",
            "name": self.name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(self.ipam_dir),
                        "ranges": [[{"subnet": str(self.subnet)}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                }
            ],
        }
        (self.conf_dir / "10-arun-bench.conflist").write_text(json.dumps(conf, indent=2))

    def remove(self) -> None:
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
        with contextlib.suppress(OSError):
            for f in CNI_CACHE.iterdir():
                if f.name.startswith(self.name + "-"):
                    f.unlink(missing_ok=True)


def _new_network(base: Path) -> _Network:
    tag = os.urandom(4).hex()
    return _Network(
        name=f"arun-bench-{tag}",
        bridge=f"arb{tag}"[:15],
        subnet=free_subnet(),
        conf_dir=base / "cni" / "net.d",
        ipam_dir=base / "cni" / "ipam",
    )


def _shim_pids(address: str) -> list[int]:
    """Shim processes started for the daemon on ``address``: ``... -address <address> ...``.

    Only the single-dash ``-address`` flag of the shim v2 command line counts, so
    a tool that was given ``--address`` (this very process, its parent) never matches.
    """
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        for i, a in enumerate(argv[:-1]):
            if a == b"-address" and argv[i + 1] == address.encode():
                out.append(int(entry))
                break
    return out


def _mounts_under(base: Path) -> list[str]:
    prefix = str(base.resolve()) + "/"
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp.startswith(prefix):
                found.append(mp)
    return found


def _shim_socket(pid: int, address: Path) -> Path | None:
    """The socket a containerd shim v2 process listens on (``shim.SocketAddress`` of 1.6)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0")]
    except OSError:
        return None
    try:
        ns = argv[argv.index("-namespace") + 1]
        sid = argv[argv.index("-id") + 1]
    except (ValueError, IndexError):
        return None
    digest = hashlib.sha256(os.path.join(str(address), ns, sid).encode()).hexdigest()
    return Path("/run/containerd/s") / digest


def _unmount_all(base: Path) -> None:
    for _ in range(3):
        mps = _mounts_under(base)
        if not mps:
            return
        for mp in sorted(mps, key=len, reverse=True):
            subprocess.run(["umount", "-l", mp], capture_output=True, check=False)


def _runc_cleanup(root: Path) -> None:
    if not root.is_dir():
        return
    for state_root in [root, *(p for p in root.iterdir() if p.is_dir())]:
        r = subprocess.run(
            ["runc", "--root", str(state_root), "list", "-q"], capture_output=True, text=True, check=False
        )
        for cid in r.stdout.split():
            subprocess.run(
                ["runc", "--root", str(state_root), "kill", cid, "KILL"], capture_output=True, check=False
            )
            subprocess.run(
                ["runc", "--root", str(state_root), "delete", "--force", cid],
                capture_output=True,
                check=False,
            )


def _spawn(argv: list[str], log_path: Path, env: dict[str, str] | None, cwd: Path) -> subprocess.Popen[bytes]:
    """Start a daemon in its own session, its output appended to ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )


def _runc_cleanup_ours(base: Path, roots: list[Path]) -> None:
    """runc containers under shared roots (``/run/containerd/runc/<ns>``) whose bundle is ours."""
    prefix = str(base.resolve()) + "/"
    for root in roots:
        if not root.is_dir():
            continue
        r = subprocess.run(
            ["runc", "--root", str(root), "list", "--format", "json"],
            capture_output=True,
            text=True,
            check=False,
        )
        try:
            listed = json.loads(r.stdout or "null") or []
        except ValueError:
            continue
        for c in listed:
            if str(c.get("bundle", "")).startswith(prefix):
                cid = str(c["id"])
                subprocess.run(
                    ["runc", "--root", str(root), "kill", cid, "KILL"], capture_output=True, check=False
                )
                subprocess.run(
                    ["runc", "--root", str(root), "delete", "--force", cid], capture_output=True, check=False
                )


def _kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class _Private:
    """What both private daemons share: a directory, a process, sockets, a network."""

    base: Path
    address: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    network: _Network | None
    own_base: bool = True
    images_imported: list[str] = field(default_factory=list)
    kind: str = ""

    @property
    def endpoint(self) -> str:
        return f"unix://{self.address}"

    def logs(self, tail: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-tail:])

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DaemonStartError(
                    f"{self.kind} exited with {self.proc.returncode} before serving:\n{self.logs()}"
                )
            if self.address.exists() and _socket_answers(self.address):
                return
            time.sleep(0.05)
        raise DaemonStartError(
            f"{self.kind} did not serve on {self.address} within {timeout}s:\n{self.logs()}"
        )

    async def import_images(self, namespace: str = K8S_NAMESPACE, sandbox_image: str = SANDBOX_IMAGE) -> None:
        """Import the pause and busybox images into ``namespace`` through the containerd API."""
        from arun.bench.images import busybox_image, pause_image, write_oci_archive
        from arun.client import Client

        archive = self.base / "bench-images.tar"
        await asyncio.to_thread(
            write_oci_archive, archive, [pause_image(sandbox_image), busybox_image(BUSYBOX_IMAGE)]
        )
        async with Client(str(self.address), namespace=namespace) as c:
            made = await c.import_archive(archive)
        self.images_imported = [i.name for i in made]
        archive.unlink(missing_ok=True)

    async def remove_pods(self) -> None:
        """Stop and remove every pod sandbox reachable through CRI (best effort)."""
        from arun.bench.cri import CRI

        try:
            async with CRI(self.endpoint, timeout=30) as cri:
                await cri.remove_everything()
        except errdefs.ArunError:
            pass

    def _stop_process(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def _sweep(self, runc_roots: list[Path]) -> None:
        strays = _shim_pids(str(self.address))
        sockets = [s for s in (_shim_socket(pid, self.address) for pid in strays) if s is not None]
        _kill_pids(strays)
        # Tasks created through the containerd API without a runc root of their own live under
        # the shared default root; only those whose bundle is under this daemon's directory go.
        shared = Path("/run/containerd/runc")
        _runc_cleanup_ours(self.base, [p for p in shared.iterdir() if p.is_dir()] if shared.is_dir() else [])
        for s in sockets:
            with contextlib.suppress(OSError):
                s.unlink()
        for root in runc_roots:
            _runc_cleanup(root)
        _unmount_all(self.base)
        if self.network is not None:
            self.network.remove()
        for sock in (self.address, Path(f"{self.address}.ttrpc")):
            with contextlib.suppress(OSError):
                if sock.is_socket():
                    sock.unlink()
        if self.own_base:
            shutil.rmtree(self.base, ignore_errors=True)


@dataclass
class PrivateContainerd(_Private):
    runc_root: Path = Path()
    sandbox_image: str = SANDBOX_IMAGE

    @classmethod
    async def start(
        cls,
        base: Path | None = None,
        *,
        cri: bool = True,
        sandbox_image: str = SANDBOX_IMAGE,
        import_images: bool = True,
        ready_within: float = 30.0,
        address: Path | None = None,
    ) -> PrivateContainerd:
        if shutil.which(CONTAINERD) is None:
            raise DaemonStartError("containerd is not installed (Debian: apt-get install containerd)")
        own = base is None
        base = base or Path(tempfile.mkdtemp(prefix="arun-ctd-", dir="/tmp"))
        net = _new_network(base) if cri else None
        runc_root = base / "runc"
        sock = address or base / "c.sock"
        sock.parent.mkdir(parents=True, exist_ok=True)
        lines = [
            "version = 2",
            f'root = "{base / "root"}"',
            f'state = "{base / "state"}"',
            f'[grpc]\n  address = "{sock}"',
            f'[ttrpc]\n  address = "{sock}.ttrpc"',
            f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{base / "opt"}"',
            f'[plugins."io.containerd.runtime.v1.linux"]\n  runtime_root = "{base / "runc-v1"}"',
        ]
        if cri:
            assert net is not None
            net.write()
            lines += [
                '[plugins."io.containerd.grpc.v1.cri"]',
                f'  sandbox_image = "{sandbox_image}"',
                "  disable_apparmor = true",
                "  restrict_oom_score_adj = true",
                "  netns_mounts_under_state_dir = true",
                '  stream_server_port = "0"',
                '[plugins."io.containerd.grpc.v1.cri".cni]',
                f'  bin_dir = "{CNI_BIN_DIR}"',
                f'  conf_dir = "{net.conf_dir}"',
                '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]',
                '  runtime_type = "io.containerd.runc.v2"',
                '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]',
                f'  Root = "{runc_root}"',  # the shim adds the namespace
            ]
        else:
            lines.insert(3, 'disabled_plugins = ["io.containerd.grpc.v1.cri"]')
        config = base / "config.toml"
        await asyncio.to_thread(config.write_text, "\n".join(lines) + "\n")
        log_path = base / "containerd.log"
        proc = await asyncio.to_thread(
            _spawn, [CONTAINERD, "--config", str(config), "--log-level", "info"], log_path, None, base
        )
        d = cls(
            base=base,
            address=sock,
            proc=proc,
            log_path=log_path,
            network=net,
            own_base=own,
            kind="containerd",
            runc_root=runc_root,
            sandbox_image=sandbox_image,
        )
        try:
            await asyncio.to_thread(d._wait_ready, ready_within)
            if cri and import_images:
                await d.import_images(K8S_NAMESPACE, sandbox_image)
        except BaseException:
            await d.stop()
            raise
        return d

    async def stop(self) -> int | None:
        """Remove pods, stop containerd, sweep what is left; the daemon's exit status."""
        if self.proc.poll() is None and self.network is not None:
            await self.remove_pods()
        code = await asyncio.to_thread(self._stop_process)
        await asyncio.to_thread(self._sweep, [self.runc_root])
        return code

    def shim_socket(self, namespace: str, id: str) -> Path:
        """Where containerd 1.6 puts the shim socket of ``id`` (``shim.SocketAddress``)."""
        d = hashlib.sha256(os.path.join(str(self.address), namespace, id).encode()).hexdigest()
        return Path("/run/containerd/s") / d


def _arun_cri_config(net: _Network, sandbox_image: str, runc_root: Path) -> str:
    """The CRI section of a private arun: containerd's keys, as for the private containerd.

    Empty while this arun has no configurable CRI plugin (it would refuse the section).
    """
    import importlib.util

    if importlib.util.find_spec("arun.cri.config") is None:
        return ""
    return "\n".join(
        [
            '[plugins."io.containerd.grpc.v1.cri"]',
            f'  sandbox_image = "{sandbox_image}"',
            "  disable_apparmor = true",
            "  restrict_oom_score_adj = true",
            "  netns_mounts_under_state_dir = true",
            '[plugins."io.containerd.grpc.v1.cri".cni]',
            f'  bin_dir = "{CNI_BIN_DIR}"',
            f'  conf_dir = "{net.conf_dir}"',
            '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]',
            f'  Root = "{runc_root}"',  # the shim adds the namespace
            "",
        ]
    )


@dataclass
class PrivateArun(_Private):
    @classmethod
    async def start(
        cls,
        base: Path | None = None,
        *,
        config_text: str = "",
        import_images: bool = True,
        sandbox_image: str = SANDBOX_IMAGE,
        ready_within: float = 60.0,
        address: Path | None = None,
    ) -> PrivateArun:
        """``python -m arun daemon`` on ``base`` (the arun this module belongs to)."""
        own = base is None
        base = base or Path(tempfile.mkdtemp(prefix="arun-bench-", dir="/tmp"))
        net = _new_network(base)
        net.write()
        sock = address or base / "arun.sock"
        sock.parent.mkdir(parents=True, exist_ok=True)
        config = base / "config.toml"
        config.write_text(
            "version = 2\n" + (config_text or _arun_cri_config(net, sandbox_image, base / "runc"))
        )
        log_path = base / "daemon.log"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(_SRC), *filter(None, [env.get("PYTHONPATH", "")])])
        argv = [
            sys.executable, "-m", "arun", "daemon",
            "--root", str(base / "root"), "--state", str(base / "state"),
            "--address", str(sock), "--config", str(config),
        ]  # fmt: skip
        proc = await asyncio.to_thread(_spawn, argv, log_path, env, base)
        d = cls(base=base, address=sock, proc=proc, log_path=log_path, network=net, own_base=own, kind="arun")
        try:
            await asyncio.to_thread(d._wait_ready, ready_within)
            if import_images:
                with contextlib.suppress(errdefs.UnimplementedError):
                    await d.import_images(K8S_NAMESPACE, sandbox_image)
        except BaseException:
            await d.stop()
            raise
        return d

    async def stop(self) -> int | None:
        if self.proc.poll() is None:
            await self.remove_pods()
        code = await asyncio.to_thread(self._stop_process)
        await asyncio.to_thread(self._sweep, [self.base / "runc", self.base / "state"])
        return code


async def serve(kind: str, address: Path | None, base: Path | None) -> int:
    """Run a private daemon in the foreground until SIGINT/SIGTERM, then remove everything."""
    import signal as _signal

    d: PrivateArun | PrivateContainerd
    if kind == "containerd":
        d = await PrivateContainerd.start(base, address=address)
    else:
        d = await PrivateArun.start(base, address=address)
    print(
        f"{kind} serving on {d.endpoint} (root {d.base}); Ctrl-C stops it and removes everything", flush=True
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (_signal.SIGINT, _signal.SIGTERM):
        loop.add_signal_handler(s, stop.set)
    try:
        waiter = asyncio.ensure_future(asyncio.to_thread(d.proc.wait))
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if waiter.done():
            print(f"{kind} exited with {d.proc.returncode}:\n{d.logs()}", file=sys.stderr)
    finally:
        code = await d.stop()
    return 0 if code in (0, None) else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m arun.bench.daemons containerd|arun [--address SOCK] [--base DIR]``."""
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m arun.bench.daemons",
        description="Run a private containerd 1.6 or arun, ready for CRI benchmarks, until Ctrl-C.",
    )
    p.add_argument("kind", choices=["containerd", "arun"])
    p.add_argument("--address", type=Path, default=None, help="socket path (default: under the base dir)")
    p.add_argument(
        "--base", type=Path, default=None, help="directory for everything else (default: a temp dir)"
    )
    args = p.parse_args(argv)
    try:
        return asyncio.run(serve(args.kind, args.address, args.base))
    except errdefs.ArunError as e:
        print(f"arun.bench.daemons: {' '.join(str(e).split())}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
