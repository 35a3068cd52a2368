from __future__ import annotations

import argparse
import asyncio
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from arun.cmd import daemon as daemonmod
from arun.cmd.main import main
from arun.errdefs import InvalidArgumentError
from arun.plugin import PluginType, Registry
from arun.plugin import config as configmod
from arun.plugin.context import InitContext
from arun.version import VERSION


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("arun ") and f" {VERSION}" in out


def test_config_default_round_trips(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "default"]) == 0
    text = capsys.readouterr().out
    cfg = configmod.loads(text, source="default")
    expected = configmod.Config(source="default")
    assert configmod.to_dict(cfg) | {"plugins": {}} == configmod.to_dict(expected) | {"plugins": {}}
    from arun.plugin.registry import default

    for reg in default:
        if reg.config is not None:
            assert configmod.decode(reg.config, cfg.plugin_table(reg.uri), where=reg.uri) == reg.config()


def test_config_dump_of_a_missing_explicit_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "dump", "--config", "/nonexistent.toml"]) == 1
    assert capsys.readouterr().err.strip() == "arun: config file '/nonexistent.toml' does not exist"


def test_toml_writer_quotes_what_needs_quoting() -> None:
    data = {"a": 'q"\\\n\x01', "list": [1, 2.5, True, "x"], "t": {"dotted.key": {"k": "v"}}}
    assert configmod.dumps(data).count("\n") >= 3
    import tomllib

    assert tomllib.loads(configmod.dumps(data)) == data


@dataclass
class FakeConfig:
    size: int = 1
    name: str = "x"


def registry_with_config() -> tuple[Registry, list[str]]:
    reg = Registry()
    closed: list[str] = []

    class Closing:
        async def close(self) -> None:
            closed.append("fake")

    @reg.register("io.arun.test.v1", "fake", config=FakeConfig)
    async def init(ic: InitContext) -> object:
        assert ic.config == FakeConfig(size=2)
        return Closing()

    return reg, closed


def args(tmp: Path, config_text: str | None = None, **kw: Any) -> argparse.Namespace:
    config = None
    if config_text is not None:
        config = str(tmp / "config.toml")
        Path(config).write_text(config_text)
    return argparse.Namespace(
        config=config,
        root=str(tmp / "root"),
        state=str(tmp / "state"),
        address=kw.get("address", f"/tmp/arun-unit-{uuid.uuid4().hex[:10]}.sock"),
        log_level=kw.get("log_level"),
    )


@pytest.mark.parametrize(
    ("config_text", "fragment"),
    [
        (
            'version = 2\n[plugins."io.arun.test.v1.fake"]\nsizes = 3\n',
            "[plugins.'io.arun.test.v1.fake']: unknown key 'sizes'",
        ),
        ('version = 2\n[plugins."io.arun.test.v1.fake"]\nsize = "3"\n', "size: expected an integer, got '3'"),
        ('version = 2\n[debug]\nformat = "xml"\n', "format 'xml' is not one of text, json"),
        ("version = 2\n[arun]\nuvloop = 1\n", "uvloop: expected true or false"),
        ("version = 2\n[arun]\nshutdown_grace = -1\n", "shutdown_grace must not be negative"),
        ('version = 2\nroot = "relative"\n', None),  # --root overrides it: fine
        ("version = 2\nroot =\n", "invalid TOML"),
    ],
)
def test_broken_config_fails_before_start_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config_text: str, fragment: str | None
) -> None:
    reg, _ = registry_with_config()
    a = args(tmp_path, config_text)
    if fragment is None:
        cfg = daemonmod.load_config(a)
        daemonmod.check_config(cfg, reg)
        return
    assert daemonmod.main(a, reg) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("arun: ")
    assert fragment in err
    assert not (tmp_path / "root").exists()  # nothing was created


def test_relative_paths_are_refused(tmp_path: Path) -> None:
    cfg = configmod.Config(root="rel")
    with pytest.raises(InvalidArgumentError, match="root must be an absolute path"):
        daemonmod.check_config(cfg, Registry())


def test_log_level_flag_overrides_config(tmp_path: Path) -> None:
    cfg = daemonmod.load_config(args(tmp_path, 'version = 2\n[debug]\nlevel = "warn"\n', log_level="debug"))
    assert cfg.debug.level == "debug"
    with pytest.raises(InvalidArgumentError, match="unknown log level"):
        daemonmod.check_config(daemonmod.load_config(args(tmp_path, log_level="chatty")), Registry())


async def test_daemon_serves_and_stops_in_order(tmp_path: Path) -> None:
    reg, closed = registry_with_config()
    a = args(tmp_path, 'version = 2\n[plugins."io.arun.test.v1.fake"]\nsize = 2\n')
    cfg = daemonmod.load_config(a)
    daemonmod.check_config(cfg, reg)
    d = daemonmod.Daemon(cfg, reg)
    task = asyncio.create_task(d.run())
    address = Path(cfg.grpc.address)
    for _ in range(200):
        if d.grpc is not None and address.exists():
            break
        await asyncio.sleep(0.02)
    assert address.exists()
    assert d.plugins is not None and d.plugins.get("io.arun.test.v1", "fake") is not None
    d.request_stop()
    assert await asyncio.wait_for(task, 10) == 0
    assert closed == ["fake"]
    assert not address.exists()
    assert (tmp_path / "root").is_dir() and (tmp_path / "state").is_dir()


async def test_required_plugin_failure_stops_start_up(tmp_path: Path) -> None:
    reg = Registry()

    @reg.register(PluginType.GRPC, "needed")
    async def init(ic: InitContext) -> object:
        raise RuntimeError("cannot start")

    a = args(tmp_path, 'version = 2\nrequired_plugins = ["io.containerd.grpc.v1.needed"]\n')
    cfg = daemonmod.load_config(a)
    with pytest.raises(RuntimeError, match="cannot start"):
        await daemonmod.Daemon(cfg, reg).run()
    assert not Path(cfg.grpc.address).exists()
