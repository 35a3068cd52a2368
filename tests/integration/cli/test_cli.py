"""Every client command of ``arun`` through a real daemon, as a user types them.

The commands run as ``python -m arun`` subprocesses against a private
containerd 1.6 and a private arun, each test against the daemons that serve
what it needs (STORES, TASKS, CRI below; arun joins a list when the service
lands on main). Each test uses its own namespace and checks exit statuses,
outputs in all three formats, one-line errors, and that nothing is left behind.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from arun.bench.cri import CRI
from arun.bench.daemons import BUSYBOX_IMAGE, PrivateArun, PrivateContainerd
from arun.bench.images import busybox_image, write_oci_archive

from ..cgroups import remove_namespace_cgroups

pytestmark = [
    pytest.mark.root,
    pytest.mark.runc,
    pytest.mark.containerd,
    pytest.mark.integration,
    pytest.mark.asyncio(loop_scope="module"),
]

SRC = Path(__file__).resolve().parents[3] / "src"
IMAGE = "docker.io/library/cli:test"

STORES = ["containerd", "arun"]  # images, containers, snapshots, namespaces, events
TASKS = ["containerd", "arun"]  # + tasks
CRI_FULL = ["containerd", "arun"]  # + the CRI runtime service (pods, containers)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "daemon" in metafunc.fixturenames:
        if metafunc.definition.get_closest_marker("needs_cri"):
            kinds = CRI_FULL
        elif metafunc.definition.get_closest_marker("needs_tasks"):
            kinds = TASKS
        else:
            kinds = STORES
        metafunc.parametrize("daemon", kinds, indirect=True)


needs_tasks = pytest.mark.needs_tasks
needs_cri = pytest.mark.needs_cri


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def containerd() -> AsyncIterator[PrivateContainerd]:
    d = await PrivateContainerd.start()
    try:
        yield d
    finally:
        await d.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def arun_daemon() -> AsyncIterator[PrivateArun]:
    d = await PrivateArun.start()  # with the pause and busybox images in k8s.io, for CRI
    try:
        yield d
    finally:
        assert await d.stop() == 0, d.logs()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("cli") / "image.tar"
    write_oci_archive(p, [busybox_image(IMAGE)])
    return p


class Arun:
    """``python -m arun --address A --namespace N ...`` with logs in a temporary directory."""

    def __init__(self, address: Path, namespace: str, log_dir: Path) -> None:
        self.address = str(address)
        self.namespace = namespace
        self.env = dict(os.environ, PYTHONPATH=str(SRC), ARUN_LOG_DIR=str(log_dir))

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "arun", "--address", self.address, "-n", self.namespace, *args]

    def _run(
        self, args: tuple[str, ...], stdin: bytes | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            self.argv(*args), input=stdin, capture_output=True, env=self.env, timeout=timeout, check=False
        )
        return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(), r.stderr.decode())

    async def __call__(
        self, *args: str, stdin: bytes | None = None, limit: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(self._run, args, stdin, limit)

    async def ok(self, *args: str, stdin: bytes | None = None) -> str:
        r = await self(*args, stdin=stdin)
        assert r.returncode == 0, f"arun {' '.join(args)}: exit {r.returncode}\n{r.stdout!r}\n{r.stderr}"
        return r.stdout

    async def fails(self, *args: str, code: int = 1) -> str:
        r = await self(*args)
        assert r.returncode == code, (
            f"arun {' '.join(args)}: exit {r.returncode}, wanted {code}\n{r.stdout}{r.stderr}"
        )
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("arun: "), r.stderr
        return lines[0]


@pytest.fixture
def daemon(request: pytest.FixtureRequest) -> PrivateContainerd | PrivateArun:
    d: PrivateContainerd | PrivateArun = request.getfixturevalue(
        "containerd" if request.param == "containerd" else "arun_daemon"
    )
    return d


@pytest_asyncio.fixture(loop_scope="module")
async def cli(daemon: PrivateContainerd | PrivateArun, archive: Path, tmp_path: Path) -> AsyncIterator[Arun]:
    a = Arun(daemon.address, "cli-" + os.urandom(4).hex(), tmp_path / "logs")
    await a.ok("images", "import", str(archive))
    yield a
    left = json.loads(await a.ok("ps", "-o", "json"))
    for c in left:
        await a("rm", "-f", c["id"])
    await a("images", "rm", "--sync", IMAGE)
    remove_namespace_cgroups(a.namespace)
    assert left == [], f"containers left behind: {[c['id'] for c in left]}"
    assert not list((tmp_path / "logs").rglob("*.log")), "log files left behind"


async def test_version_namespaces_and_bad_address(cli: Arun, tmp_path: Path) -> None:
    out = await cli.ok("version")
    assert out.startswith("Client:") and "Server:" in out
    v = json.loads(await cli.ok("version", "-o", "json"))
    assert v["server_version"] and v["client"]
    assert cli.namespace in (await cli.ok("namespaces", "ls", "-q")).split()
    bad = Arun(tmp_path / "none.sock", "default", tmp_path)
    line = await bad.fails("version")
    assert "none.sock" in line
    line = await bad.fails("ps", "--address", "ftp://nowhere")
    assert "unsupported scheme" in line


async def test_images(cli: Arun, tmp_path: Path) -> None:
    table = await cli.ok("images", "ls")
    assert table.splitlines()[0].split() == ["REF", "TYPE", "DIGEST", "SIZE", "CREATED"]
    assert IMAGE in table
    recs = json.loads(await cli.ok("images", "ls", "-o", "json"))
    assert [r["name"] for r in recs] == [IMAGE] and recs[0]["size"] > 500_000
    yaml = await cli.ok("image", "ls", "-o", "yaml")
    assert f"- name: {IMAGE}\n" in yaml and f"  digest: {recs[0]['digest']}\n" in yaml
    assert (await cli.ok("i", "ls", "-q")).split() == [IMAGE]
    assert (await cli.ok("images", "ls", "-q", "name==nothing")).strip() == ""
    out = tmp_path / "export.tar"
    await cli.ok("images", "export", str(out), IMAGE)
    assert out.stat().st_size > 500_000
    assert (await cli.ok("images", "rm", IMAGE)).split() == [IMAGE]
    line = await cli.fails("images", "rm", IMAGE)
    assert IMAGE in line and "not found" in line
    assert json.loads(await cli.ok("images", "import", str(out), "-o", "json"))[0]["name"] == IMAGE
    line = await cli.fails("images", "import", str(tmp_path / "missing.tar"))
    assert "missing.tar" in line


@needs_tasks
async def test_run_foreground_exit_code_and_rm(cli: Arun) -> None:
    r = await cli("run", "--rm", IMAGE, "fg1", "sh", "-c", "echo out; echo err >&2; exit 4")
    assert (r.returncode, r.stdout, r.stderr) == (4, "out\n", "err\n")
    assert json.loads(await cli.ok("ps", "-o", "json")) == []
    # Without --rm the container stays (its task is gone), as with ctr run.
    assert (await cli("run", IMAGE, "fg2", "true")).returncode == 0
    [rec] = json.loads(await cli.ok("ps", "-o", "json"))
    assert rec["id"] == "fg2" and rec["status"] == "no task"
    assert (await cli.ok("rm", "fg2")).split() == ["fg2"]


@needs_tasks
async def test_run_stdin_tty_env_mounts_user(cli: Arun, tmp_path: Path) -> None:
    out = await cli.ok(
        "run", "--rm", "-i", IMAGE, "in1", "sh", "-c", "cat; echo done", stdin=b"line one\nline two\n"
    )
    assert out == "line one\nline two\ndone\n"
    out = await cli.ok(
        "run", "--rm", "-t", IMAGE, "tty1", "sh", "-c", "test -t 1 && echo is-a-tty", stdin=b""
    )
    assert out.replace("\r", "") == "is-a-tty\n"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f").write_text("host file\n")
    tmp_path.chmod(0o755)
    (tmp_path / "data").chmod(0o755)
    out = await cli.ok(
        "run", "--rm", "-e", "A=1", "--env", "B=two", "--user", "nobody", "-w", "/tmp", "--hostname", "box",
        "--mount", f"type=bind,src={tmp_path / 'data'},dst=/data,options=rbind:ro",
        IMAGE, "m1", "sh", "-c", "echo $A $B; id -u; pwd; hostname; cat /data/f; touch /data/x || echo ro",
    )  # fmt: skip
    assert out.splitlines() == ["1 two", "65534", "/tmp", "box", "host file", "ro"]
    line = await cli.fails("run", "--mount", "src=/a,dst=relative", IMAGE, "m2", "true")
    assert "dst must be an absolute path" in line


@needs_tasks
async def test_detached_exec_logs_kill_rm(cli: Arun) -> None:
    assert (
        await cli.ok("run", "-d", IMAGE, "d1", "sh", "-c", "echo started; exec sleep 1000")
    ).strip() == "d1"
    table = await cli.ok("ps")
    assert table.splitlines()[0].split() == ["CONTAINER", "IMAGE", "STATUS", "PID", "CREATED", "RUNTIME"]
    [rec] = json.loads(await cli.ok("ps", "-o", "json"))
    assert rec["status"] == "running" and rec["pid"] > 0
    r = await cli("exec", "d1", "sh", "-c", "echo in exec; echo to err >&2; exit 3")
    assert (r.returncode, r.stdout, r.stderr) == (3, "in exec\n", "to err\n")
    assert (await cli.ok("exec", "-i", "d1", "cat", stdin=b"piped\n")) == "piped\n"
    for _ in range(50):
        if (await cli.ok("logs", "d1")) == "started\n":
            break
        await asyncio.sleep(0.1)
    assert await cli.ok("logs", "d1") == "started\n"
    line = await cli.fails("rm", "d1")
    assert "running" in line and "--force" in line
    assert (await cli.ok("kill", "-s", "KILL", "d1")).strip() == "d1"
    for _ in range(50):
        if json.loads(await cli.ok("ps", "-o", "json"))[0]["status"] == "stopped":
            break
        await asyncio.sleep(0.1)
    [rec] = json.loads(await cli.ok("ps", "-o", "json"))
    assert rec["status"] == "stopped" and rec["exit_status"] == 137
    assert (await cli.ok("logs", "-f", "d1")) == "started\n"  # a stopped container: -f ends at once
    assert (await cli.ok("rm", "d1")).split() == ["d1"]
    line = await cli.fails("logs", "d1")
    assert "d1" in line and "not found" in line
    d2 = json.loads(await cli.ok("run", "-d", "-o", "json", IMAGE, "d2", "sleep", "1000"))
    assert d2["id"] == "d2" and d2["pid"] > 0 and d2["log"].endswith("d2.log")
    ex = await cli.ok("exec", "-d", "-o", "yaml", "--exec-id", "bg1", "d2", "sleep", "1000")
    assert "exec_id: bg1\n" in ex and "id: d2\n" in ex
    assert json.loads(await cli.ok("rm", "-f", "d2", "-o", "yaml".replace("yaml", "json"))) == {
        "removed": ["d2"],
        "failed": [],
    }


@needs_tasks
async def test_run_errors_leave_nothing(cli: Arun) -> None:
    line = await cli.fails("run", "docker.io/library/nope:missing", "e1", "true")
    assert "nope:missing" in line and "not found" in line
    line = await cli.fails("run", IMAGE, "e2", "/no/such/binary")
    assert "/no/such/binary" in line
    line = await cli.fails("run", "-d", IMAGE, "e3", "/no/such/binary")
    assert "/no/such/binary" in line
    line = await cli.fails("run", IMAGE, "bad id!", "true")
    assert "bad id!" in line
    assert json.loads(await cli.ok("ps", "-o", "json")) == []
    line = await cli.fails("exec", "nothere", "true")
    assert "nothere" in line
    line = await cli.fails("kill", "-s", "NOPE", "nothere")
    assert "NOPE" in line
    r = await cli("run")
    assert r.returncode == 2  # argparse: missing IMAGE and ID


@needs_tasks
async def test_networks(cli: Arun, daemon: PrivateContainerd | PrivateArun) -> None:
    net = daemon.network
    assert net is not None
    out = await cli.ok(
        "run", "--rm", "--net", "cni", "--cni-conf-dir", str(net.conf_dir), IMAGE, "n1",
        "sh", "-c", "ip -4 -o addr show eth0",
    )  # fmt: skip
    addr = out.split()[3]
    assert ipaddress.ip_interface(addr).ip in net.subnet
    # The address went back to the pool and the CNI cache entry is gone.
    assert not (net.ipam_dir / net.name / str(ipaddress.ip_interface(addr).ip)).exists()
    assert not [f for f in os.listdir("/var/lib/cni/results") if cli.namespace in f]
    default_if = next(
        line.split()[0]
        for line in Path("/proc/net/route").read_text().splitlines()[1:]
        if line.split()[1] == "00000000"
    )
    out = await cli.ok("run", "--rm", "--net", "host", IMAGE, "n2", "ls", "/sys/class/net")
    assert default_if in out.split()
    out = await cli.ok("run", "--rm", IMAGE, "n3", "ls", "/sys/class/net")
    assert out.split() == ["lo"]


@needs_tasks
async def test_events(cli: Arun) -> None:
    argv = cli.argv(
        "events",
        "--follow",
        "--count",
        "2",
        "-o",
        "json",
        f'namespace=={cli.namespace},topic~="/containers/"',
    )
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli.env
    )
    try:
        await asyncio.sleep(1.0)  # subscribed
        await cli.ok("run", "--rm", IMAGE, "ev1", "true")
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err
    evs = [json.loads(line) for line in out.decode().splitlines()]
    assert [(e["topic"], e["data"]["id"]) for e in evs] == [
        ("/containers/create", "ev1"),
        ("/containers/delete", "ev1"),
    ]
    assert all(e["namespace"] == cli.namespace and e["type"].startswith("containerd.events.") for e in evs)


@needs_cri
async def test_cri_views(cli: Arun, daemon: PrivateContainerd | PrivateArun) -> None:
    (daemon.base / "podlogs").mkdir(exist_ok=True)  # kubelet makes the pod log directory
    async with CRI(daemon.endpoint) as cri:
        pb = cri.pb
        cfg = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name="cli-pod", uid="u1", namespace="team"),
            log_directory=str(daemon.base / "podlogs"),
        )
        pod = (await cri.call("RunPodSandbox", pb.RunPodSandboxRequest(config=cfg))).pod_sandbox_id
        try:
            ctr = await cri.call(
                "CreateContainer",
                pb.CreateContainerRequest(
                    pod_sandbox_id=pod,
                    config=pb.ContainerConfig(
                        metadata=pb.ContainerMetadata(name="web"),
                        image=pb.ImageSpec(image=BUSYBOX_IMAGE),
                        command=["sh", "-c", "echo hello from cri; sleep 1000"],
                        log_path="web.log",
                    ),
                    sandbox_config=cfg,
                ),
            )
            await cri.call("StartContainer", pb.StartContainerRequest(container_id=ctr.container_id))
            table = await cli.ok("pods")
            assert table.splitlines()[0].split()[:4] == ["POD", "ID", "CREATED", "STATE"]
            assert "cli-pod" in table and pod[:13] in table
            [p] = json.loads(await cli.ok("pods", "-o", "json", "--name", "cli-pod"))
            assert (p["id"], p["state"], p["namespace"]) == (pod, "READY", "team")
            assert json.loads(await cli.ok("pods", "inspect", pod))["metadata"]["name"] == "cli-pod"
            assert (await cli.ok("pods", "ls", "-q")).split() == [pod]
            [c] = json.loads(await cli.ok("containers", "-o", "json"))
            assert (c["id"], c["name"], c["state"], c["pod_id"]) == (ctr.container_id, "web", "RUNNING", pod)
            assert "web" in await cli.ok("containers", "ls", "-a", "--pod", pod)
            yaml = await cli.ok("containers", "inspect", ctr.container_id, "-o", "yaml")
            assert "state: CONTAINER_RUNNING" in yaml
            for _ in range(50):
                logs = await cli.ok("logs", "--namespace", "k8s.io", ctr.container_id)
                if logs:
                    break
                await asyncio.sleep(0.1)
            assert logs == "hello from cri\n"
        finally:
            await cri.remove_pod(pod)
    assert json.loads(await cli.ok("pods", "-o", "json")) == []


class _Terminal:
    """``arun run -i -t ...`` on the slave side of a pty of 33x101; we play the terminal."""

    def __init__(self, cli: Arun, *args: str) -> None:
        self.cli, self.args = cli, args
        self.out = bytearray()
        self.changed = asyncio.Event()
        self.closed = False

    async def __aenter__(self) -> _Terminal:
        import fcntl
        import pty
        import struct
        import termios

        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.cli.argv("run", "--rm", "-i", "-t", *self.args),
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=self.cli.env,
                start_new_session=True,
            )
        finally:
            os.close(slave)
        asyncio.get_running_loop().add_reader(self.master, self._readable)
        return self

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.master)
            self.closed = True
        self.out.extend(data)
        self.changed.set()

    async def until(self, marker: bytes) -> None:
        while marker not in self.out:
            assert not self.closed, f"terminal closed before {marker!r}: {self.text()}"
            self.changed.clear()
            await self.changed.wait()

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def hang_up(self) -> None:
        asyncio.get_running_loop().remove_reader(self.master)
        os.close(self.master)
        self.master = -1

    def text(self) -> str:
        return self.out.decode(errors="replace")

    async def __aexit__(self, *exc: object) -> None:
        if self.master >= 0:
            asyncio.get_running_loop().remove_reader(self.master)
            os.close(self.master)
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@needs_tasks
async def test_interactive_terminal(cli: Arun) -> None:
    """``run -it`` from a real terminal: raw mode, the terminal's size, input, the exit status."""
    async with _Terminal(cli, IMAGE, "it1", "sh") as term, asyncio.timeout(60):
        await term.until(b"# ")  # the shell runs, in the container's terminal
        term.type(b'echo SIZE=$(stty size | tr " " x); exit 3\r')
        await term.until(b"SIZE=3")
        assert await term.proc.wait() == 3, term.text()
    assert "SIZE=33x101" in term.text()


