"""A CRI test environment: a loopback registry with test images, a private CNI network, and a
real ``arun daemon`` with the CRI plugin configured for them; plus a small CRI client.

::

    env = CRIEnv.start()                 # registry + images + CNI conf + daemon
    async with env.client() as cri:      # grpclib stubs (RuntimeService, ImageService)
        pod = await cri.run_pod("web")
        cid = await cri.create(pod, "c", env.image("busybox"), ["sleep", "100"])
        await cri.start(cid)
    env.stop()                           # removes pods left over, stops everything, cleans up

Images are built in Python from the host's static busybox (``/bin/busybox``) with
every applet linked in ``/bin``, ``/etc/passwd`` and ``/etc/group`` with test users;
``pause`` is busybox ``sleep`` as user 65535. The CNI network is a bridge with a
unique name and a random /24, host-local IPAM, and portmap (plus the loopback
network the CRI plugin adds). Nothing here is used by the daemon itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arun.api.cri.runtime.v1 import api_grpc, api_pb2
from arun.testing import images as im
from arun.testing.daemon import Daemon
from arun.testing.registry import RegistryServer, start_registry

CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
# A runtime handler of every test daemon that runs containerd's Go shim (containerd-shim-runc-v2).
GO_SHIM_HANDLER = "runc-go"

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
tester:x:1000:1000:tester:/home/tester:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""

GROUP = """root:x:0:
daemon:x:1:
www-data:x:33:
tester:x:1000:
staff:x:50:tester
audio:x:29:tester,www-data
nogroup:x:65534:
"""


def cni_bin_dir() -> str:
    for d in CNI_BIN_DIRS:
        if os.path.exists(os.path.join(d, "bridge")):
            return d
    return CNI_BIN_DIRS[0]


def have_cni() -> bool:
    d = cni_bin_dir()
    return all(
        os.access(os.path.join(d, p), os.X_OK) for p in ("bridge", "host-local", "loopback", "portmap")
    )


def busybox_rootfs_layer() -> im.Layer:
    applets = sorted(
        a
        for a in subprocess.run(
            ["/bin/busybox", "--list"], capture_output=True, text=True, check=True
        ).stdout.split()
        if a and "/" not in a and a not in ("busybox", "[", "[[")
    )
    layer = im.busybox_layer("gzip", applets=applets)
    layer.entries = [e for e in layer.entries if e.path not in ("etc/passwd",)]
    layer.entries += [
        im.file("etc/passwd", PASSWD),
        im.file("etc/group", GROUP),
        im.dir_("home"),
        im.dir_("home/tester", 0o755, uid=1000, gid=1000),
        im.dir_("var"),
        im.dir_("var/www"),
        im.dir_("root", 0o700),
    ]
    return layer


def build_images() -> dict[str, im.BuiltImage]:
    base = busybox_rootfs_layer()
    env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    return {
        "busybox": im.build_image([base], config={"Cmd": ["/bin/sh"], "Env": env}),
        "pause": im.build_image(
            [base],
            config={"Entrypoint": ["/bin/sleep", "2147483647"], "Env": env, "User": "65535:65535"},
        ),
        "user-uid": im.build_image([base], config={"Cmd": ["/bin/sh"], "Env": env, "User": "1000"}),
        "user-name": im.build_image([base], config={"Cmd": ["/bin/sh"], "Env": env, "User": "www-data"}),
        "volume": im.build_image(
            [base], config={"Cmd": ["/bin/sh"], "Env": env, "Volumes": {"/data": {}}, "WorkingDir": "/tmp"}
        ),
    }


def cni_conflist(name: str, bridge: str, subnet: str) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }


def _random_subnet() -> tuple[str, str]:
    a, b = random.randint(160, 250), random.randint(1, 254)
    return f"10.{a}.{b}.0/24", f"10.{a}.{b}.1"


def config_text(
    *,
    sandbox_image: str,
    cni_conf_dir: str,
    certs_dir: str,
    runtime_type: str = "",
    runc_root: str = "",
    extra: str = "",
    uvloop: bool = True,
) -> str:
    """A version 2 config for the CRI plugin of a test daemon."""
    rt = ""
    if runtime_type:
        rt = (
            '\n  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n'
            f'    runtime_type = "{runtime_type}"\n'
        )
        if runc_root:
            rt += (
                '  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n'
                f'    Root = "{runc_root}"\n'
            )
    go_root = runc_root or "/run/arun-test-runc"
    go_shim = (
        f'\n  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{GO_SHIM_HANDLER}]\n'
        '    runtime_type = "io.containerd.runc.v2"\n'
        f'  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{GO_SHIM_HANDLER}.options]\n'
        f'    Root = "{go_root}-go"\n'
    )
    return f"""version = 2
