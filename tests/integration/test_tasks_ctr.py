"""Tasks through Debian's ctr against a real daemon: containers run in arun's shim
(``io.containerd.arun.v1``) and in containerd's Go shim (``io.containerd.runc.v2``, ctr's
default), survive the daemon, and are cleaned up when their shim dies."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from arun.runtime import ksm
from arun.testing.daemon import Daemon
from arun.testing.ociarchive import ArchiveImage, Entry, build_archive, busybox_rootfs

from .cgroups import remove_namespace_cgroups

pytestmark = [pytest.mark.integration, pytest.mark.ctr, pytest.mark.root, pytest.mark.runc]

IMAGE = "docker.io/library/arun-tasks:latest"
BASE = "docker.io/library/arun-tasks"
ARUN = "io.containerd.arun.v1"
RUNC = "io.containerd.runc.v2"
TOOLS = ("echo", "sleep", "true", "false", "tty", "stty", "dd", "id", "ps", "head", "env", "hostname")
CGROUP_ROOT = Path("/sys/fs/cgroup")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> ArchiveImage:
    layer = busybox_rootfs() + [Entry(f"bin/{t}", "symlink", b"busybox") for t in TOOLS]
    return build_archive(tmp_path_factory.mktemp("oci") / "tasks.tar", IMAGE, [layer])


def wait_until(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def rows(output: str) -> list[list[str]]:
    return [line.split() for line in output.strip().splitlines()[1:] if line.strip()]


def processes_in(path: Path) -> list[int]:
    """Processes whose working directory is under ``path`` (shims work in their bundle)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
        except OSError:
            continue
        if cwd.startswith(str(path) + "/"):
            found.append(int(entry.name))
    return found


def describe(pids: list[int]) -> list[str]:
    """pid, command line and working directory of each process, for failure messages."""
    out = []
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            out.append(f"{pid} {cmd} (cwd {os.readlink(f'/proc/{pid}/cwd')})")
        except OSError:
            continue  # gone meanwhile
    return out


def mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as fh:
        return [f.split()[4] for f in fh if f.split()[4].startswith(str(path) + "/")]


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def cgroup_dirs(ns: str) -> list[Path]:
    """cgroup v1 directories ctr's containers of namespace ``ns`` use (``/<ns>/<id>``)."""
    return [d for d in CGROUP_ROOT.glob(f"*/{ns}") if d.is_dir()]


def cgroups_of(pid: int) -> list[Path]:
    """The directories of ``pid``'s cgroups in every v1 hierarchy (``/proc/PID/cgroup``)."""
    out = []
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if not controllers or path == "/":
            continue  # the (empty) unified hierarchy, or a controller the runtime left at the root
        mount = controllers.removeprefix("name=")
        out.append(CGROUP_ROOT / mount / path.lstrip("/"))
    return out


def remove_namespace_leftovers(ns: str) -> None:
    """What runc keeps per namespace after its last container: the cgroup parents
    (``/<ns>`` of ctr's ``/<ns>/<id>``) and the runc state roots of both shims."""
    remove_namespace_cgroups(ns)
    for root in (Path("/run/arun/runc") / ns, Path("/run/containerd/runc") / ns):
        if root.is_dir():
            root.rmdir()  # empty once every container is deleted


