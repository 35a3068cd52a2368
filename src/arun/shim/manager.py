"""The runtime v2 binary commands: ``start`` (find or launch the pod's shim) and ``delete``.

Both run as short-lived processes on the daemon's critical path, so this module imports only the
standard library and ``arun.shim.wire`` — no asyncio, no protobuf runtime.

``start``:

1. Parameters come from a ``BootstrapParams`` message on stdin (containerd ≥ 2.3, and arun's
   daemon), else from the flags and ``TTRPC_ADDRESS``/``GRPC_ADDRESS`` (stdin then holds, at most,
   the runtime options Any).
2. The grouping key is the ``io.containerd.runc.v2.group`` annotation of the bundle's config.json,
   else ``io.kubernetes.cri.sandbox-id``, else the task id: all containers of a pod share a shim.
3. The address is ``unix://<socket dir>/<sha256 of "<grpc address>/<namespace>/<group>">``.
4. If a live shim already listens there, its address is the answer. Otherwise ``start`` binds the
   socket, launches the server (``python -m arun.shim`` without an action, new session, the
   listener as fd 3, stdio on /dev/null) and answers without waiting: connections queue on the
   bound socket until the server accepts.
5. The answer is a ``BootstrapResult`` if the request was a ``BootstrapParams``; otherwise JSON
   ``{"version": 2, ...}`` for containerd 1.7 to 2.2 (they set ``MAX_SHIM_VERSION=2``; 1.7 refuses
   a higher version, 2.x talks Task v2 to a version-2 shim), and the bare address for containerd
   1.6, which reads the whole output as the address (``runtime/v2/binary.go`` at v1.6.20).
"""

from __future__ import annotations

import _socket  # not `socket`: this module must import fast, and needs nothing of the wrapper
import errno
import os
import sys
import time

from arun.shim import wire
from arun.shim.util import DEFAULT_RUNC_ROOT, record, resolve_binary

DEFAULT_SOCKET_DIR = "/run/containerd/s"
GROUP_ANNOTATIONS = ("io.containerd.runc.v2.group", "io.kubernetes.cri.sandbox-id")
MAX_STDIN = 10 << 20
SHIM_BINARY = "containerd-shim-arun-v1"

# Environment the server reads its runtime defaults from (set by ``start`` from bootstrap
# extensions; a wrapper script may set them too).
ENV_RUNC_BINARY = "ARUN_SHIM_RUNC_BINARY"
ENV_RUNC_ROOT = "ARUN_SHIM_RUNC_ROOT"
ENV_SYSTEMD_CGROUP = "ARUN_SHIM_SYSTEMD_CGROUP"
ENV_SOCKET_DIR = "ARUN_SHIM_SOCKET_DIR"


class UsageError(Exception):
    """Bad command line or input: printed, exit status 1."""


@record
class Flags:
    """The Go ``flag`` set of a runtime v2 shim (``-name value``, ``-name=value``, ``--name``)."""

    namespace: str = ""
    id: str = ""
    address: str = ""
    publish_binary: str = ""
    bundle: str = ""
    socket: str = ""
    debug: bool = False
    version: bool = False
    info: bool = False
    action: str = ""
    rest: list[str] = []


_VALUE_FLAGS = {"namespace", "id", "address", "publish-binary", "bundle", "socket"}
_BOOL_FLAGS = {"debug", "v", "version", "info"}


def parse_flags(argv: list[str]) -> Flags:
    f = Flags()
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-") or arg in ("-", "--"):
            if arg == "--":
                f.rest.extend(argv[i:])
                break
            if not f.action:
                f.action = arg
            else:
                f.rest.append(arg)
            continue
        name, eq, value = arg.lstrip("-").partition("=")
        if name in _BOOL_FLAGS:
            on = value.lower() not in ("false", "0") if eq else True
            if name in ("v", "version"):
                f.version = on
            else:
                setattr(f, name, on)
        elif name in _VALUE_FLAGS:
            if not eq:
                if i >= len(argv):
                    raise UsageError(f"flag needs an argument: -{name}")
                value = argv[i]
                i += 1
            setattr(f, name.replace("-", "_"), value)
        else:
            raise UsageError(f"flag provided but not defined: -{name}")
    return f