@needs_tasks
async def test_input_typed_before_the_container_starts_reaches_it(cli: Arun) -> None:
    """Keys typed while ``run`` is still starting are kept when it puts the terminal in raw mode."""
    async with _Terminal(cli, IMAGE, "it2", "sh") as term, asyncio.timeout(60):
        term.type(b"echo TYPED=$((40+2)); exit 5\r")  # before the container (or arun) started
        await term.until(b"TYPED=42")
        assert await term.proc.wait() == 5, term.text()


@needs_tasks
async def test_run_rm_removes_the_container_when_the_terminal_goes_away(cli: Arun) -> None:
    async with _Terminal(cli, IMAGE, "it3", "sh") as term, asyncio.timeout(60):
        await term.until(b"# ")
        term.hang_up()  # stdin ends, the shell exits, its output has nowhere to go
        await term.proc.wait()
    assert json.loads(await cli.ok("ps", "-o", "json")) == []


@pytest.mark.registry
async def test_pull_and_push(cli: Arun, daemon: PrivateContainerd | PrivateArun, tmp_path: Path) -> None:
    from arun.testing.registry import registry

    async with registry(tmp_path / "reg") as reg:
        target = f"{reg.host}/cli/pushed:v1"
        if isinstance(daemon, PrivateArun):
            out = await cli.ok("images", "push", "--plain-http", target, IMAGE)
            assert out.split() == ["REF", target]
        else:
            line = await cli.fails("images", "push", "--plain-http", target, IMAGE)
            assert "transfer service" in line
            from arun.testing.images import build_image, busybox_layer, push_raw

            await push_raw(reg.url, "cli/pushed", "v1", build_image([busybox_layer()]))
        await cli.ok("images", "rm", "--sync", IMAGE)
        rec = json.loads(await cli.ok("images", "pull", "--plain-http", target, "-o", "json"))
        assert rec["name"] == target
        assert target in (await cli.ok("images", "ls", "-q")).split()
        from arun.client import Client

        async with Client(cli.address, namespace=cli.namespace) as c:
            layers = [d.digest for d in (await c.images.manifest(target)).layers]
        # In a table, pull reports each layer's progress on stderr (a line per state change
        # when stderr is not a terminal) and prints the name on stdout.
        await cli.ok("images", "rm", "--sync", target)
        r = await cli("images", "pull", "--plain-http", target)
        assert (r.returncode, r.stdout) == (0, target + "\n"), r.stderr
        states: dict[str, list[str]] = {}
        for line in r.stderr.splitlines():
            item, _, state = line.rpartition(": ")
            states.setdefault(item, []).append(state)
        for digest in layers:
            short = digest.removeprefix("sha256:")[:12]
            [item] = [k for k in states if k.endswith(short)]
            assert states[item][-1] in ("done", "complete", "unpacked", "extracted"), r.stderr
        out = (
            await cli.ok("run", "--rm", target, "p1", "echo", "pulled")
            if isinstance(daemon, PrivateContainerd)
            else ""
        )
        assert out in ("", "pulled\n")
        await cli.ok("images", "rm", "--sync", target)
        line = await cli.fails("images", "pull", "-q", "--plain-http", f"{reg.host}/cli/nothing:v1")
        assert "nothing" in line
        line = await cli.fails("images", "pull", "Not A Ref")
        assert "invalid reference" in line
