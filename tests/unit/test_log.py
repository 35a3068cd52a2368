from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from arun import log as arun_log
from arun import namespaces
from arun.errdefs import InvalidArgumentError
from arun.plugin.context import current_plugin


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def emit(fmt: str, level: str = "debug", **extra: object) -> str:
    out = io.StringIO()
    arun_log.setup(level, fmt, out)
    logging.getLogger("arun.test").info("hello %s", "world", extra=extra)
    return out.getvalue()


def test_text_line_has_context_fields(restore_root: None) -> None:
    rid = arun_log.request_id.set("abc123")
    mid = arun_log.method.set("/pkg.Svc/Method")
    pid = current_plugin.set("io.containerd.grpc.v1.cri")
    try:
        with namespaces.use("k8s.io"), arun_log.bind(container_id="c1"):
            line = emit("text", id="x y")
    finally:
        arun_log.request_id.reset(rid)
        arun_log.method.reset(mid)
        current_plugin.reset(pid)
    assert line.startswith('time="') or line.startswith("time=")
    assert 'level=info msg="hello world"' in line
    for part in [
        'id="x y"',
        "namespace=k8s.io",
        "request_id=abc123",
        "method=/pkg.Svc/Method",
        "plugin=io.containerd.grpc.v1.cri",
        "container_id=c1",
    ]:
        assert part in line
    assert line.endswith("\n") and line.count("\n") == 1


def test_json_line(restore_root: None) -> None:
    with namespaces.use("default"):
        line = emit("json", n=3)
    obj = json.loads(line)
    assert obj["msg"] == "hello world"
    assert obj["level"] == "info"
    assert obj["namespace"] == "default"
    assert obj["n"] == 3
    assert obj["logger"] == "arun.test"
    assert "request_id" not in obj  # unset context adds nothing


def test_extra_wins_over_context(restore_root: None) -> None:
    with namespaces.use("default"):
        obj = json.loads(emit("json", namespace="other"))
    assert obj["namespace"] == "other"


def test_exceptions_are_formatted(restore_root: None) -> None:
    out = io.StringIO()
    arun_log.setup("info", "json", out)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("arun.test").exception("failed")
    obj = json.loads(out.getvalue())
    assert "ValueError: boom" in obj["error"]


def test_levels(restore_root: None) -> None:
    assert emit("text", level="warn") == ""
    assert arun_log.parse_level("TRACE") == logging.DEBUG
    with pytest.raises(InvalidArgumentError, match="unknown log level 'loud'"):
        arun_log.parse_level("loud")
    with pytest.raises(InvalidArgumentError, match="unknown log format"):
        arun_log.setup("info", "xml")


def test_setup_replaces_its_own_handler(restore_root: None) -> None:
    before = len(logging.getLogger().handlers)
    arun_log.setup("info", "text", io.StringIO())
    arun_log.setup("info", "text", io.StringIO())
    assert len(logging.getLogger().handlers) == before + 1
    # Library chatter stays quiet below "trace".
    arun_log.setup("debug", "text", io.StringIO())
    assert logging.getLogger("hpack").getEffectiveLevel() == logging.INFO
    arun_log.setup("trace", "text", io.StringIO())
    assert logging.getLogger("hpack").getEffectiveLevel() == logging.DEBUG


def test_hpack_header_logging_is_dropped_in_c_below_trace(
    restore_root: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # hpack logs each header at DEBUG from its own module loggers; below "trace" setup() makes
    # those calls cost no Python frame at all. If hpack moved its logging elsewhere, the count
    # below would no longer be zero.
    import hpack

    asked: list[str] = []
    enabled = logging.Logger.isEnabledFor

    def spy(self: logging.Logger, level: int) -> bool:
        asked.append(self.name)
        return enabled(self, level)

    monkeypatch.setattr(logging.Logger, "isEnabledFor", spy)
    headers = [(":method", "POST"), (":path", "/a.B/C"), ("te", "trailers"), ("x-key", "v" * 20)]

    def roundtrip() -> None:
        assert hpack.Decoder().decode(hpack.Encoder().encode(headers)) == headers

    arun_log.setup("info", "text", io.StringIO())
    roundtrip()
    assert [n for n in asked if n.startswith("hpack")] == []
    out = io.StringIO()
    arun_log.setup("trace", "text", out)
    roundtrip()
    assert any(n.startswith("hpack") for n in asked)
    assert "header table" in out.getvalue()
    arun_log.setup("info", "text", io.StringIO())
    asked.clear()
    roundtrip()
    assert [n for n in asked if n.startswith("hpack")] == []
