from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from arun.api.containerd.services.introspection.v1 import introspection_pb2
from arun.errdefs import FailedPreconditionError, InvalidArgumentError, NotFoundError, UnimplementedError
from arun.plugin import PluginType, Registration, SkipPlugin
from arun.plugin.context import Meta, Plugin, PluginSet
from arun.services.introspection.grpc import plugin_to_pb
from arun.services.introspection.local import IntrospectionLocal


async def _init(ic: Any) -> object:
    return None


class WithInfo:
    async def plugin_info(self, options: Any) -> Any:
        return introspection_pb2.PluginsRequest(filters=["echo"])


def plugin_set() -> PluginSet:
    ps = PluginSet()
    ps.add(
        Plugin(
            Registration(
                PluginType.METADATA, "sqlite", _init, (PluginType.CONTENT,), platforms=("linux/amd64",)
            ),
            Meta(exports={"path": "/x"}, capabilities=["gc"]),
            WithInfo(),
        )
    )
    ps.add(Plugin(Registration(PluginType.SNAPSHOT, "zfs", _init), Meta(), error=SkipPlugin("no zfs pool")))
    ps.add(Plugin(Registration(PluginType.GRPC, "cri", _init), Meta(), error=NotFoundError("no runtime")))
    ps.add(Plugin(Registration(PluginType.GRPC, "version", _init), Meta(), object()))
    return ps


def ids(local: IntrospectionLocal, *filters: str) -> list[str]:
    return [p.id for p in local.plugins(filters)]


def test_filters(tmp_path: Path) -> None:
    local = IntrospectionLocal(plugin_set(), tmp_path)
    assert ids(local) == ["sqlite", "zfs", "cri", "version"]
    assert ids(local, "type==io.containerd.grpc.v1") == ["cri", "version"]
    assert ids(local, "type==io.containerd.grpc.v1,id==cri") == ["cri"]
    assert ids(local, "id==zfs", "id==version") == ["zfs", "version"]
    assert ids(local, "id~=^(s|z)") == ["sqlite", "zfs"]
    assert ids(local, "type!=io.containerd.grpc.v1") == ["sqlite", "zfs"]
    assert ids(local, "capabilities==gc") == []  # collections are not matchable, as in containerd
    with pytest.raises(InvalidArgumentError):
        local.plugins(["type=="])


def test_init_errors_as_ctr_reads_them(tmp_path: Path) -> None:
    by_id = {p.id: plugin_to_pb(p) for p in IntrospectionLocal(plugin_set(), tmp_path).plugins()}
    assert not by_id["sqlite"].HasField("init_err")
    assert by_id["sqlite"].requires == ["io.containerd.content.v1"]
    assert by_id["sqlite"].exports == {"path": "/x"}
    assert list(by_id["sqlite"].capabilities) == ["gc"]
    (plat,) = by_id["sqlite"].platforms
    assert (plat.os, plat.architecture, plat.variant) == ("linux", "amd64", "")
    # ctr prints "skip" when the message contains "skip plugin", else "error".
    assert "skip plugin" in by_id["zfs"].init_err.message
    assert by_id["zfs"].init_err.message.startswith("no zfs pool")
    assert by_id["cri"].init_err.code == 5
    assert by_id["cri"].init_err.message == "no runtime"
    assert "skip plugin" not in by_id["cri"].init_err.message


async def test_uuid_is_created_once_and_kept(tmp_path: Path) -> None:
    a = await IntrospectionLocal(PluginSet(), tmp_path).server()
    b = await IntrospectionLocal(PluginSet(), tmp_path).server()
    assert a.uuid == b.uuid
    assert str(uuid.UUID(a.uuid)) == a.uuid
    assert (tmp_path / "uuid").read_text() == a.uuid
    (tmp_path / "uuid").write_text("garbage")
    with pytest.raises(FailedPreconditionError, match="corrupt"):
        await IntrospectionLocal(PluginSet(), tmp_path).server()


async def test_plugin_info(tmp_path: Path) -> None:
    local = IntrospectionLocal(plugin_set(), tmp_path)
    info, extra = await local.plugin_info(PluginType.METADATA, "sqlite", None)
    assert info.id == "sqlite" and extra is None
    info, extra = await local.plugin_info(PluginType.METADATA, "sqlite", object())
    assert list(extra.filters) == ["echo"]
    with pytest.raises(NotFoundError):
        await local.plugin_info("io.x", "y", None)
    with pytest.raises(FailedPreconditionError):
        await local.plugin_info(PluginType.GRPC, "cri", object())
    with pytest.raises(UnimplementedError):
        await local.plugin_info(PluginType.GRPC, "version", object())
