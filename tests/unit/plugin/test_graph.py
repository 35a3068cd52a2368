from __future__ import annotations

import pytest

from arun.errdefs import AlreadyExistsError, FailedPreconditionError, InvalidArgumentError
from arun.plugin import Registration, Registry, graph


async def _init(ic: object) -> object:
    return object()


def reg(type_: str, id_: str, *requires: str) -> Registration:
    return Registration(type_, id_, _init, tuple(requires))


def uris(regs: list[Registration]) -> list[str]:
    return [r.uri for r in regs]


def test_order_puts_requirements_first_and_keeps_registration_order() -> None:
    regs = [
        reg("grpc", "containers", "service"),
        reg("service", "containers", "metadata"),
        reg("metadata", "bolt", "content", "snapshot"),
        reg("content", "local"),
        reg("snapshot", "overlayfs"),
        reg("snapshot", "native"),
    ]
    assert uris(graph(regs)) == [
        "content.local",
        "snapshot.overlayfs",
        "snapshot.native",
        "metadata.bolt",
        "service.containers",
        "grpc.containers",
    ]


def test_star_requires_everything_else() -> None:
    regs = [reg("grpc", "introspection", "*"), reg("a", "1"), reg("b", "2", "a")]
    assert uris(graph(regs)) == ["a.1", "b.2", "grpc.introspection"]


def test_two_star_plugins_do_not_cycle() -> None:
    regs = [reg("x", "1", "*"), reg("y", "2", "*"), reg("a", "1")]
    order = uris(graph(regs))
    assert order.index("a.1") < order.index("x.1")
    assert order.index("a.1") < order.index("y.2")


def test_cycle_is_reported_with_its_path() -> None:
    regs = [reg("a", "1", "b"), reg("b", "1", "c"), reg("c", "1", "a")]
    with pytest.raises(FailedPreconditionError, match=r"a\.1 -> b\.1 -> c\.1 -> a\.1"):
        graph(regs)


def test_missing_requirement_is_not_an_error_of_the_graph() -> None:
    assert uris(graph([reg("a", "1", "nothing")])) == ["a.1"]


def test_disabled_plugins_are_left_out() -> None:
    regs = [reg("a", "1"), reg("b", "1", "a")]
    assert uris(graph(regs, lambda r: r.uri == "a.1")) == ["b.1"]


def test_registry_rejects_bad_registrations() -> None:
    r = Registry()
    r.add(reg("a", "1"))
    with pytest.raises(AlreadyExistsError):
        r.add(reg("a", "1"))
    with pytest.raises(InvalidArgumentError):
        r.add(reg("", "x"))
    with pytest.raises(InvalidArgumentError):
        r.add(reg("a", ""))
    with pytest.raises(InvalidArgumentError, match="own type"):
        r.add(reg("a", "2", "a"))
    with pytest.raises(InvalidArgumentError, match="only requirement"):
        r.add(reg("a", "3", "*", "b"))


def test_decorator_registers() -> None:
    r = Registry()

    @r.register("io.example.v1", "thing", requires=["io.other.v1"])
    async def init(ic: object) -> object:
        return 1

    (only,) = list(r)
    assert only.uri == "io.example.v1.thing"
    assert only.requires == ("io.other.v1",)
    assert only.init is init
