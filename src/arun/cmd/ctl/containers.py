"""``arun run|ps|exec|logs|kill|rm``: containers and tasks through containerd's API, ctr-style.

``run`` creates the container from a local image, its task, and (``--net cni``)
attaches the task's network namespace to the CNI network of ``--cni-conf-dir``
before starting it. In the foreground the container's stdio is the
terminal's, signals are forwarded, and the exit status is the container's;
with ``-d`` its output goes to a log file (``arun logs``). A run that fails
before its process started removes everything it created.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Coroutine, Iterator
from typing import IO, TYPE_CHECKING, Any

from arun import errdefs
from arun.cmd.ctl.common import add_global_flags, client_from, run_command
from arun.cmd.ctl.output import Column, ago, emit

if TYPE_CHECKING:
    from arun.client import Client, Mount
    from arun.client.tasks import Process, Task

__all__ = ["add_parsers", "main", "parse_mount"]

LABEL_LOG = "io.arun.log-path"
LABEL_CNI = "io.arun.cni-conf-dir"
LABEL_CNI_BIN = "io.arun.cni-bin-dirs"
DEFAULT_LOG_DIR = "/var/log/arun/containers"
DEFAULT_CNI_CONF_DIR = "/etc/cni/net.d"
DEFAULT_CNI_BIN_DIRS = "/opt/cni/bin:/usr/lib/cni"


def parse_mount(spec: str) -> Mount:
    """ctr's ``--mount type=bind,src=/a,dst=/b,options=rbind:ro``."""
    from arun.client import Mount

    fields: dict[str, str] = {}
    for part in spec.split(","):
        k, sep, v = part.partition("=")
        if not sep:
            raise errdefs.InvalidArgumentError(f"mount {spec!r}: {part!r} is not key=value")
        fields[k.strip().lower()] = v
    target = fields.pop("dst", "") or fields.pop("destination", "") or fields.pop("target", "")
    source = fields.pop("src", "") or fields.pop("source", "")
    mtype = fields.pop("type", "bind")
    options = tuple(o for o in fields.pop("options", "").split(":") if o)
    if fields:
        raise errdefs.InvalidArgumentError(f"mount {spec!r}: unknown field {next(iter(fields))!r}")
    if not target.startswith("/"):
        raise errdefs.InvalidArgumentError(f"mount {spec!r}: dst must be an absolute path")
    if mtype == "bind" and not options:
        options = ("rbind",)
    return Mount(type=mtype, source=source, target=target, options=options)


def _flags(p: argparse.ArgumentParser) -> None:
    add_global_flags(p, top=False)


