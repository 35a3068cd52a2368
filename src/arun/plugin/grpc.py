"""How a plugin serves gRPC: the convention between service plugins and the server.

A plugin of type ``io.containerd.grpc.v1`` whose instance has a
``register(server)`` method is collected by the daemon's gRPC server, which
calls ``register`` once with a ``GRPCRegistrar``; the plugin adds one or more
grpclib servicers (objects with ``__mapping__()``, e.g. subclasses of the
generated ``…_grpc.<Service>Base`` classes)::

    class VersionService:
        def register(self, server: GRPCRegistrar) -> None:
            server.add(VersionServicer())

(``Servicers(VersionServicer())`` is that class, ready-made.)

Every RPC of every service in ``arun.api`` that no plugin serves answers
UNIMPLEMENTED. A servicer may implement only some methods of its service by
deriving from ``PartialServicer``: the missing methods become fallbacks too.
Fallbacks never conflict: a real handler registered by any plugin replaces
them, whereas two real handlers for one method stop start-up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

from arun.errdefs import UnimplementedError

__all__ = [
    "GRPCRegistrar",
    "GRPCService",
    "PartialServicer",
    "Servable",
    "Servicers",
    "is_fallback",
    "unimplemented_method",
]

# grpclib calls a method handler with its server Stream.
MethodFunc = Callable[[Any], Awaitable[None]]
_FALLBACK = "__arun_fallback__"


class Servable(Protocol):
    """What grpclib's Server accepts: a map from ``/package.Service/Method`` to grpclib Handlers."""

    def __mapping__(self) -> Mapping[str, Any]: ...


class GRPCRegistrar(Protocol):
    def add(self, servicer: Servable, /) -> None:
        """Serve every method in ``servicer.__mapping__()``."""


@runtime_checkable
class GRPCService(Protocol):
    """A plugin instance that serves gRPC."""

    def register(self, server: GRPCRegistrar, /) -> None: ...


class Servicers:
    """The usual plugin instance: a fixed list of servicers to add (``return Servicers(MyServicer())``)."""

    def __init__(self, *servicers: Servable) -> None:
        self.servicers = servicers

    def register(self, server: GRPCRegistrar, /) -> None:
        for s in self.servicers:
            server.add(s)


def unimplemented_method(name: str) -> MethodFunc:
    """A handler answering UNIMPLEMENTED for method ``name``, marked as a fallback."""

    async def handler(stream: Any) -> None:
        raise UnimplementedError(f"method {name} not implemented")

    setattr(handler, _FALLBACK, True)
    return handler


def is_fallback(func: object) -> bool:
    """True for handlers made by ``unimplemented_method`` (bound methods included)."""
    return bool(getattr(func, _FALLBACK, False))


class _Methods:
    """Attribute access for a generated ``__mapping__``: the servicer's method, else a fallback."""

    def __init__(self, impl: object) -> None:
        self._impl = impl

    def __getattr__(self, name: str) -> MethodFunc:
        method = getattr(self._impl, name, None)
        if callable(method):
            result: MethodFunc = method
            return result
        return unimplemented_method(name)


class PartialServicer:
    """Base of a servicer that implements only some methods of a generated service.

    Set ``service`` to the generated ``…Base`` class and define the methods you
    have; the others answer UNIMPLEMENTED and may be served by another plugin::

        class RuntimeServicer(PartialServicer):
            service = api_grpc.RuntimeServiceBase

            async def Version(self, stream): ...
    """

    service: ClassVar[type]

    def __mapping__(self) -> dict[str, Any]:
        # The generated __mapping__ only reads ``self.<Method>`` attributes.
        mapping: dict[str, Any] = self.service.__mapping__(_Methods(self))  # type: ignore[attr-defined]
        return mapping
