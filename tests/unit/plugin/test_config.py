from __future__ import annotations

from pathlib import Path

import pytest

from arun.errdefs import InvalidArgumentError
from arun.plugin.config import Config, load, loads


def test_version_2_and_3_are_read() -> None:
    for version in (2, 3):
        cfg = loads(
            f'version = {version}\nroot = "/r"\n[grpc]\naddress = "/s.sock"\n'
            '[plugins."io.containerd.grpc.v1.cri"]\nsandbox_image = "pause:3.9"\n'
        )
        assert cfg.version == version
        assert cfg.root == "/r"
        assert cfg.grpc.address == "/s.sock"
        assert cfg.ttrpc_address == "/s.sock.ttrpc"
        assert cfg.plugin_table("io.containerd.grpc.v1.cri") == {"sandbox_image": "pause:3.9"}


def test_version_1_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="unsupported config version 1"):
        loads('root = "/r"\n')


def test_unknown_top_level_key_is_named() -> None:
    with pytest.raises(InvalidArgumentError, match=r"cfg\.toml: grpc: unknown key 'adress'"):
        loads('version = 2\n[grpc]\nadress = "x"\n', source="cfg.toml")


def test_wrong_type_is_named() -> None:
    with pytest.raises(InvalidArgumentError, match=r"grpc: uid: expected an integer"):
        loads('version = 2\n[grpc]\nuid = "zero"\n')


def test_bad_toml_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "config.toml"
    p.write_text('version = 2\n[grpc\naddress = "x"\n')
    with pytest.raises(InvalidArgumentError, match=rf"{p}: invalid TOML: .*line 2"):
        load(p)


def test_missing_file_gives_defaults_unless_explicit(tmp_path: Path) -> None:
    assert load(tmp_path / "nope.toml") == Config(source=str(tmp_path / "nope.toml"))
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        load(tmp_path / "nope.toml", missing_ok=False)