def add_parsers(sub: Any) -> None:
    run = sub.add_parser("run", help="run a container from a local image: IMAGE ID [COMMAND [ARG...]]")
    _flags(run)
    run.add_argument("--rm", action="store_true", help="remove the container when it exits")
    run.add_argument(
        "-d", "--detach", action="store_true", help="start it and return; output goes to its log"
    )
    run.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
    run.add_argument("-i", "--interactive", action="store_true", help="attach stdin")
    run.add_argument("-e", "--env", action="append", default=[], help="environment variable NAME=VALUE")
    run.add_argument(
        "--mount",
        action="append",
        default=[],
        help="type=bind,src=/host,dst=/ctr,options=rbind:ro (repeatable)",
    )
    run.add_argument("--net", choices=["none", "host", "cni"], default="none", help="network (default: none)")
    run.add_argument("--cni-conf-dir", default=DEFAULT_CNI_CONF_DIR, help="CNI configs for --net cni")
    run.add_argument("--cni-bin-dir", default=DEFAULT_CNI_BIN_DIRS, help="CNI plugin dirs (colon separated)")
    run.add_argument("-u", "--user", default=None, help="user[:group] (name or id)")
    run.add_argument("-w", "--cwd", default=None, help="working directory")
    run.add_argument("--hostname", default=None)
    run.add_argument("--label", action="append", default=[], help="container label KEY=VALUE")
    run.add_argument("--runtime", default=None, help="runtime (default io.containerd.runc.v2)")
    run.add_argument("--snapshotter", default=None)
    run.add_argument("--read-only", action="store_true", help="read-only root filesystem")
    run.add_argument(
        "--log-dir",
        default=os.environ.get("ARUN_LOG_DIR", DEFAULT_LOG_DIR),
        help=f"where -d writes logs (default $ARUN_LOG_DIR or {DEFAULT_LOG_DIR})",
    )
    run.add_argument("image", help="image name (as in 'arun images ls')")
    run.add_argument("id", help="container id")
    run.add_argument(
        "argv", metavar="COMMAND", nargs=argparse.REMAINDER, help="command and arguments (default: image's)"
    )

    ps = sub.add_parser("ps", help="list containers and their tasks")
    _flags(ps)
    ps.add_argument("filters", nargs="*", help="containerd filters, e.g. labels.app==web")
    ps.add_argument("-q", "--quiet", action="store_true", help="print only ids")

    ex = sub.add_parser("exec", help="run a command in a running container: ID COMMAND [ARG...]")
    _flags(ex)
    ex.add_argument("-t", "--tty", action="store_true")
    ex.add_argument("-i", "--interactive", action="store_true")
    ex.add_argument("-d", "--detach", action="store_true", help="start it and return")
    ex.add_argument("--exec-id", default=None, help="process id (default: a random one)")
    ex.add_argument("-e", "--env", action="append", default=[])
    ex.add_argument("-u", "--user", default=None, help="uid[:gid]")
    ex.add_argument("-w", "--cwd", default=None)
    ex.add_argument("id")
    ex.add_argument("argv", metavar="COMMAND", nargs=argparse.REMAINDER)

    logs = sub.add_parser("logs", help="print a container's output (run -d, or a CRI container)")
    _flags(logs)
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the container exits")
    logs.add_argument("--tail", type=int, default=None, help="only the last N lines")
    logs.add_argument("id")

    kill = sub.add_parser("kill", help="signal containers' tasks")
    add_global_flags(kill, top=False, short_address=False)
    kill.add_argument("-s", "--signal", default="SIGTERM", help="signal name or number (default SIGTERM)")
    kill.add_argument("-a", "--all", action="store_true", help="every process of the task")
    kill.add_argument("ids", nargs="+")

    rm = sub.add_parser("rm", help="remove containers (their stopped tasks, snapshots, networks, logs)")
    _flags(rm)
    rm.add_argument("-f", "--force", action="store_true", help="kill running tasks first")
    rm.add_argument("ids", nargs="+")


# -- helpers ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _raw_terminal(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    # TCSADRAIN, not setraw's default TCSAFLUSH: what was typed while the container was
    # being created reaches it instead of being thrown away.
    tty.setraw(fd, termios.TCSADRAIN)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _terminal_size() -> tuple[int, int]:
    try:
        sz = os.get_terminal_size(sys.stdout.fileno())
        return sz.columns, sz.lines
    except OSError:
        return 0, 0


async def _follow_terminal_size(p: Process) -> None:
    """Give the process our terminal's size now and after every SIGWINCH (until the command ends)."""

    async def resize() -> None:
        w, h = _terminal_size()
        if w and h:
            with contextlib.suppress(errdefs.ArunError):
                await p.resize(w, h)

    await resize()
    if sys.stdout.isatty():
        asyncio.get_running_loop().add_signal_handler(signal.SIGWINCH, lambda: _background(resize()))


def _pod_network(conf_dir: str, bin_dirs: str) -> Any:
    from arun.cni import PodNetwork

    return PodNetwork(conf_dir=conf_dir, bin_dirs=[d for d in bin_dirs.split(":") if d])


def _cni_request(namespace: str, cid: str) -> Any:
    from arun.cni import PodNetworkRequest

    return PodNetworkRequest(sandbox_id=f"{namespace}-{cid}", pod_namespace=namespace, pod_name=cid)


