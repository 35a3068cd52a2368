"""Plugin registrations and the dependency graph.

A registration names a type, an id, the *types* it requires and an async
``init``. ``graph()`` orders registrations so that every plugin comes after
the plugins of the types it requires (depth-first, in registration order,
as containerd/plugin does) and reports a cycle with its whole path.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from arun.errdefs import AlreadyExistsError, FailedPreconditionError, InvalidArgumentError

if TYPE_CHECKING:
    from arun.plugin.context import InitContext

InitFunc = Callable[["InitContext"], Awaitable[object]]
F = TypeVar("F", bound=InitFunc)

ALL = "*"


class SkipPlugin(Exception):
    """Raised by ``init`` when the plugin does not apply to this host ("skip", not "error")."""


@dataclass(frozen=True)
class Registration:
    type: str
    id: str
    init: InitFunc
    requires: tuple[str, ...] = ()
    config: builtins.type[Any] | None = None
    # Extra properties shown by introspection, e.g. platforms.
    platforms: tuple[str, ...] = field(default=())

    @property
    def uri(self) -> str:
        return f"{self.type}.{self.id}"


class Registry:
    """An ordered set of registrations, unique by URI."""

    def __init__(self) -> None:
        self._regs: list[Registration] = []
        self._uris: set[str] = set()

    def add(self, reg: Registration) -> Registration:
        if not reg.type:
            raise InvalidArgumentError("plugin type must not be empty")
        if not reg.id:
            raise InvalidArgumentError(f"plugin id of type {reg.type!r} must not be empty")
        if ALL in reg.requires and len(reg.requires) != 1:
            raise InvalidArgumentError(f"plugin {reg.uri!r}: '*' must be the only requirement")
        if reg.type in reg.requires:
            raise InvalidArgumentError(f"plugin {reg.uri!r} requires its own type")
        if reg.uri in self._uris:
            raise AlreadyExistsError(f"plugin {reg.uri!r} is already registered")
        self._regs.append(reg)
        self._uris.add(reg.uri)
        return reg

    def register(
        self,
        type: str,
        id: str,
        *,
        requires: Iterable[str] = (),
        config: builtins.type[Any] | None = None,
        platforms: Iterable[str] = (),
    ) -> Callable[[F], F]:
        """Decorator form: ``@registry.register(PluginType.GRPC, "version")`` on an async init."""

        def deco(fn: F) -> F:
            reqs = tuple(str(r) for r in requires)
            self.add(Registration(str(type), id, fn, reqs, config, tuple(platforms)))
            return fn

        return deco

    def __iter__(self) -> Any:
        return iter(list(self._regs))

    def __len__(self) -> int:
        return len(self._regs)

    def graph(self, disabled: Callable[[Registration], bool] = lambda r: False) -> list[Registration]:
        return graph(self._regs, disabled)


def graph(
    registrations: Iterable[Registration], disabled: Callable[[Registration], bool] = lambda r: False
) -> list[Registration]:
    """Registrations in initialisation order; disabled ones are left out.

    A requirement on a type that has no (enabled) registration is not an
    error here: the plugin will find nothing when it looks the type up, and
    decide for itself (containerd behaves the same way).
    """
    regs = [r for r in registrations if not disabled(r)]
    by_type: dict[str, list[Registration]] = {}
    for r in regs:
        by_type.setdefault(r.type, []).append(r)

    ordered: list[Registration] = []
    done: set[str] = set()
    path: list[Registration] = []

    def visit(r: Registration) -> None:
        if r.uri in done:
            return
        if r in path:
            cycle = [*path[path.index(r) :], r]
            raise FailedPreconditionError("plugin dependency cycle: " + " -> ".join(p.uri for p in cycle))
        path.append(r)
        for req in r.requires:
            deps = [d for d in regs if d is not r] if req == ALL else by_type.get(req, [])
            for dep in deps:
                if req == ALL and ALL in dep.requires:
                    continue  # two '*' plugins do not depend on each other
                visit(dep)
        path.pop()
        done.add(r.uri)
        ordered.append(r)

    for r in regs:
        visit(r)
    return ordered


# The process-wide registry that arun.builtins fills by importing plugin modules.
default = Registry()
register = default.register
