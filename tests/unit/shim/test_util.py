"""The shim's own small stand-ins for shutil, tempfile and urllib.parse (arun.shim.util)."""

from __future__ import annotations

import os
import pathlib
import stat
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arun import errdefs
from arun.shim import util
from arun.shim.process import io as shim_io


@pytest.mark.parametrize(
    "uri",
    [
        "binary:///usr/bin/logger?k=v&a=b%20c",
        "binary-v2:///bin/x?x=1#frag",
        "file:///var/log/pods/a%20b/0.log",
        "FILE:///upper/scheme",
        "file://host/path?q",
        "fifo:/run/fifo/stdout",
        "fifo:///run/fifo/stdout",
        "/run/containerd/fifo/1/abc-stdout",
        "/run/path:with:colons",
        "relative/path",
        "a:b",
        "1abc:/x",
        " \x01file:///leading/junk",
        "file:///with\ttab\nnewline",
        "file:///%E2%82%AC/%zz/%4",
        "",
    ],
)
def test_split_uri_matches_urlsplit(uri: str) -> None:
    assert util.split_uri(uri) == tuple(urlsplit(uri))


_uri_text = st.text(alphabet=st.sampled_from("abcXYZ019+-.:/?#%@ \t\x00é€"), max_size=30)


@given(_uri_text)
def test_split_uri_matches_urlsplit_on_any_text(uri: str) -> None:
    assert util.split_uri(uri) == tuple(urlsplit(uri))


@pytest.mark.parametrize(
    "text, decoded",
    [
        ("plain", "plain"),
        ("a%20b", "a b"),
        ("%e2%82%ac", "€"),
        ("%E2%82%ACx", "€x"),
        ("%ff", "\ufffd"),
        ("%zz%", "%zz%"),
        ("%4", "%4"),
        ("100%", "100%"),
        ("%2541", "%41"),  # decoded once
    ],
)
def test_percent_decode(text: str, decoded: str) -> None:
    assert util.percent_decode(text) == decoded == unquote(text)


@given(st.text(alphabet=st.sampled_from("aZ09%fFgé/"), max_size=30))
def test_percent_decode_matches_unquote(text: str) -> None:
    assert util.percent_decode(text) == unquote(text)


def test_stdio_uris_parse_as_before() -> None:
    assert shim_io._parse("file:///var/log/a%20b.log") == ("file", "/var/log/a b.log")
    assert shim_io._parse("fifo:/run/x%3Ay") == ("fifo", "/run/x:y")
    assert shim_io._parse("/run/bare%20path") == ("fifo", "/run/bare%20path")  # a bare path is taken as is
    assert shim_io._parse("") == ("", "")
    with pytest.raises(errdefs.UnimplementedError):
        shim_io._parse("binary:///bin/logger?k=v")
    with pytest.raises(errdefs.InvalidArgumentError):
        shim_io._parse("tcp://1.2.3.4:5")


def test_make_temp_file_is_new_private_and_unique(tmp_path: pathlib.Path) -> None:
    seen = set()
    for _ in range(50):
        fd, path = util.make_temp_file("pre-", ".json", str(tmp_path))
        try:
            st_ = os.fstat(fd)
            assert stat.S_IMODE(st_.st_mode) == 0o600
            assert os.get_inheritable(fd) is False
            assert os.path.samestat(st_, os.stat(path))
        finally:
            os.close(fd)
        name = os.path.basename(path)
        assert name.startswith("pre-") and name.endswith(".json")
        assert os.path.dirname(path) == str(tmp_path)
        seen.add(path)
    assert len(seen) == 50


def test_make_temp_file_never_reuses_an_existing_name(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = tmp_path / "x-000000000000"
    taken.write_text("mine")
    draws = iter([bytes(6), bytes(6), b"\x01" * 6])
    monkeypatch.setattr(util.os, "urandom", lambda n: next(draws))
    fd, path = util.make_temp_file("x-", "", str(tmp_path))
    os.close(fd)
    assert path == str(tmp_path / "x-010101010101")
    assert taken.read_text() == "mine"  # O_EXCL: the existing file was not opened


def test_make_temp_file_gives_up(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "x-000000000000").write_text("")
    monkeypatch.setattr(util.os, "urandom", lambda n: bytes(n))
    with pytest.raises(FileExistsError):
        util.make_temp_file("x-", "", str(tmp_path))


def test_make_temp_dir(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = util.make_temp_dir("d-", str(tmp_path))
    b = util.make_temp_dir("d-", str(tmp_path))
    assert a != b
    assert stat.S_IMODE(os.stat(a).st_mode) == 0o700
    monkeypatch.setenv("TMPDIR", str(tmp_path / "sub"))
    (tmp_path / "sub").mkdir()
    c = util.make_temp_dir("d-")
    assert os.path.dirname(c) == str(tmp_path / "sub")


def test_remove_tree(tmp_path: pathlib.Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    top = tmp_path / "top"
    (top / "a" / "b").mkdir(parents=True)
    (top / "a" / "b" / "f").write_text("x")
    (top / "g").write_text("y")
    (top / "link").symlink_to(outside)  # removed, not followed
    os.mkfifo(top / "fifo")
    util.remove_tree(str(top))
    assert not top.exists()
    assert (outside / "keep").read_text() == "x"
    util.remove_tree(str(top))  # gone already: no error


def test_which(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exe = tmp_path / "tool"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    (tmp_path / "plain").write_text("")
    (tmp_path / "dir").mkdir()
    monkeypatch.setenv("PATH", f"/nonexistent:{tmp_path}")
    assert util.which("tool") == str(exe)
    assert util.which("plain") is None
    assert util.which("dir") is None
    assert util.which("missing") is None
    assert util.which(str(exe)) == str(exe)
    assert util.which(str(tmp_path / "plain")) is None
