"""The client commands' pure parts: output formats, YAML, mount specs, argument parsing."""

from __future__ import annotations

import io
import json

import pytest

from arun import errdefs
from arun.client import Mount
from arun.cmd.ctl.containers import _cri_log_line, parse_mount
from arun.cmd.ctl.output import Column, emit, to_yaml
from arun.cmd.main import _parser


def test_yaml_writer_quotes_what_plain_style_would_misread() -> None:
    doc = {
        "name": "docker.io/library/busybox:latest",
        "count": 3,
        "ok": True,
        "none": None,
        "empty": "",
        "looks_bool": "yes",
        "looks_num": "0123",
        "colon": "a: b",
        "labels": {},
        "list": ["x", {"k": "v", "n": [1, 2]}, []],
        "nested": {"deep": {"value": "ok"}},
    }
    text = to_yaml(doc)
    assert text == (
        "name: docker.io/library/busybox:latest\n"
        "count: 3\n"
        "ok: true\n"
        "none: null\n"
        'empty: ""\n'
        'looks_bool: "yes"\n'
        'looks_num: "0123"\n'
        'colon: "a: b"\n'
        "labels: {}\n"
        "list:\n"
        "- x\n"
        "- k: v\n"
        '  "n":\n'
        "  - 1\n"
        "  - 2\n"
        "- []\n"
        "nested:\n"
        "  deep:\n"
        "    value: ok\n"
    )


def test_emit_formats() -> None:
    recs = [{"id": "a", "n": 1, "labels": {"x": "y"}}, {"id": "bb", "n": 22, "labels": {}}]
    cols = [Column("ID", "id"), Column("N", "n", right=True), Column("LABELS", "labels")]
    out = io.StringIO()
    emit(out, "table", recs, cols)
    assert out.getvalue() == "ID    N   LABELS\na     1   x=y\nbb   22   -\n"
    out = io.StringIO()
    emit(out, "json", recs, cols)
    assert json.loads(out.getvalue()) == recs
    out = io.StringIO()
    emit(out, "table", recs, cols, quiet_key="id", quiet=True)
    assert out.getvalue() == "a\nbb\n"
    out = io.StringIO()
    emit(out, "yaml", {"removed": ["a"]})
    assert out.getvalue() == "removed:\n- a\n"


def test_mount_specs() -> None:
    assert parse_mount("type=bind,src=/a,dst=/b,options=rbind:ro") == Mount(
        "bind", "/a", "/b", ("rbind", "ro")
    )
    assert parse_mount("src=/a,dst=/b") == Mount("bind", "/a", "/b", ("rbind",))
    assert parse_mount("type=tmpfs,source=tmpfs,destination=/t") == Mount("tmpfs", "tmpfs", "/t", ())
    for bad in ("src=/a", "src=/a,dst=rel", "nonsense", "src=/a,dst=/b,colour=red"):
        with pytest.raises(errdefs.InvalidArgumentError):
            parse_mount(bad)


def test_cri_log_lines() -> None:
    assert _cri_log_line(b"2016-10-06T00:17:09.669794202Z stdout F hello world\n") == b"hello world\n"
    assert _cri_log_line(b"2016-10-06T00:17:09.669794202Z stderr P part") == b"part"
    assert _cri_log_line(b"not cri\n") == b"not cri\n"


def test_global_flags_before_or_after_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARUN_ADDRESS", raising=False)
    monkeypatch.delenv("CONTAINERD_ADDRESS", raising=False)
    monkeypatch.delenv("CONTAINERD_NAMESPACE", raising=False)
    p = _parser()
    a = p.parse_args(["-a", "/x.sock", "-n", "ns1", "images", "ls"])
    assert (a.address, a.namespace, a.output, a.command, a.images_command) == (
        "/x.sock",
        "ns1",
        "table",
        "images",
        "ls",
    )
    a = p.parse_args(["images", "ls", "--address", "/y.sock", "-o", "json"])
    assert (a.address, a.namespace, a.output) == ("/y.sock", "default", "json")
    a = p.parse_args(["-o", "yaml", "ps"])
    assert a.output == "yaml"  # a flag before the command is not reset by the command's parser
    a = p.parse_args(["run", "--rm", "-e", "A=1", "img", "id1", "sh", "-c", "echo -n x"])
    assert (a.image, a.id, a.argv, a.env) == ("img", "id1", ["sh", "-c", "echo -n x"], ["A=1"])
    a = p.parse_args(["daemon", "--root", "/r"])
    assert a.command == "daemon" and a.address is None  # the daemon's own flag, not the client default
    monkeypatch.setenv("ARUN_ADDRESS", "/env.sock")
    assert _parser().parse_args(["ps"]).address == "/env.sock"


def test_short_address_flag_after_commands_without_an_all_flag() -> None:
    p = _parser()
    assert p.parse_args(["images", "-a", "/s.sock", "-n", "x", "pull", "busybox"]).address == "/s.sock"
    assert p.parse_args(["ps", "-a", "/s.sock"]).address == "/s.sock"
    k = p.parse_args(["kill", "-a", "c1"])
    assert k.all is True and k.ids == ["c1"]
    c = p.parse_args(["containers", "-a", "--address", "/s.sock"])
    assert c.all is True and c.address == "/s.sock"


def test_bench_through_the_arun_command() -> None:
    a = _parser().parse_args(["bench", "--endpoint", "unix:///x.sock", "--command", "sleep 1", "--pods", "3"])
    assert (a.command, a.workload_command, a.pods, a.endpoint) == ("bench", "sleep 1", 3, ["unix:///x.sock"])


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_pull_progress_bars_one_line_per_layer() -> None:
    from arun.client import PullProgress
    from arun.cmd.ctl.images import ProgressBars

    layer_a = "sha256:" + "a" * 64
    layer_b = "layer-sha256:" + "b" * 64
    term = _Terminal()
    bars = ProgressBars(term)
    bars(PullProgress(layer_a, "downloading", 0, 1000))
    bars(PullProgress(layer_b, "downloading", 0, 4000))
    bars(PullProgress(layer_b, "downloading", 2000, 4000))
    bars.draw()  # what the next redraw shows
    frame = term.getvalue().rsplit("\x1b[J", 1)[-1].splitlines()
    assert len(frame) == 2
    assert frame[0].startswith("aaaaaaaaaaaa ") and "[" + " " * ProgressBars.WIDTH + "]" in frame[0]
    half = "=" * (ProgressBars.WIDTH // 2)
    assert (
        frame[1].startswith("layer-bbbbbbbbbbbb") and f"[{half}{' ' * (ProgressBars.WIDTH // 2)}]" in frame[1]
    )
    assert "\x1b[2A" in term.getvalue()  # earlier frames are overwritten, not appended
    # Not a terminal: a line per state change of each item, no escapes.
    plain = io.StringIO()
    bars = ProgressBars(plain)
    for p in (
        PullProgress(layer_a, "downloading", 0, 1000),
        PullProgress(layer_a, "downloading", 500, 1000),
        PullProgress(layer_a, "done", 1000, 1000),
        PullProgress(layer_b, "exists", 4000, 4000),
    ):
        bars(p)
    assert plain.getvalue().splitlines() == [
        "aaaaaaaaaaaa: downloading",
        "aaaaaaaaaaaa: done",
        "layer-bbbbbbbbbbbb: exists",
    ]
    quiet = io.StringIO()
    ProgressBars(quiet, enabled=False)(PullProgress(layer_a, "done", 1, 1))
    assert quiet.getvalue() == ""