async def _remove(c: Client, cid: str, *, force: bool) -> None:
    """Remove container ``cid`` with what it owns: task, snapshot, CNI attachment, log file."""
    from arun.client import TaskStatus

    ctr = await c.containers.get(cid)
    info = ctr.cached_info
    try:
        task = await c.task(cid)
    except (errdefs.NotFoundError, errdefs.UnimplementedError):
        task = None
    if task is not None:
        st = await task.status()
        if st not in (TaskStatus.STOPPED, TaskStatus.CREATED) and not force:
            raise errdefs.FailedPreconditionError(f"container {cid!r} is {st}: stop it first or use --force")
        await task.delete(force=True)
    conf = info.labels.get(LABEL_CNI)
    if conf:
        await _pod_network(conf, info.labels.get(LABEL_CNI_BIN, DEFAULT_CNI_BIN_DIRS)).teardown(
            _cni_request(c.namespace, cid), ""
        )
    await ctr.delete()
    log_path = info.labels.get(LABEL_LOG)
    if log_path:
        with contextlib.suppress(OSError):
            await asyncio.to_thread(os.unlink, log_path)


_BACKGROUND: set[asyncio.Future[None]] = set()


def _background(coro: Coroutine[Any, Any, None]) -> None:
    t = asyncio.ensure_future(coro)
    _BACKGROUND.add(t)
    t.add_done_callback(_BACKGROUND.discard)


async def _forward_signals(task: Task) -> list[int]:
    loop = asyncio.get_running_loop()
    sigs = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT]

    def forward(s: int) -> None:
        t = asyncio.ensure_future(_quiet_kill(task, s))
        _BACKGROUND.add(t)
        t.add_done_callback(_BACKGROUND.discard)

    for s in sigs:
        loop.add_signal_handler(s, forward, s)
    return [int(s) for s in sigs]


async def _quiet_kill(task: Task, sig: int) -> None:
    with contextlib.suppress(errdefs.ArunError):
        await task.kill(sig)


def _stop_forwarding(sigs: list[int]) -> None:
    loop = asyncio.get_running_loop()
    for s in sigs:
        loop.remove_signal_handler(s)


# -- commands ---------------------------------------------------------------------------------------


async def _run(args: argparse.Namespace, stdout: IO[str]) -> int:
    if args.rm and args.detach:
        raise errdefs.InvalidArgumentError("--rm and --detach cannot be combined")
    labels = {}
    for kv in args.label:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            raise errdefs.InvalidArgumentError(f"label {kv!r}: expected KEY=VALUE")
        labels[k] = v
    mounts = [parse_mount(m) for m in args.mount]
    command = list(args.argv)
    if command and command[0] == "--":
        command = command[1:]
    log_path = None
    if args.detach:
        log_path = os.path.join(os.getcwd(), args.log_dir, args.namespace, f"{args.id}.log")
        labels[LABEL_LOG] = log_path
    if args.net == "cni":
        labels[LABEL_CNI] = args.cni_conf_dir
        labels[LABEL_CNI_BIN] = args.cni_bin_dir
    async with client_from(args) as c:
        ctr = await c.containers.create(
            args.id,
            args.image,
            command=command or None,
            env=args.env,
            mounts=mounts,
            runtime=args.runtime,
            snapshotter=args.snapshotter,
            labels=labels,
            tty=args.tty,
            cwd=args.cwd,
            user=args.user,
            hostname=args.hostname,
            net_host=args.net == "host",
            readonly_rootfs=args.read_only,
        )
        started = False
        networked = False
        try:
            if log_path is not None:
                await asyncio.to_thread(os.makedirs, os.path.dirname(log_path), 0o755, True)
                task = await ctr.new_task(log_file=log_path, tty=args.tty)
            else:
                # stdin only with -i, as docker does: with a terminal, the runc shims shut the
                # console down when stdin ends, which could cut off output still being written.
                stdin = sys.stdin.buffer if args.interactive else None
                task = await ctr.new_task(
                    stdin=stdin,
                    stdout=sys.stdout.buffer,
                    stderr=None if args.tty else sys.stderr.buffer,
                    tty=args.tty,
                )
            if args.net == "cni":
                await _pod_network(args.cni_conf_dir, args.cni_bin_dir).setup(
                    _cni_request(c.namespace, args.id), f"/proc/{task.pid}/ns/net"
                )
                networked = True
            raw = args.tty and not args.detach and sys.stdin.isatty()
            with _raw_terminal(raw):
                waiter = None if args.detach else asyncio.ensure_future(task.wait())
                if args.tty and not args.detach:
                    # Before start (the console exists since create): what the process does first,
                    # with input typed ahead, already sees our terminal's size.
                    await _follow_terminal_size(task)
                await task.start()
                started = True
                if args.detach:
                    if args.output == "table":
                        stdout.write(f"{args.id}\n")
                    else:
                        emit(stdout, args.output, {"id": args.id, "pid": task.pid, "log": log_path})
                    return 0
                assert waiter is not None
                if task.io is not None and args.interactive:
                    _background(_close_stdin_at_eof(task))
                sigs = await _forward_signals(task)
                try:
                    status = await waiter
                finally:
                    _stop_forwarding(sigs)
            await task.delete()
            if args.rm:
                await _remove(c, args.id, force=True)
            return status.code
        except BaseException:
            if not started:
                # Nothing of this run may stay behind: task, network, container, snapshot, log.
                with contextlib.suppress(errdefs.ArunError):
                    t = await c.task(args.id)
                    await t.delete(force=True)
                if networked or args.net == "cni":
                    with contextlib.suppress(Exception):
                        await _pod_network(args.cni_conf_dir, args.cni_bin_dir).teardown(
                            _cni_request(c.namespace, args.id), ""
                        )
                with contextlib.suppress(errdefs.ArunError):
                    await _remove(c, args.id, force=True)
            elif args.rm:
                # Started, then this command failed (its terminal went away, say): --rm still
                # means the container goes, with its task.
                with contextlib.suppress(errdefs.ArunError, OSError):
                    await _remove(c, args.id, force=True)
            raise


