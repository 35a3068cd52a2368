"""Services and methods from protobuf descriptors: no code generation beyond ``*_pb2``.

A service is named by its protobuf full name (``containerd.task.v2.Task``), which is
what goes on the wire, and each method by its bare name (``Create``). The message
classes come from the descriptor, so registering a handler object or building a
client stub needs only the generated ``*_pb2`` module to have been imported.

Handler methods are looked up on the object by the method's proto name:

============================  ==================================================================
kind                          handler
============================  ==================================================================
unary                         ``async def Create(self, request) -> response``
server streaming              ``async def Watch(self, request)``, an async generator that yields
                              responses
client streaming              ``async def Upload(self, requests) -> response``, ``requests`` an
                              async iterator of request messages
bidirectional streaming       ``async def Chat(self, requests)``, an async generator that reads
                              ``requests`` and yields responses
============================  ==================================================================

A method missing from the object is not registered: calls to it get UNIMPLEMENTED
``method <name>``, exactly as for a method the service does not have.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

__all__ = [
    "Method",
    "MethodBinder",
    "RegisteredMethod",
    "ServiceStub",
    "ServiceTable",
    "bind_service",
    "methods_of",
    "service_descriptor",
]


@dataclass(frozen=True, slots=True)
class Method:
    """What the wire and the codec need to know about one method."""

    service: str
    name: str
    request_type: type[Any]  # a generated class, or an arun.ttrpc.lite.Message
    response_type: type[Any]
    client_streaming: bool = False
    server_streaming: bool = False

    @property
    def full_name(self) -> str:
        return f"/{self.service}/{self.name}"

    @classmethod
    def from_descriptor(cls, md: MethodDescriptor) -> Method:
        from google.protobuf import message_factory

        return cls(
            service=md.containing_service.full_name,
            name=md.name,
            request_type=message_factory.GetMessageClass(md.input_type),
            response_type=message_factory.GetMessageClass(md.output_type),
            client_streaming=md.client_streaming,
            server_streaming=md.server_streaming,
        )


@dataclass(frozen=True, slots=True)
class RegisteredMethod:
    method: Method
    handler: Callable[..., Any]


@dataclass(frozen=True, slots=True)
class ServiceTable:
    """A service declared without protobuf descriptors (the shim's lite messages): its full
    name and its unary methods, name → (request class, response class)."""

    name: str
    methods: dict[str, tuple[type[Any], type[Any]]]

    def bound_methods(self) -> dict[str, Method]:
        return {n: Method(self.name, n, req, resp) for n, (req, resp) in self.methods.items()}


def service_descriptor(service: ServiceDescriptor | str) -> ServiceDescriptor:
    """The descriptor itself, or the one with that full name in the default pool (its
    ``*_pb2`` module must have been imported)."""
    from google.protobuf import descriptor_pool
    from google.protobuf.descriptor import ServiceDescriptor

    if isinstance(service, ServiceDescriptor):
        return service
    try:
        return descriptor_pool.Default().FindServiceByName(service)
    except KeyError:
        raise LookupError(
            f"service {service!r} is not in the protobuf descriptor pool (import its _pb2 module)"
        ) from None


def methods_of(service: ServiceDescriptor | str) -> dict[str, Method]:
    desc = service_descriptor(service)
    return {md.name: Method.from_descriptor(md) for md in desc.methods}


def bind_service(
    service: ServiceDescriptor | ServiceTable | str, handler: object
) -> tuple[str, dict[str, RegisteredMethod]]:
    """(full service name, {method name: handler}) for the methods ``handler`` implements."""
    if isinstance(service, ServiceTable):
        service_name, methods = service.name, service.bound_methods()
    else:
        desc = service_descriptor(service)
        service_name, methods = desc.full_name, methods_of(desc)
    bound: dict[str, RegisteredMethod] = {}
    for name, method in methods.items():
        fn = getattr(handler, name, None)
        if fn is None:
            continue
        if not callable(fn):
            raise TypeError(f"{type(handler).__name__}.{name} is not callable")
        bound[name] = RegisteredMethod(method, fn)
    return service_name, bound


class MethodBinder(Protocol):
    """What a stub needs from a client (:class:`arun.ttrpc.client.Client` is one)."""

    def bind_method(self, method: Method) -> Callable[..., Any]: ...


class ServiceStub:
    """A client for one service, built at runtime from its descriptor.

    ``stub = ServiceStub(client, shim_pb2.DESCRIPTOR.services_by_name["Task"])`` (or the
    full name), then ``await stub.Create(request, timeout=5)`` for unary methods;
    streaming methods return a stream object (see :meth:`arun.ttrpc.client.Client.stream`).
    """

    def __init__(self, client: MethodBinder, service: ServiceDescriptor | ServiceTable | str) -> None:
        if isinstance(service, ServiceTable):
            self.service_name: str = service.name
            self.methods: dict[str, Method] = service.bound_methods()
        else:
            desc = service_descriptor(service)
            self.service_name, self.methods = desc.full_name, methods_of(desc)
        for name, method in self.methods.items():
            setattr(self, name, client.bind_method(method))

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not methods of the service.
        raise AttributeError(f"service {self.service_name!r} has no method {name!r}")