# -- addresses --------------------------------------------------------------------------------


def group_key(bundle: str, id: str) -> str:
    """The grouping key from the bundle's annotations (see the module docstring)."""
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as fh:
            raw = fh.read()
    except OSError:
        return id
    # Most specs carry neither annotation: then there is nothing to parse (json costs an import).
    if not any(key.encode() in raw for key in GROUP_ANNOTATIONS):
        return id
    import json

    try:
        spec = json.loads(raw)
    except ValueError:
        return id
    annotations = spec.get("annotations") if isinstance(spec, dict) else None
    if isinstance(annotations, dict):
        for key in GROUP_ANNOTATIONS:
            value = annotations.get(key)
            if isinstance(value, str) and value:
                return value
    return id


def socket_address(grpc_address: str, namespace: str, group: str, socket_dir: str) -> str:
    try:  # the builtin module: hashlib would load libcrypto for one digest
        from _sha256 import sha256  # type: ignore[import-not-found]
    except ImportError:  # pragma: no cover - interpreters without it
        from hashlib import sha256

    digest = sha256(f"{grpc_address}/{namespace}/{group}".encode()).hexdigest()
    return "unix://" + os.path.join(socket_dir, digest)


def socket_path(address: str) -> str:
    return address[len("unix://") :] if address.startswith("unix://") else address


def _alive(path: str, timeout: float = 0.1) -> bool:
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        s.settimeout(timeout)
        s.connect(path)
    except OSError:
        return False
    finally:
        s.close()
    return True


