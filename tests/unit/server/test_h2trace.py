from __future__ import annotations

import builtins
import logging
import uuid
from pathlib import Path
from typing import Any

import h2
import h2.config
import h2.connection
import pytest

from arun.server import h2trace
from arun.server.grpc import H2_ENV, GRPCServer, ServiceTable


class Recorder:
    """An h2 logger keeping what h2 passes to ``trace``."""

    def __init__(self) -> None:
        self.traced: list[tuple[Any, ...]] = []

    def debug(self, *args: Any, **kwargs: Any) -> None:
        pass

    def trace(self, *args: Any, **kwargs: Any) -> None:
        self.traced.append(args)


def client_bytes() -> bytes:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":path", "/a.B/C"), (":authority", "x")])
    conn.send_data(1, b"\0\0\0\0\0", end_stream=True)
    conn.ping(b"12345678")
    return conn.data_to_send()


def test_received_frames_are_traced_with_a_lazy_repr_that_prints_the_same() -> None:
    h2trace.install()
    rec = Recorder()
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, logger=rec))
    server.initiate_connection()
    server.receive_data(client_bytes())
    frames = [args[1] for args in rec.traced if args[0] == "Received frame: %s"]
    # SETTINGS, HEADERS, DATA, PING: if h2 stopped calling the module's repr here, these
    # would be str and this fails.
    assert len(frames) == 4
    assert all(isinstance(f, h2trace.LazyRepr) for f in frames)
    texts = [str(f) for f in frames]
    assert [t.split("(", 1)[0] for t in texts] == ["SettingsFrame", "HeadersFrame", "DataFrame", "PingFrame"]
    assert texts == [builtins.repr(f.obj) for f in frames] == [repr(f) for f in frames]
    # What a real logger would print: the same line as with the eager repr.
    record = logging.LogRecord("h2", logging.DEBUG, "", 0, "Received frame: %s", (frames[3],), None)
    assert record.getMessage() == "Received frame: " + builtins.repr(frames[3].obj)


def test_only_receive_frame_looks_repr_up_in_h2_connection() -> None:
    assert h2trace.repr_users() == {"H2Connection._receive_frame"}


def test_another_h2_is_left_alone_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delitem(h2.connection.__dict__, "repr", raising=False)
    monkeypatch.setattr(h2, "__version__", "9.9.9")
    with caplog.at_level(logging.WARNING, logger="arun.server.h2trace"):
        assert h2trace.install() is False
    assert "repr" not in h2.connection.__dict__
    [record] = [r for r in caplog.records if r.name == "arun.server.h2trace"]
    assert record.levelno == logging.WARNING and record.__dict__["h2_version"] == "9.9.9"


def test_pinned_version_is_the_installed_one() -> None:
    pyproject = Path(__file__).resolve().parents[3] / "pyproject.toml"
    assert f'"h2=={h2trace.H2_VERSION}"' in pyproject.read_text()
    assert h2.__version__ == h2trace.H2_VERSION


async def test_server_start_installs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """On h2's connection (ARUN_GRPC_H2=h2), the server's start installs the lazy repr."""
    monkeypatch.setenv(H2_ENV, "h2")
    monkeypatch.delitem(h2.connection.__dict__, "repr", raising=False)
    path = Path("/tmp") / f"arun-test-{uuid.uuid4().hex[:12]}.sock"
    srv = GRPCServer(ServiceTable())
    await srv.start(path)
    try:
        assert h2.connection.__dict__.get("repr") is h2trace.LazyRepr
    finally:
        await srv.close()
        path.unlink(missing_ok=True)


async def test_server_on_its_own_connection_leaves_h2_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default server does not run h2's connection, so nothing of h2 is patched."""
    monkeypatch.delenv(H2_ENV, raising=False)
    monkeypatch.delitem(h2.connection.__dict__, "repr", raising=False)
    path = Path("/tmp") / f"arun-test-{uuid.uuid4().hex[:12]}.sock"
    srv = GRPCServer(ServiceTable())
    await srv.start(path)
    try:
        assert "repr" not in h2.connection.__dict__
    finally:
        await srv.close()
        path.unlink(missing_ok=True)