async def _close_stdin_at_eof(task: Process) -> None:
    with contextlib.suppress(errdefs.ArunError):
        await task.close_stdin()


async def _ps(args: argparse.Namespace, stdout: IO[str]) -> int:
    from arun.client import TaskStatus

    async with client_from(args) as c:
        infos = await c.containers.list(*args.filters)
        try:
            tasks = {t.id: t for t in await c.tasks()}
        except errdefs.UnimplementedError:
            tasks = {}
        recs = []
        for i in infos:
            t = tasks.get(i.id)
            recs.append(
                {
                    "id": i.id,
                    "image": i.image,
                    "runtime": i.runtime,
                    "status": str(t.status) if t else "no task",
                    "pid": t.pid if t and t.pid else None,
                    "exit_status": t.exit_status if t and t.status == TaskStatus.STOPPED else None,
                    "created_at": i.created_at,
                    "labels": dict(i.labels),
                }
            )
        cols = [
            Column("CONTAINER", "id"),
            Column("IMAGE", "image"),
            Column("STATUS", "status"),
            Column("PID", "pid", right=True),
            Column("CREATED", "created_at", ago),
            Column("RUNTIME", "runtime"),
        ]
        emit(stdout, args.output, recs, cols, quiet_key="id", quiet=args.quiet)
    return 0


async def _exec(args: argparse.Namespace, stdout: IO[str]) -> int:
    command = list(args.argv)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise errdefs.InvalidArgumentError("exec: no command given")
    user = None
    if args.user:
        u, _, g = args.user.partition(":")
        if not u.isdigit() or (g and not g.isdigit()):
            raise errdefs.InvalidArgumentError(f"exec --user {args.user!r}: give uid[:gid]")
        user = (int(u), int(g or 0))
    exec_id = args.exec_id or f"exec-{os.urandom(4).hex()}"
    async with client_from(args) as c:
        task = await c.task(args.id)
        interactive = args.interactive
        raw = args.tty and not args.detach and sys.stdin.isatty()
        with _raw_terminal(raw):
            p = await task.exec(
                exec_id,
                command,
                env=args.env,
                cwd=args.cwd,
                user=user,
                terminal=args.tty,
                stdin=sys.stdin.buffer if interactive and not args.detach else None,
                stdout=None if args.detach else sys.stdout.buffer,
                stderr=None if args.detach or args.tty else sys.stderr.buffer,
                start=False,
            )
            try:
                waiter = asyncio.ensure_future(p.wait())
                await p.start()
                if args.detach:
                    waiter.cancel()
                    if args.output == "table":
                        stdout.write(f"{exec_id}\n")
                    else:
                        emit(stdout, args.output, {"id": args.id, "exec_id": exec_id, "pid": p.pid})
                    return 0
                if args.tty:
                    await _follow_terminal_size(p)
                if interactive:
                    _background(_close_stdin_at_eof(p))
                status = await waiter
            except BaseException:
                with contextlib.suppress(errdefs.ArunError):
                    await p.kill(signal.SIGKILL)
                raise
            finally:
                if not args.detach:
                    with contextlib.suppress(errdefs.ArunError):
                        await p.delete()
        return status.code


