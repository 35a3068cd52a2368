from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from arun.errdefs import FailedPreconditionError, InvalidArgumentError, NotFoundError
from arun.plugin import InitContext, Registry, SkipPlugin, load
from arun.plugin.config import Config, loads


@dataclass
class WidgetConfig:
    size: int = 3
    name: str = "w"


def make_registry(events: list[str]) -> Registry:
    r = Registry()

    class Closeable:
        def __init__(self, name: str) -> None:
            self.name = name

        async def close(self) -> None:
            events.append(f"close {self.name}")

    @r.register("t.store", "a", config=WidgetConfig)
    async def init_a(ic: InitContext) -> object:
        # Per-plugin directories: <root>/<type>.<id> and <state>/<type>.<id>.
        events.append(
            f"init a size={ic.config.size} root={ic.root.parent.name}/{ic.root.name}"
            f" state={ic.state.parent.name}/{ic.state.name}"
        )
        ic.meta.exports["size"] = str(ic.config.size)
        return Closeable("a")

    @r.register("t.skip", "b")
    async def init_b(ic: InitContext) -> object:
        raise SkipPlugin("not on this host")

    @r.register("t.broken", "c")
    async def init_c(ic: InitContext) -> object:
        raise RuntimeError("boom")

    @r.register("t.service", "d", requires=["t.store", "t.skip"])
    async def init_d(ic: InitContext) -> object:
        store = ic.get_single("t.store")
        assert ic.get_all("t.skip") == {}
        events.append("init d")
        return Closeable(f"d over {store.name}")

    return r


async def test_load_order_skip_failure_and_reverse_close(tmp_path: Path) -> None:
    events: list[str] = []
    cfg = loads(
        f'version = 2\nroot = "{tmp_path}/root"\nstate = "{tmp_path}/state"\n'
        '[plugins."t.store.a"]\nsize = 7\n'
    )
    plugins = await load(make_registry(events), cfg)
    assert events == ["init a size=7 root=root/t.store.a state=state/t.store.a", "init d"]
    status = {p.uri: ("ok" if p.ok else "skip" if p.skipped else "error") for p in plugins.ordered}
    assert status == {"t.store.a": "ok", "t.skip.b": "skip", "t.broken.c": "error", "t.service.d": "ok"}
    with pytest.raises(FailedPreconditionError, match="boom"):
        plugins.get("t.broken", "c")
    with pytest.raises(NotFoundError):
        plugins.get("t.none", "x")
    await plugins.close()
    assert events[-2:] == ["close d over a", "close a"]


async def test_required_plugin_failure_aborts(tmp_path: Path) -> None:
    events: list[str] = []
    cfg = Config(root=str(tmp_path), state=str(tmp_path), required_plugins=["t.broken.c"])
    with pytest.raises(RuntimeError, match="boom"):
        await load(make_registry(events), cfg)
    assert "close a" in events


async def test_disabled_and_required_missing(tmp_path: Path) -> None:
    cfg = Config(root=str(tmp_path), state=str(tmp_path), disabled_plugins=["t.store.a"])
    plugins = await load(make_registry([]), cfg)
    assert "t.store.a" not in {p.uri for p in plugins.ordered}
    # d's lookup of the store fails, so it is recorded as an error
    assert not next(p for p in plugins.ordered if p.uri == "t.service.d").ok

    cfg = Config(root=str(tmp_path), state=str(tmp_path), required_plugins=["t.nope.z"])
    with pytest.raises(FailedPreconditionError, match=r"t\.nope\.z"):
        await load(make_registry([]), cfg)


async def test_unknown_plugin_key_fails_that_plugin_naming_the_key(tmp_path: Path) -> None:
    cfg = loads('version = 2\n[plugins."t.store.a"]\nsise = 7\n', source="/etc/x.toml")
    cfg.root = cfg.state = str(tmp_path)
    cfg.required_plugins = ["t.store.a"]
    with pytest.raises(InvalidArgumentError, match=r"/etc/x\.toml.*t\.store\.a.*unknown key 'sise'"):
        await load(make_registry([]), cfg)