[arun]
  uvloop = {"true" if uvloop else "false"}
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
{extra}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin_dir()}"
    conf_dir = "{cni_conf_dir}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{certs_dir}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"{rt}{go_shim}
"""


@dataclass
class CRIEnv:
    base: Path
    registry: RegistryServer
    daemon: Daemon | None
    cni_dir: Path
    certs_dir: Path
    network: str
    bridge: str
    subnet: str
    gateway: str
    built: dict[str, im.BuiltImage]
    refs: dict[str, str] = field(default_factory=dict)
    config: str = ""

    @classmethod
    def start(
        cls,
        *,
        runtime_type: str = "",
        extra_config: str = "",
        start_daemon: bool = True,
        uvloop: bool = True,
    ) -> CRIEnv:
        base = Path(tempfile.mkdtemp(prefix="arun-cri-", dir="/tmp"))
        built = build_images()
        reg = asyncio.run(_start_registry(base, built))
        tag = secrets.token_hex(3)
        network, bridge = f"arun-cri-{tag}", f"acri{tag}"
        subnet, gateway = _random_subnet()
        cni_dir = base / "net.d"
        cni_dir.mkdir()
        (cni_dir / "10-arun-test.conflist").write_text(json.dumps(cni_conflist(network, bridge, subnet)))
        certs = base / "certs.d"
        (certs / reg.host).mkdir(parents=True)
        (certs / reg.host / "hosts.toml").write_text(
            f'server = "http://{reg.host}"\n'
            f'[host."http://{reg.host}"]\n  capabilities = ["pull", "resolve"]\n'
        )
        env = cls(base, reg, None, cni_dir, certs, network, bridge, subnet, gateway, built)
        env.refs = {name: f"{reg.host}/arun-test/{name}:1" for name in built}
        runc_root = str(base / "runc")
        env.config = config_text(
            sandbox_image=env.refs["pause"],
            cni_conf_dir=str(cni_dir),
            certs_dir=str(certs),
            runtime_type=runtime_type,
            runc_root=runc_root,
            extra=extra_config,
            uvloop=uvloop,
        )
        if start_daemon:
            try:
                env.start_daemon()
            except BaseException:
                env.stop()
                raise
        return env

    def start_daemon(self) -> Daemon:
        self.daemon = Daemon.start(config_text=self.config)
        return self.daemon

    def pull(self, *names: str) -> None:
        """Pull test images (all by default) through the daemon's CRI."""

        async def run() -> None:
            async with self.client() as c:
                for n in names or tuple(self.refs):
                    await c.pull(self.refs[n])

        asyncio.run(run())

    def image(self, name: str) -> str:
        return self.refs[name]

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[CRIClient]:
        assert self.daemon is not None
        from grpclib.client import Channel

        ch = Channel(path=str(self.daemon.address))
        try:
            yield CRIClient(ch, self)
        finally:
            ch.close()

    def cleanup_pods(self) -> None:
        """Stop and remove every pod the daemon still has (so no shim or netns outlives a test)."""
        if self.daemon is None or self.daemon.proc.poll() is not None:
            return

        async def run() -> None:
            async with self.client() as c:
                pods = await c.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest())
                for p in pods.items:
                    with contextlib.suppress(Exception):
                        await c.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=p.id))
                    with contextlib.suppress(Exception):
                        await c.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=p.id))

        with contextlib.suppress(Exception):
            asyncio.run(run())

    def stop(self) -> None:
        self.cleanup_pods()
        if self.daemon is not None:
            with contextlib.suppress(Exception):
                self.daemon.stop()
        with contextlib.suppress(Exception):
            asyncio.run(self.registry.stop())
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
        shutil.rmtree(f"/var/lib/cni/networks/{self.network}", ignore_errors=True)
        shutil.rmtree(self.registry.root, ignore_errors=True)
        shutil.rmtree(self.base, ignore_errors=True)


async def _start_registry(base: Path, built: Mapping[str, im.BuiltImage]) -> RegistryServer:
    reg = await start_registry(base)
    try:
        for name, img in built.items():
            await im.push_raw(reg.url, f"arun-test/{name}", "1", img)
    except BaseException:
        await reg.stop()
        raise
    return reg


