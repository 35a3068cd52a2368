from __future__ import annotations

import json
from pathlib import Path

import pytest

from arun.cni.conf import (
    conf_files,
    conflist_from_bytes,
    conflist_from_file,
    load_conf_dir,
    validate_container_id,
    validate_interface_name,
)
from arun.cni.errors import CNINotInitializedError, InvalidConfigError
from arun.errdefs import FailedPreconditionError, InvalidArgumentError

from .fakes import write_conflist

BRIDGE = {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local"}}
PORTMAP = {"type": "portmap", "capabilities": {"portMappings": True, "bandwidth": False}}


def conflist(
    name: str = "net", version: str = "1.0.0", plugins: list[object] | None = None
) -> dict[str, object]:
    return {
        "cniVersion": version,
        "name": name,
        "plugins": plugins if plugins is not None else [BRIDGE, PORTMAP],
    }


def test_conflist_parses() -> None:
    lst = conflist_from_bytes(json.dumps(conflist()).encode())
    assert lst.name == "net"
    assert lst.cni_version == "1.0.0"
    assert [p.type for p in lst.plugins] == ["bridge", "portmap"]
    assert lst.plugins[1].capabilities == {"portMappings": True}
    assert lst.plugins[0].conf["bridge"] == "cni0"
    assert not lst.disable_check


def test_conflist_flags_accept_strings() -> None:
    doc = conflist() | {"disableCheck": "true", "disableGC": True}
    lst = conflist_from_bytes(json.dumps(doc).encode())
    assert lst.disable_check and lst.disable_gc


def test_cni_versions_picks_highest_supported() -> None:
    doc = conflist(version="0.4.0") | {"cniVersions": ["1.0.0", "9.9.9", "0.3.1"]}
    assert conflist_from_bytes(json.dumps(doc).encode()).cni_version == "1.0.0"


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        (b"{not json", "error parsing"),
        (b"[]", "expected a JSON object"),
        (json.dumps({"cniVersion": "1.0.0", "plugins": [BRIDGE]}).encode(), "no name"),
        (json.dumps(conflist(name="bad name")).encode(), "invalid network name"),
        (json.dumps(conflist(plugins=[])).encode(), "no plugins in list"),
        (json.dumps(conflist(plugins=[{"bridge": "x"}])).encode(), "plugin 0: missing 'type'"),
        (json.dumps(conflist(plugins=[{"type": "../evil"}])).encode(), "invalid plugin type"),
        (json.dumps(conflist(version="2.0.0")).encode(), "newer than supported"),
        (json.dumps(conflist(version="abc")).encode(), "invalid CNI version"),
        (json.dumps({"name": "n", "plugins": [BRIDGE]}).encode(), "missing 'cniVersion'"),
        (json.dumps(conflist() | {"disableCheck": "maybe"}).encode(), "disableCheck"),
        (json.dumps(conflist() | {"plugins": {"type": "x"}}).encode(), "invalid 'plugins' type"),
        (
            json.dumps({"cniVersion": "1.0.0", "name": "n", "loadOnlyInlinedPlugins": True}).encode(),
            "no 'plugins'",
        ),
    ],
)
def test_broken_conflists_are_invalid_argument(doc: bytes, needle: str) -> None:
    with pytest.raises(InvalidConfigError) as ei:
        conflist_from_bytes(doc, "/etc/cni/net.d/10-x.conflist")
    assert isinstance(ei.value, InvalidArgumentError)
    assert needle in ei.value.message
    assert "10-x.conflist" in ei.value.message


def test_single_conf_is_upconverted(tmp_path: Path) -> None:
    path = write_conflist(tmp_path, "10-one.conf", {"cniVersion": "0.4.0", "name": "one"} | BRIDGE)
    lst = conflist_from_file(str(path))
    assert lst.name == "one"
    assert lst.cni_version == "0.4.0"
    assert [p.type for p in lst.plugins] == ["bridge"]
    assert lst.source == str(path)


def test_conf_without_type_is_rejected(tmp_path: Path) -> None:
    # a conflist saved as .conf: "type" is missing
    path = write_conflist(tmp_path, "10-wrong.conf", conflist())
    with pytest.raises(InvalidConfigError, match="missing 'type'"):
        conflist_from_file(str(path))


def test_conflist_plugins_from_subdirectory(tmp_path: Path) -> None:
    path = write_conflist(tmp_path, "10-net.conflist", {"cniVersion": "1.1.0", "name": "net"})
    write_conflist(tmp_path / "net", "20-portmap.conf", PORTMAP)
    write_conflist(tmp_path / "net", "10-bridge.conf", BRIDGE)
    lst = conflist_from_file(str(path))
    assert [p.type for p in lst.plugins] == ["bridge", "portmap"]
    assert lst.extra_dirs == (str(tmp_path / "net"),)
    inlined = write_conflist(
        tmp_path,
        "20-in.conflist",
        conflist(name="net") | {"loadOnlyInlinedPlugins": True, "plugins": [PORTMAP]},
    )
    assert [p.type for p in conflist_from_file(str(inlined)).plugins] == ["portmap"]


def test_conflist_without_plugins_anywhere(tmp_path: Path) -> None:
    path = write_conflist(tmp_path, "10-net.conflist", {"cniVersion": "1.1.0", "name": "net"})
    with pytest.raises(InvalidConfigError, match="no plugin configs found"):
        conflist_from_file(str(path))


def test_conf_files_sorted_filtered(tmp_path: Path) -> None:
    for name in ["20-b.conf", "10-a.conflist", "05-c.json", "99-d.txt", ".hidden.swp"]:
        (tmp_path / name).write_text("{}")
    (tmp_path / "30-dir.conf").mkdir()
    assert [Path(p).name for p in conf_files(str(tmp_path))] == ["05-c.json", "10-a.conflist", "20-b.conf"]
    assert conf_files(str(tmp_path / "missing")) == []


def test_load_conf_dir_takes_first_n_in_lexical_order(tmp_path: Path) -> None:
    write_conflist(tmp_path, "20-second.conflist", conflist(name="second"))
    write_conflist(tmp_path, "10-first.conflist", conflist(name="first"))
    (tmp_path / "30-broken.conflist").write_text("{broken")
    assert [n.name for n in load_conf_dir(str(tmp_path), 1)] == ["first"]
    assert [n.name for n in load_conf_dir(str(tmp_path), 2)] == ["first", "second"]
    # all: the broken third file now matters
    with pytest.raises(InvalidConfigError, match=r"30-broken\.conflist"):
        load_conf_dir(str(tmp_path), 0)


def test_load_conf_dir_empty_or_missing_is_not_initialized(tmp_path: Path) -> None:
    for d in (tmp_path, tmp_path / "missing"):
        with pytest.raises(CNINotInitializedError) as ei:
            load_conf_dir(str(d))
        assert isinstance(ei.value, FailedPreconditionError)
        assert "no network config found" in ei.value.message


def test_validators() -> None:
    assert validate_container_id("abc-1.2_3") == "abc-1.2_3"
    for bad in ["", "-abc", "a b", "a/b"]:
        with pytest.raises(InvalidArgumentError):
            validate_container_id(bad)
    assert validate_interface_name("eth0") == "eth0"
    for bad in ["", ".", "..", "a" * 16, "a/b", "a:b", "a b"]:
        with pytest.raises(InvalidArgumentError):
            validate_interface_name(bad)
