"""How a plugin serves ttrpc on the daemon's ``<address>.ttrpc`` socket.

Any loaded plugin whose instance has ``register_ttrpc(server)`` is collected
(containerd collects its ``io.containerd.ttrpc.v1`` plugins the same way; the
type does not matter here). ``register_ttrpc`` is called once with a
``TTRPCRegistrar`` and registers handler objects by protobuf service — the
handler convention is ``arun.ttrpc.service``'s (``async def Forward(self,
request) -> response``)::

    class EventsForwarder:
        def register_ttrpc(self, server: TTRPCRegistrar) -> None:
            server.register("containerd.services.events.ttrpc.v1.Events", self)

        async def Forward(self, request: ForwardRequest) -> Empty: ...

Requests run with the namespace from ``containerd-namespace-ttrpc``, the deadline
from ``timeout_nano``, a request id, and errdefs errors mapped to codes through
``errdefs.grpc``, exactly as on the gRPC socket.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["TTRPCRegistrar", "TTRPCService"]


class TTRPCRegistrar(Protocol):
    def register(self, service: Any, handler: object, /) -> None:
        """Serve ``service`` (a ServiceDescriptor or its full name) with ``handler``'s methods."""


@runtime_checkable
class TTRPCService(Protocol):
    """A plugin instance that serves ttrpc."""

    def register_ttrpc(self, server: TTRPCRegistrar, /) -> None: ...
