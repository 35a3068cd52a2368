"""The gRPC services arun's protos define, read from the generated descriptors.

The daemon answers every method of these services: a plugin's handler where
one is registered, UNIMPLEMENTED otherwise. Services reached over ttrpc only
(the shim task API, the events forwarder, the sandbox controller in shims)
are not served on the gRPC socket.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from google.protobuf import descriptor, message_factory
from grpclib.const import Cardinality, Handler

from arun.plugin.grpc import unimplemented_method

# Generated packages holding the services of the gRPC socket: containerd's API and CRI.
GRPC_API_PACKAGES = ("arun.api.containerd.services", "arun.api.cri")
# Proto package name components of services that only travel over ttrpc.
_TTRPC_ONLY = ("ttrpc",)


@dataclass(frozen=True)
class Method:
    path: str  # "/containerd.services.version.v1.Version/Version"
    name: str
    cardinality: Cardinality
    request_type: type[Any]
    reply_type: type[Any]


@dataclass(frozen=True)
class Service:
    name: str  # fully qualified: "containerd.services.version.v1.Version"
    methods: tuple[Method, ...]


def _cardinality(m: descriptor.MethodDescriptor) -> Cardinality:
    return {
        (False, False): Cardinality.UNARY_UNARY,
        (False, True): Cardinality.UNARY_STREAM,
        (True, False): Cardinality.STREAM_UNARY,
        (True, True): Cardinality.STREAM_STREAM,
    }[(m.client_streaming, m.server_streaming)]


def _modules(package: str) -> Iterable[ModuleType]:
    try:
        pkg = importlib.import_module(package)
    except ModuleNotFoundError:
        return  # not generated (yet)
    for info in pkgutil.walk_packages(pkg.__path__, prefix=package + "."):
        if info.name.endswith("_pb2"):
            yield importlib.import_module(info.name)


def services_of(modules: Iterable[ModuleType]) -> list[Service]:
    out: dict[str, Service] = {}
    for mod in modules:
        file_desc: descriptor.FileDescriptor = mod.DESCRIPTOR
        if any(part in _TTRPC_ONLY for part in file_desc.package.split(".")):
            continue
        for svc in file_desc.services_by_name.values():
            methods = tuple(
                Method(
                    path=f"/{svc.full_name}/{m.name}",
                    name=m.name,
                    cardinality=_cardinality(m),
                    request_type=message_factory.GetMessageClass(m.input_type),
                    reply_type=message_factory.GetMessageClass(m.output_type),
                )
                for m in svc.methods
            )
            out[svc.full_name] = Service(svc.full_name, methods)
    return sorted(out.values(), key=lambda s: s.name)


@functools.cache
def grpc_services() -> tuple[Service, ...]:
    """Every service of the gRPC socket that the generated code in ``arun.api`` defines."""
    mods = [m for pkg in GRPC_API_PACKAGES for m in _modules(pkg)]
    return tuple(services_of(mods))


def fallback_handlers(services: Iterable[Service]) -> dict[str, Handler]:
    """An UNIMPLEMENTED handler for every method of ``services``."""
    return {
        m.path: Handler(unimplemented_method(m.name), m.cardinality, m.request_type, m.reply_type)
        for s in services
        for m in s.methods
    }
