"""Small helpers the CRI RPCs share: ids, names, runtime options, label selectors."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

from arun.api.containerd.types.runc.options import oci_pb2 as runc_options
from arun.api.cri.runtime.v1 import api_pb2
from arun.core import typeurl
from arun.cri.config import Runtime
from arun.errdefs import InvalidArgumentError

RUNC_OPTIONS_TYPE_URL = "containerd.runc.v1.Options"
SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"

# Labels and extensions containerd's CRI puts on its container records.
LABEL_KIND = "io.cri-containerd.kind"
KIND_SANDBOX = "sandbox"
KIND_CONTAINER = "container"
EXT_SANDBOX_METADATA = "io.cri-containerd.sandbox.metadata"
EXT_CONTAINER_METADATA = "io.cri-containerd.container.metadata"

# Spec annotations (containerd's internal/cri/annotations).
ANN_CONTAINER_TYPE = "io.kubernetes.cri.container-type"
ANN_SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
ANN_SANDBOX_NAMESPACE = "io.kubernetes.cri.sandbox-namespace"
ANN_SANDBOX_UID = "io.kubernetes.cri.sandbox-uid"
ANN_SANDBOX_NAME = "io.kubernetes.cri.sandbox-name"
ANN_SANDBOX_LOG_DIR = "io.kubernetes.cri.sandbox-log-directory"
ANN_SANDBOX_IMAGE_NAME = "io.kubernetes.cri.podsandbox.image-name"
ANN_CONTAINER_NAME = "io.kubernetes.cri.container-name"
ANN_IMAGE_NAME = "io.kubernetes.cri.image-name"
ANN_SANDBOX_CPU_PERIOD = "io.kubernetes.cri.sandbox-cpu-period"
ANN_SANDBOX_CPU_QUOTA = "io.kubernetes.cri.sandbox-cpu-quota"
ANN_SANDBOX_CPU_SHARES = "io.kubernetes.cri.sandbox-cpu-shares"
ANN_SANDBOX_MEMORY = "io.kubernetes.cri.sandbox-memory"
ANN_RUNTIME_HANDLER = "io.containerd.cri.runtime-handler"

_OPTION_NAME = re.compile(r"(?<!^)(?=[A-Z])")


def new_id() -> str:
    """A random 64-hex-digit id, as containerd's ``util.GenerateID``."""
    return secrets.token_hex(32)


def now_ns() -> int:
    return time.time_ns()


def sandbox_name(md: api_pb2.PodSandboxMetadata) -> str:
    return f"{md.name}_{md.namespace}_{md.uid}_{md.attempt}"


def container_name(c: api_pb2.ContainerMetadata, s: api_pb2.PodSandboxMetadata) -> str:
    return f"{c.name}_{s.name}_{s.namespace}_{s.uid}_{c.attempt}"


def match_labels(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def runtime_options(rt: Runtime) -> typeurl.Any | None:
    """The shim options of a runtime handler (``containerd.runc.v1.Options`` for runc-style shims).

    Keys may be written as Go field names (``BinaryName``) or proto names (``binary_name``).
    """
    if not rt.options:
        return None
    msg = runc_options.Options()
    fields = {f.name: f for f in msg.DESCRIPTOR.fields}
    for key, value in rt.options.items():
        name = key if key in fields else _OPTION_NAME.sub("_", key).lower()
        f = fields.get(name)
        if f is None:
            # containerd ignores options its Options type does not have (TypeUrl etc.).
            continue
        try:
            setattr(msg, name, value)
        except (TypeError, ValueError) as e:
            raise InvalidArgumentError(f"runtime option {key!r}: {e}") from e
    return typeurl.Any(RUNC_OPTIONS_TYPE_URL, msg.SerializeToString())


def runtime_name(rt: Runtime) -> str:
    return rt.runtime_path or rt.runtime_type


def any_of(type_url: str, value: bytes) -> typeurl.Any:
    return typeurl.Any(type_url, value)


def parse_signal(name: str) -> int:
    """A stop signal name (``SIGTERM``, ``TERM``, ``15``) as a number (0 if empty)."""
    import signal as _signal

    if not name:
        return 0
    if name.isdigit():
        return int(name)
    up = name.upper()
    if not up.startswith("SIG"):
        up = "SIG" + up
    try:
        return int(_signal.Signals[up])
    except KeyError:
        raise InvalidArgumentError(f"unknown stop signal {name!r}") from None


def signal_name(num: int) -> str:
    import signal as _signal

    try:
        return _signal.Signals(num).name
    except ValueError:
        return str(num)


def dict_without(d: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}
