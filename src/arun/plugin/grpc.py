"""How a plugin serves gRPC: the convention between service plugins and the server.

A plugin of type ``io.containerd.grpc.v1`` whose instance has a
``register(server)`` method is collected by the daemon's gRPC server, which
calls ``register`` once with a ``GRPCRegistrar``; the plugin adds one or more
grpclib servicers (objects with ``__mapping__()``, e.g. subclasses of the
generated ``…_grpc.<Service>Base`` classes)::

    class VersionService:
        def register(self, server: GRPCRegistrar) -> None:
            server.add(VersionServicer())

Every RPC of every service in ``arun.api`` that no plugin serves answers
UNIMPLEMENTED. A servicer may implement only some methods of its service:
decorate it with ``@partial_servicer`` and the missing methods become
fallbacks too. Fallbacks never conflict: a real handler registered by any
plugin replaces them, whereas two real handlers for one method stop start-up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable

from arun.errdefs import UnimplementedError

__all__ = [
    "GRPCRegistrar",
    "GRPCService",
    "Servable",
    "is_fallback",
    "partial_servicer",
    "unimplemented_method",
]

# grpclib calls a method handler with its server Stream.
MethodFunc = Callable[[Any], Awaitable[None]]
_FALLBACK = "__arun_fallback__"

C = TypeVar("C", bound=type)


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


def unimplemented_method(name: str) -> MethodFunc:
    """A handler answering UNIMPLEMENTED for method ``name``, marked as a fallback."""

    async def handler(stream: Any) -> None:
        raise UnimplementedError(f"method {name} not implemented")

    setattr(handler, _FALLBACK, True)
    return handler


def is_fallback(func: object) -> bool:
    """True for handlers made by ``unimplemented_method`` (bound methods included)."""
    return bool(getattr(func, _FALLBACK, False))


def partial_servicer(cls: C) -> C:
    """Class decorator: the abstract methods of a generated ``…Base`` that ``cls``
    leaves undefined answer UNIMPLEMENTED, and can be replaced by another plugin."""
    missing: list[str] = sorted(getattr(cls, "__abstractmethods__", ()))
    for name in missing:
        fallback = unimplemented_method(name)

        async def method(self: object, stream: Any, _f: MethodFunc = fallback) -> None:
            await _f(stream)

        method.__name__ = method.__qualname__ = name
        setattr(method, _FALLBACK, True)
        setattr(cls, name, method)
    setattr(cls, "__abstractmethods__", frozenset())  # noqa: B010 (mypy does not know the attribute)
    return cls