def listen(path: str) -> _socket.socket | None:
    """A listening socket at ``path``, or None if a live shim already listens there."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        try:
            s.bind(path)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            if _alive(path):
                s.close()
                return None
            os.unlink(path)  # stale: its shim is gone
            s.bind(path)
        os.chmod(path, 0o600)
        s.listen(128)
    except BaseException:
        s.close()
        raise
    return s


# -- start --------------------------------------------------------------------------------------


@record
class StartParams:
    namespace: str
    id: str
    grpc_address: str
    ttrpc_address: str
    publish_binary: str = ""
    socket_dir: str = DEFAULT_SOCKET_DIR
    debug: bool = False
    runc: wire.RuncOptions | None = None
    bootstrap: bool = False  # the request came as BootstrapParams


def start_params(flags: Flags, stdin: bytes, env: dict[str, str]) -> StartParams:
    params = wire.looks_like_bootstrap(stdin) if stdin else None
    if params is not None:
        runc = None
        for ext in params.extensions:
            runc = runc or wire.RuncOptions.from_any(ext)
        return StartParams(
            namespace=params.namespace,
            id=params.instance_id or flags.id,
            grpc_address=params.containerd_grpc_address or flags.address,
            ttrpc_address=params.containerd_ttrpc_address or env.get("TTRPC_ADDRESS", ""),
            publish_binary=params.containerd_binary or flags.publish_binary,
            socket_dir=params.socket_dir or env.get(ENV_SOCKET_DIR) or DEFAULT_SOCKET_DIR,
            debug=flags.debug or params.log_level < 0,
            runc=runc,
            bootstrap=True,
        )
    runc = None
    if stdin:
        try:
            runc = wire.RuncOptions.from_any(wire.AnyMessage.decode(stdin))
        except ValueError:
            runc = None
    return StartParams(
        namespace=flags.namespace,
        id=flags.id,
        grpc_address=flags.address or env.get("GRPC_ADDRESS", ""),
        ttrpc_address=env.get("TTRPC_ADDRESS", ""),
        publish_binary=flags.publish_binary,
        socket_dir=env.get(ENV_SOCKET_DIR) or DEFAULT_SOCKET_DIR,
        debug=flags.debug,
        runc=runc,
    )


def server_command(p: StartParams) -> list[str]:
    argv = [sys.executable, "-m", "arun.shim", "-namespace", p.namespace, "-id", p.id]
    argv += ["-address", p.grpc_address]
    if p.publish_binary:
        argv += ["-publish-binary", p.publish_binary]
    if p.debug:
        argv.append("-debug")
    return argv


def server_environment(p: StartParams, env: dict[str, str]) -> dict[str, str]:
    out = dict(env)
    out["TTRPC_ADDRESS"] = p.ttrpc_address
    out["GRPC_ADDRESS"] = p.grpc_address
    out["NAMESPACE"] = p.namespace
    if p.runc is not None:
        if p.runc.binary_name:
            out[ENV_RUNC_BINARY] = p.runc.binary_name
        if p.runc.root:
            out[ENV_RUNC_ROOT] = p.runc.root
        if p.runc.systemd_cgroup:
            out[ENV_SYSTEMD_CGROUP] = "1"
    return out


def shim_socket(namespace: str, id: str, bundle: str, grpc_address: str, socket_dir: str) -> tuple[str, str]:
    """The address (``unix://…``) and socket path of task ``id``'s shim, by containerd's rule
    (its pod's group, hashed with the daemon's address and namespace); UsageError for an empty
    namespace or id, or a path longer than a unix socket address allows."""
    if not namespace:
        raise UsageError("shim namespace cannot be empty")
    if not id:
        raise UsageError("shim id cannot be empty")
    address = socket_address(grpc_address, namespace, group_key(bundle, id), socket_dir)
    path = socket_path(address)
    if len(path.encode()) > 107:
        raise UsageError(f"socket path {path!r} is longer than a unix socket address allows")
    return address, path


def write_atomic(path: str, data: str) -> None:
    """Write ``data`` to ``path`` through a temporary file renamed over it (a reader sees the
    old content or the new, never a part)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(data)
    os.replace(tmp, path)


def link_socket_dir(bundle: str, socket_dir: str) -> None:
    """The bundle's ``s``: a symbolic link to the shims' socket directory (replacing one
    already there)."""
    link = os.path.join(bundle, "s")
    try:
        os.unlink(link)
    except FileNotFoundError:
        pass
    os.symlink(socket_dir, link)


def start(flags: Flags, stdin: bytes, env: dict[str, str], bundle: str) -> bytes:
    """Run ``start``; returns what to write on stdout."""
    p = start_params(flags, stdin, env)
    address, path = shim_socket(p.namespace, p.id, bundle, p.grpc_address, p.socket_dir)
    if p.bootstrap and p.socket_dir:
        link_socket_dir(bundle, p.socket_dir)
    listener = listen(path)
    if listener is not None:
        try:
            pid = spawn_server(p, listener.fileno(), env)
        except BaseException:
            listener.close()
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            raise
        listener.close()
        write_atomic(os.path.join(bundle, "shim.pid"), str(pid))
    # containerd 1.x reads `address` when it reconnects after a restart.
    write_atomic(os.path.join(bundle, "address"), address)
    if p.bootstrap:
        return wire.bootstrap_result(address, 3)
    if env.get("MAX_SHIM_VERSION"):
        import json

        return json.dumps({"version": 2, "address": address, "protocol": "ttrpc"}).encode()
    return address.encode()


def spawn_server(p: StartParams, listener_fd: int, env: dict[str, str]) -> int:
    """Launch the long-running server detached (new session), the listener as its fd 3."""
    import _signal  # type: ignore[import-not-found]  # not `signal`, which imports enum

    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        src = listener_fd
        if src <= 3:
            src = os.dup(listener_fd)
        try:
            argv = server_command(p)
            return os.posix_spawn(
                argv[0],
                argv,
                server_environment(p, env),
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, null, 0),
                    (os.POSIX_SPAWN_DUP2, null, 1),
                    (os.POSIX_SPAWN_DUP2, null, 2),
                    (os.POSIX_SPAWN_DUP2, src, 3),
                ],
                setsid=True,
                setsigdef=(_signal.SIGPIPE, _signal.SIGXFSZ),
            )
        finally:
            if src != listener_fd:
                os.close(src)
    finally:
        os.close(null)