class Ctx:
    """A daemon with the test image in a namespace of its own, and a ctr bound to both."""

    def __init__(self, daemon: Daemon, image: ArchiveImage) -> None:
        self.daemon = daemon
        self.ns = "t-" + uuid.uuid4().hex[:10]
        self.ctr("images", "import", "--base-name", BASE, str(image.path))

    def ctr(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.daemon.ctr(*args, namespace=self.ns, check=check, timeout=timeout)

    def run_d(self, id: str, *cmd: str, runtime: str = ARUN, extra: tuple[str, ...] = ()) -> None:
        self.ctr("run", "-d", "--runtime", runtime, *extra, IMAGE, id, *cmd)

    def tasks(self) -> dict[str, tuple[int, str]]:
        return {r[0]: (int(r[1]), r[2]) for r in rows(self.ctr("task", "ls").stdout)}

    def status(self, id: str) -> str | None:
        t = self.tasks().get(id)
        return None if t is None else t[1]

    def delete(self, id: str) -> int:
        """``ctr task delete``; the exit status it reports (a warning, for a non-zero one)."""
        r = self.ctr("task", "delete", id)
        m = re.search(r"exit with non-zero exit code (\d+)", r.stderr)
        return int(m.group(1)) if m else 0

    def cleanup(self) -> None:
        """Kill and delete every task and container of the namespace."""
        for id in self.tasks():
            self.ctr("task", "kill", "-a", "-s", "SIGKILL", id, check=False)
        for id in self.tasks():
            wait_until(lambda id=id: self.status(id) in (None, "STOPPED"), f"{id} to stop", 20)
            self.ctr("task", "delete", id, check=False)
        for r in rows(self.ctr("containers", "ls").stdout):
            self.ctr("containers", "rm", r[0], check=False)
        remove_namespace_leftovers(self.ns)


@pytest.fixture
def ctx(daemon_factory: Callable[..., Daemon], image: ArchiveImage) -> Iterator[Ctx]:
    c = Ctx(daemon_factory(), image)
    try:
        yield c
    finally:
        c.cleanup()
        state = c.daemon.state
        # A shim exits on its own shortly after its last task is deleted (as the Go shim does).
        with contextlib.suppress(AssertionError):
            wait_until(lambda: processes_in(state) == [], "shims to exit", 30)
        assert describe(processes_in(state)) == [], "shims left running"
        assert mounts_under(c.daemon.base) == [], "mounts left behind"


@pytest.mark.parametrize("runtime", [ARUN, RUNC])
def test_run_rm_echo(ctx: Ctx, runtime: str) -> None:
    out = ctx.ctr("run", "--rm", "--runtime", runtime, IMAGE, "c1", "echo", "hi")
    assert out.stdout == "hi\n"
    assert ctx.tasks() == {}
    assert rows(ctx.ctr("containers", "ls").stdout) == []


def test_default_runtime_is_the_go_shim(ctx: Ctx) -> None:
    # ctr 1.6 records io.containerd.runc.v2 unless told otherwise: arun drives containerd's shim.
    ctx.ctr("run", "-d", IMAGE, "c1", "sleep", "1000")
    info = json.loads(ctx.ctr("containers", "info", "c1").stdout)
    assert info["Runtime"]["Name"] == RUNC
    pid = ctx.tasks()["c1"][0]
    shims = processes_in(ctx.daemon.state)
    assert len(shims) == 1
    exe = os.readlink(f"/proc/{shims[0]}/exe")
    assert exe.endswith("containerd-shim-runc-v2")
    assert pid_alive(pid)


@pytest.mark.parametrize("runtime", [ARUN, RUNC])
def test_exit_codes_propagate(ctx: Ctx, runtime: str) -> None:
    r = ctx.ctr("run", "--rm", "--runtime", runtime, IMAGE, "c1", "sh", "-c", "echo out; exit 7", check=False)
    assert (r.returncode, r.stdout) == (7, "out\n")
    r = ctx.ctr("run", "--rm", "--runtime", runtime, IMAGE, "c2", "false", check=False)
    assert r.returncode == 1
    r = ctx.ctr("run", "--rm", "--runtime", runtime, IMAGE, "c3", "/nonexistent", check=False)
    assert r.returncode != 0
    assert ctx.tasks() == {}


@pytest.mark.parametrize("runtime", [ARUN, RUNC])
def test_detached_task_lifecycle(ctx: Ctx, runtime: str) -> None:
    # As pid 1 of its namespace the shell only sees SIGTERM through its trap.
    ctx.run_d("c1", "sh", "-c", "trap 'exit 9' TERM; while true; do sleep 0.1; done", runtime=runtime)
    pid, status = ctx.tasks()["c1"]
    assert status == "RUNNING" and pid_alive(pid)

    ps = rows(ctx.ctr("task", "ps", "c1").stdout)
    assert pid in [int(r[0]) for r in ps]

    out = ctx.ctr("task", "exec", "--exec-id", "e1", "c1", "sh", "-c", "echo from exec; exit 3", check=False)
    assert (out.returncode, out.stdout) == (3, "from exec\n")

    ctx.ctr("task", "pause", "c1")
    assert ctx.status("c1") == "PAUSED"
    ctx.ctr("task", "resume", "c1")
    assert ctx.status("c1") == "RUNNING"

    metrics = ctx.ctr("task", "metrics", "c1").stdout
    assert "memory.usage_in_bytes" in metrics and "pids.current" in metrics

    ctx.ctr("task", "kill", "-s", "SIGTERM", "c1")
    wait_until(lambda: ctx.status("c1") == "STOPPED", "c1 to stop")
    assert not pid_alive(pid)
    assert ctx.delete("c1") == 9
    assert ctx.tasks() == {}
    ctx.ctr("containers", "rm", "c1")


@pytest.mark.ksm
def test_shim_memory_is_mergeable_and_the_container_is_not(ctx: Ctx) -> None:
    """By default the daemon starts the kernel's same-page merging and arun's shims inherit
    mergeable memory from the zygote; runc's exec drops the mark, so the container's own
    memory is never merged with anything."""
    # Shims come from the zygote once it is up (before that, from the binary: a fresh Python).
    wait_until(lambda: "shim zygote ready" in ctx.daemon.logs(), "the shim zygote", 60)
    ctx.run_d("m1", "sleep", "1000")
    pid, status = ctx.tasks()["m1"]
    assert status == "RUNNING"
    with open(f"/proc/{pid}/stat") as fh:
        shim = int(fh.read().rsplit(")", 1)[1].split()[1])
    assert Path(f"/proc/{shim}/comm").read_text().strip() == "arun-shim"
    assert ksm.mergeable_kib(shim) > 1024
    assert ksm.mergeable_kib(pid) == 0
    ksm_stat = Path(f"/proc/{pid}/ksm_stat")
    if ksm_stat.exists():  # Linux 6.1+
        assert "ksm_merge_any: yes" not in ksm_stat.read_text()
    assert Path(ksm.RUN).read_text().strip() == "1"


@pytest.mark.parametrize("runtime", [ARUN, RUNC])
def test_task_errors(ctx: Ctx, runtime: str) -> None:
    r = ctx.ctr("task", "start", "nothing", check=False)
    assert r.returncode != 0 and "not found" in r.stderr
    ctx.run_d("c1", "sleep", "1000", runtime=runtime)
    # A second task for the same container.
    r = ctx.ctr("task", "start", "c1", check=False)
    assert r.returncode != 0 and "already exists" in r.stderr
    r = ctx.ctr("task", "delete", "c1", check=False)
    assert r.returncode != 0  # running
    assert ctx.status("c1") == "RUNNING"
    r = ctx.ctr("task", "checkpoint", "c1", check=False)
    assert r.returncode != 0 and "not supported" in r.stderr
    ctx.ctr("task", "kill", "-s", "SIGKILL", "c1")
    wait_until(lambda: ctx.status("c1") == "STOPPED", "c1 to stop")
    assert ctx.delete("c1") == 137
    assert ctx.tasks() == {}


def run_in_pty(cmd: list[str], rows: int, cols: int, timeout: float = 30.0) -> tuple[int, str]:
    """Run ``cmd`` with a pseudo-terminal of ``rows`` x ``cols`` as its stdio; (exit status,
    what it wrote)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    try:
        proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    finally:
        os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: every slave end closed
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, out.decode(errors="replace")


@pytest.mark.parametrize("runtime", [ARUN, RUNC])
def test_run_with_a_terminal(ctx: Ctx, runtime: str) -> None:
    cmd = ["ctr", "--address", str(ctx.daemon.address), "--namespace", ctx.ns, "run", "-t", "--rm"]
    cmd += ["--runtime", runtime, IMAGE, "c1", "sh", "-c", "tty; sleep 1; stty size; exit 5"]
    code, out = run_in_pty(cmd, 37, 101)
    assert code == 5, out
    assert "/dev/pts/0" in out
    # ctr sizes the container's terminal like its own (ResizePty) once the task started.
    assert "37 101" in out, out
    assert ctx.tasks() == {}


def shim_pids(ctx: Ctx) -> dict[str, int]:
    """Task id → pid of the shim process serving it (the shim works in the bundle)."""
    out = {}
    base = ctx.daemon.state / "io.containerd.runtime.v2.task" / ctx.ns
    for pid in processes_in(base):
        cwd = os.readlink(f"/proc/{pid}/cwd")
        out[Path(cwd).name] = pid
    return out


class Events:
    """``ctr events`` in the background."""

    def __init__(self, ctx: Ctx) -> None:
        cmd = ["ctr", "--address", str(ctx.daemon.address), "events"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.lines: list[str] = []
        os.set_blocking(self.proc.stdout.fileno(), False)  # type: ignore[union-attr]
        time.sleep(0.3)  # subscribed

    def read(self) -> list[str]:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                return self.lines
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.read():
                if re.search(pattern, line):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no event matching {pattern!r} in {self.lines}")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.mark.parametrize("runtime", [ARUN, RUNC])
def test_task_events(ctx: Ctx, runtime: str) -> None:
    ev = Events(ctx)
    try:
        ctx.run_d("c1", "sh", "-c", "exit 4", runtime=runtime)
        ev.wait_for(rf"{ctx.ns} /tasks/create .*c1")
        ev.wait_for(rf"{ctx.ns} /tasks/start .*c1")
        exit_line = ev.wait_for(rf"{ctx.ns} /tasks/exit .*c1")
        assert '"exit_status":4' in exit_line.replace(" ", "")
        assert ctx.delete("c1") == 4
        ev.wait_for(rf"{ctx.ns} /tasks/delete .*c1")
        topics = [re.search(r" (/tasks/[a-z-]+) ", line) for line in ev.lines if ctx.ns in line]
        order = [m.group(1) for m in topics if m and m.group(1).startswith("/tasks/")]
        assert order[:4] == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]
    finally:
        ev.close()


@pytest.mark.parametrize("runtime", [ARUN, RUNC])
def test_killed_shim_reports_exit_and_leaks_nothing(ctx: Ctx, runtime: str) -> None:
    ctx.run_d("c1", "sleep", "1000", runtime=runtime)
    pid, _ = ctx.tasks()["c1"]
    shim = shim_pids(ctx)["c1"]
    bundle = ctx.daemon.state / "io.containerd.runtime.v2.task" / ctx.ns / "c1"
    assert mounts_under(bundle)
    cgroups = [d / "c1" for d in cgroup_dirs(ctx.ns)]
    assert any(c.is_dir() for c in cgroups)
    # The container's cgroup in every hierarchy it joined.
    joined = cgroups_of(pid)
    assert len(joined) >= 5 and all(c.is_dir() for c in joined), joined
    runc_state = [root / ctx.ns / "c1" for root in (Path("/run/arun/runc"), Path("/run/containerd/runc"))]
    assert sum(r.is_dir() for r in runc_state) == 1
    work = ctx.daemon.root / "io.containerd.runtime.v2.task" / ctx.ns / "c1"
    assert work.is_dir()
    address = (bundle / "address").read_text().strip()
    socket = Path(address.removeprefix("unix://"))
    assert socket.is_socket()
    ev = Events(ctx)
    try:
        os.kill(shim, signal.SIGKILL)
        line = ev.wait_for(rf"{ctx.ns} /tasks/exit .*c1")
        assert '"exit_status":137' in line.replace(" ", "") or '"exit_status":255' in line.replace(" ", "")
        ev.wait_for(rf"{ctx.ns} /tasks/delete .*c1")
    finally:
        ev.close()
    wait_until(lambda: "c1" not in ctx.tasks(), "the task to be gone")
    wait_until(lambda: not pid_alive(pid), "the container process to be gone", 10)
    wait_until(lambda: not bundle.exists(), "the bundle to be removed", 10)
    assert mounts_under(bundle) == []
    assert not any(c.exists() for c in cgroups)
    assert [c for c in joined if c.exists()] == [], "cgroups left"
    assert processes_in(ctx.daemon.state) == []
    assert not any(r.exists() for r in runc_state), "runc state left"
    assert not work.exists(), "work directory left"
    assert not socket.exists(), "shim socket left"
    # The container record is still there; a new task can be made for it.
    ctx.ctr("task", "start", "-d", "c1")
    assert ctx.status("c1") == "RUNNING"


@pytest.mark.parametrize("runtime", [ARUN, RUNC])
def test_oom_kill_is_reported(ctx: Ctx, runtime: str) -> None:
    ev = Events(ctx)
    try:
        # dd allocates its block size: 256 MiB against a 32 MiB limit.
        r = ctx.ctr(
            "run", "--rm", "--runtime", runtime, "--memory-limit", str(32 << 20), IMAGE, "c1",
            "dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1",
            check=False,
        )  # fmt: skip
        assert r.returncode == 137, r.stderr
        ev.wait_for(rf"{ctx.ns} /tasks/oom .*c1")
        line = ev.wait_for(rf"{ctx.ns} /tasks/exit .*c1")
        assert '"exit_status":137' in line.replace(" ", "")
    finally:
        ev.close()


@pytest.mark.slow
def test_containers_outlive_a_killed_daemon(
    daemon_factory: Callable[..., Daemon], image: ArchiveImage
) -> None:
    # The first daemon is killed, not stopped: it is not the factory's to stop and clean up.
    first = Daemon.start()
    ctx = Ctx(first, image)
    try:
        ids = [f"c{i:02d}" for i in range(20)]
        for i, id in enumerate(ids):
            # Mostly arun's shim, and some of containerd's.
            runtime = RUNC if i % 5 == 4 else ARUN
            cmd = ("sh", "-c", "sleep 2; exit 42") if id == "c00" else ("sleep", "1000")
            ctx.run_d(id, *cmd, runtime=runtime)
        before = ctx.tasks()
        assert len(before) == 20
        shims = shim_pids(ctx)
        # c02's shim (arun's) and c09's (the Go shim) die while the daemon is down.
        dead = {"c02": shims.pop("c02"), "c09": shims.pop("c09")}
        dead_cgroups = [c for id in dead for c in cgroups_of(before[id][0])]
        dead_sockets = [
            Path(
                (ctx.daemon.state / "io.containerd.runtime.v2.task" / ctx.ns / id / "address")
                .read_text()
                .strip()
                .removeprefix("unix://")
            )
            for id in dead
        ]
        assert all(s.is_socket() for s in dead_sockets)

        first.proc.send_signal(signal.SIGKILL)
        first.returncode = first.proc.wait()
        for pid in dead.values():
            os.kill(pid, signal.SIGKILL)
        time.sleep(3)  # c00 exits while the daemon is down
        ctx.daemon = daemon_factory(base=first.base)

        after = ctx.tasks()
        live = [id for id in ids if id not in dead]
        assert sorted(after) == live
        assert after["c00"][1] == "STOPPED"
        for id in live[1:]:
            assert after[id] == before[id], id
            assert pid_alive(after[id][0])
        assert set(shim_pids(ctx).values()) == set(shims.values())
        # The dead shims' tasks: cleaned up at start-up, nothing left of them.
        for id in dead:
            assert not pid_alive(before[id][0]), id
            assert not (ctx.daemon.state / "io.containerd.runtime.v2.task" / ctx.ns / id).exists()
            assert mounts_under(ctx.daemon.state / "io.containerd.runtime.v2.task" / ctx.ns / id) == []
        wait_until(lambda: not any(c.exists() for c in dead_cgroups), "the dead tasks' cgroups to go", 10)
        assert [s for s in dead_sockets if s.exists()] == []
        # Their containers can run again.
        ctx.ctr("task", "start", "-d", "c02")
        assert ctx.status("c02") == "RUNNING"
        # Reported with its exit code.
        assert ctx.delete("c00") == 42
        # Still manageable: exec, kill, delete.
        out = ctx.ctr("task", "exec", "--exec-id", "x", "c01", "echo", "alive")
        assert out.stdout == "alive\n"
        out = ctx.ctr("task", "exec", "--exec-id", "x", "c04", "echo", "alive")
        assert out.stdout == "alive\n"
        ctx.ctr("task", "kill", "-s", "SIGKILL", "c01")
        wait_until(lambda: ctx.status("c01") == "STOPPED", "c01 to stop")
        assert ctx.delete("c01") == 137
        assert len(ctx.tasks()) == 17
    finally:
        if ctx.daemon is first:
            # Failed before the restart: a daemon on the same state cleans up the containers.
            if first.proc.poll() is not None:
                ctx.daemon = Daemon.start(base=first.base)
            ctx.cleanup()
            ctx.daemon.stop()
        else:
            ctx.cleanup()
            assert processes_in(ctx.daemon.state) == []
            assert mounts_under(ctx.daemon.base) == []