class CRIClient:
    """grpclib stubs of both CRI services, and shortcuts for the usual calls."""

    def __init__(self, channel: Any, env: CRIEnv | None = None) -> None:
        self.channel = channel
        self.env = env
        self.rt = api_grpc.RuntimeServiceStub(channel)
        self.img = api_grpc.ImageServiceStub(channel)

    @staticmethod
    def pod_config(
        name: str,
        *,
        namespace: str = "default",
        uid: str = "",
        attempt: int = 0,
        log_directory: str = "",
        hostname: str = "",
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        port_mappings: Sequence[api_pb2.PortMapping] = (),
        linux: api_pb2.LinuxPodSandboxConfig | None = None,
        dns: api_pb2.DNSConfig | None = None,
    ) -> api_pb2.PodSandboxConfig:
        cfg = api_pb2.PodSandboxConfig(
            metadata=api_pb2.PodSandboxMetadata(
                name=name, namespace=namespace, uid=uid or secrets.token_hex(8), attempt=attempt
            ),
            log_directory=log_directory,
            hostname=hostname,
            labels=dict(labels or {}),
            annotations=dict(annotations or {}),
            port_mappings=list(port_mappings),
        )
        if linux is not None:
            cfg.linux.CopyFrom(linux)
        if dns is not None:
            cfg.dns_config.CopyFrom(dns)
        return cfg

    async def run_pod(self, config: api_pb2.PodSandboxConfig | str, handler: str = "") -> str:
        if isinstance(config, str):
            config = self.pod_config(config)
        resp = await self.rt.RunPodSandbox(
            api_pb2.RunPodSandboxRequest(config=config, runtime_handler=handler)
        )
        return str(resp.pod_sandbox_id)

    async def pod_status(self, pod: str, verbose: bool = False) -> api_pb2.PodSandboxStatusResponse:
        resp: api_pb2.PodSandboxStatusResponse = await self.rt.PodSandboxStatus(
            api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=verbose)
        )
        return resp

    async def create(
        self,
        pod: str,
        name: str,
        image: str,
        command: Sequence[str] = (),
        *,
        pod_config: api_pb2.PodSandboxConfig | None = None,
        **fields: Any,
    ) -> str:
        config = api_pb2.ContainerConfig(
            metadata=api_pb2.ContainerMetadata(name=name),
            image=api_pb2.ImageSpec(image=image),
            command=list(command),
            **fields,
        )
        resp = await self.rt.CreateContainer(
            api_pb2.CreateContainerRequest(pod_sandbox_id=pod, config=config, sandbox_config=pod_config)
        )
        return str(resp.container_id)

    async def start(self, cid: str) -> None:
        await self.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))

    async def status(self, cid: str, verbose: bool = False) -> api_pb2.ContainerStatus:
        resp = await self.rt.ContainerStatus(
            api_pb2.ContainerStatusRequest(container_id=cid, verbose=verbose)
        )
        st: api_pb2.ContainerStatus = resp.status
        return st

    async def exec_sync(self, cid: str, cmd: Sequence[str], limit: int = 30) -> api_pb2.ExecSyncResponse:
        resp: api_pb2.ExecSyncResponse = await self.rt.ExecSync(
            api_pb2.ExecSyncRequest(container_id=cid, cmd=list(cmd), timeout=limit)
        )
        return resp

    async def wait_state(self, cid: str, state: int, within: float = 30.0) -> api_pb2.ContainerStatus:
        deadline = time.monotonic() + within
        while True:
            st = await self.status(cid)
            if st.state == state:
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"container {cid} is {api_pb2.ContainerState.Name(st.state)}, "
                    f"not {api_pb2.ContainerState.Name(state)}"
                )
            await asyncio.sleep(0.1)

    async def stop_pod(self, pod: str) -> None:
        await self.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod))

    async def remove_pod(self, pod: str) -> None:
        await self.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod))

    async def remove_all_pods(self) -> None:
        """Stop and remove every pod (test clean-up)."""
        pods = await self.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest())
        for p in pods.items:
            with contextlib.suppress(Exception):
                await self.stop_pod(p.id)
            with contextlib.suppress(Exception):
                await self.remove_pod(p.id)

    async def pull(self, image: str) -> str:
        resp = await self.img.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image)))
        return str(resp.image_ref)