# -- delete --------------------------------------------------------------------------------------


def delete(flags: Flags, env: dict[str, str], bundle: str) -> bytes:
    """Run ``delete``: force-delete the container, unmount its rootfs, report it killed."""
    if not flags.namespace:
        raise UsageError("shim namespace cannot be empty")
    if not flags.id:
        raise UsageError("shim id cannot be empty")
    bundle = flags.bundle or bundle
    recorded = _read_options(bundle)
    binary = str(recorded.get("binary_name") or env.get(ENV_RUNC_BINARY) or "runc")
    root = str(recorded.get("root") or env.get(ENV_RUNC_ROOT) or DEFAULT_RUNC_ROOT)
    argv = [binary, "--root", os.path.join(root, flags.namespace)]
    if recorded.get("systemd_cgroup"):
        argv.append("--systemd-cgroup")
    argv += ["--log", os.path.join(bundle, "log.json"), "--log-format", "json", "delete", "--force", flags.id]
    status, raw = _run(argv)
    err = raw.decode(errors="replace").strip()
    if status != 0 and "does not exist" not in err and "not found" not in err.lower():
        sys.stderr.write(f"runc delete --force {flags.id}: {err or f'exit status {status}'}\n")
    rootfs = os.path.join(bundle, "rootfs")
    if os.path.isdir(rootfs):
        from arun.shim.mount import SysMounter

        try:
            SysMounter().unmount_all(rootfs)
        except Exception as exc:
            sys.stderr.write(f"unmount {rootfs}: {exc}\n")
    pid = 0
    try:
        with open(os.path.join(bundle, "init.pid")) as fh:
            pid = int(fh.read().strip())
    except (OSError, ValueError):
        pass
    return wire.delete_response(pid, 128 + 9, time.time_ns())


def _read_options(bundle: str) -> dict[str, object]:
    import json

    try:
        with open(os.path.join(bundle, "options.json")) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _run(argv: list[str], capture_fd: int = 2) -> tuple[int, bytes]:
    """Run a command to completion, capturing its stdout (1) or stderr (2); returns (status,
    output). This short-lived process has no reaper and no other child, so waiting here steals
    nothing."""
    try:
        path = resolve_binary(argv[0])
    except FileNotFoundError as exc:
        return 127, str(exc).encode()
    r, w = os.pipe2(os.O_CLOEXEC)
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        actions = [(os.POSIX_SPAWN_DUP2, w if fd == capture_fd else null, fd) for fd in (0, 1, 2)]
        pid = os.posix_spawn(path, argv, dict(os.environ), file_actions=actions)
    finally:
        os.close(w)
        os.close(null)
    with os.fdopen(r, "rb") as fh:
        out = fh.read()
    _, wait_status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(wait_status), out


# -- info / version -------------------------------------------------------------------------------


def version_text() -> str:
    from arun import __version__

    return f"{SHIM_BINARY}:\n  Version:  {__version__}\n  Python version: {sys.version.split()[0]}\n"


def info(stdin: bytes) -> bytes:
    """``-info``: a serialized containerd.types.RuntimeInfo."""
    from arun import __version__
    from arun.api.containerd.types import introspection_pb2

    resp = introspection_pb2.RuntimeInfo(name="io.containerd.arun.v1")
    resp.version.version = __version__
    binary = "runc"
    if stdin:
        opts = wire.AnyMessage.decode(stdin)
        resp.options.type_url = opts.type_url
        resp.options.value = opts.value
        runc = wire.RuncOptions.from_any(opts)
        if runc is not None and runc.binary_name:
            binary = runc.binary_name
    status, features = _run([binary, "features"], capture_fd=1)
    if status == 0 and features:
        resp.features.type_url = "types.containerd.io/opencontainers/runtime-spec/1/features/Features"
        resp.features.value = features
    data: bytes = resp.SerializeToString()
    return data