def _cri_log_line(line: bytes) -> bytes:
    """The message of a CRI log line (``<time> <stream> <P|F> <message>``); partial lines get no newline."""
    parts = line.rstrip(b"\n").split(b" ", 3)
    if len(parts) == 4 and parts[1] in (b"stdout", b"stderr"):
        return parts[3] + (b"" if parts[2] == b"P" else b"\n")
    return line


async def _logs(args: argparse.Namespace, stdout: IO[str]) -> int:
    from arun.client import TaskStatus

    async with client_from(args) as c:
        path = ""
        cri = False
        try:
            info = await c.containers.info(args.id)
            path = info.labels.get(LABEL_LOG, "")
        except errdefs.NotFoundError:
            if args.namespace != "k8s.io":
                raise
        if not path:
            from arun.bench.cri import CRI

            async with CRI(args.address) as crc:
                st = await crc.call("ContainerStatus", crc.pb.ContainerStatusRequest(container_id=args.id))
                path, cri = st.status.log_path, True
            if not path:
                raise errdefs.NotFoundError(f"container {args.id!r} has no log (run it with -d)")
        out = sys.stdout.buffer
        try:
            f = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError:
            raise errdefs.NotFoundError(f"log file {path!r} of container {args.id!r} is missing") from None
        with f:
            data = await asyncio.to_thread(f.read)
            lines = data.splitlines(keepends=True)
            if args.tail is not None:
                lines = lines[-args.tail :] if args.tail > 0 else []
            out.write(b"".join(_cri_log_line(x) if cri else x for x in lines))
            out.flush()
            while args.follow:
                chunk = await asyncio.to_thread(f.read)
                if chunk:
                    out.write(
                        b"".join(_cri_log_line(x) if cri else x for x in chunk.splitlines(keepends=True))
                    )
                    out.flush()
                    continue
                try:
                    st = await (await c.task(args.id)).status() if not cri else TaskStatus.RUNNING
                except errdefs.NotFoundError:
                    st = TaskStatus.STOPPED
                if st == TaskStatus.STOPPED:
                    tail = await asyncio.to_thread(f.read)
                    out.write(tail)
                    out.flush()
                    break
                await asyncio.sleep(0.2)
    return 0


async def _kill(args: argparse.Namespace, stdout: IO[str]) -> int:
    from arun.client import parse_signal

    sig = parse_signal(args.signal)
    async with client_from(args) as c:
        for cid in args.ids:
            task = await c.task(cid)
            await task.kill(sig, all=args.all)
            if args.output == "table":
                stdout.write(f"{cid}\n")
        if args.output != "table":
            emit(stdout, args.output, {"signalled": list(args.ids), "signal": sig})
    return 0


async def _rm(args: argparse.Namespace, stdout: IO[str]) -> int:
    async with client_from(args) as c:
        removed: list[str] = []
        failed: list[str] = []
        first: errdefs.ArunError | None = None
        for cid in args.ids:
            try:
                await _remove(c, cid, force=args.force)
                removed.append(cid)
            except errdefs.ArunError as e:
                failed.append(cid)
                first = first or e
        if args.output == "table":
            for cid in removed:
                stdout.write(f"{cid}\n")
        else:
            emit(stdout, args.output, {"removed": removed, "failed": failed})
        if first is not None:
            raise first
    return 0


COMMANDS = {"run": _run, "ps": _ps, "exec": _exec, "logs": _logs, "kill": _kill, "rm": _rm}


def main(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    stdout = out or sys.stdout
    fn = COMMANDS[args.command]
    return run_command(lambda: fn(args, stdout))
