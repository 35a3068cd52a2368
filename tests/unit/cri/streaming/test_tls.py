"""The streaming server over TLS (containerd's enable_tls_streaming): https and wss URLs."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from arun import errdefs
from arun.api.cri.runtime.v1 import api_pb2
from arun.cri.streaming import config
from arun.cri.streaming.server import StreamingConfig, StreamingServer
from arun.testing import streamclient as sc
from arun.testing.streaming import FakeStreamingRuntime

TIMEOUT = 20


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        if os.environ.get("ARUN_TEST_STRICT") == "1":
            pytest.fail("openssl is required to make a test certificate")
        pytest.skip("needs openssl to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=arun-test",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_https_and_wss(runtime: FakeStreamingRuntime, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    async with StreamingServer(runtime, StreamingConfig(ssl_context=server_ctx)) as server:
        assert server.url.startswith("https://127.0.0.1:")
        req = api_pb2.ExecRequest(container_id="ctr", cmd=["echo", "secure"], stdout=True, stderr=True)
        result = await asyncio.wait_for(
            sc.spdy_remotecommand(server.get_exec(req).url, ssl_context=client_ctx), TIMEOUT
        )
        assert (result.stdout, result.exit_code) == (b"secure\n", 0)
        result = await asyncio.wait_for(
            sc.ws_remotecommand(server.get_exec(req).url, ssl_context=client_ctx), TIMEOUT
        )
        assert (result.stdout, result.exit_code) == (b"secure\n", 0)
        url = server.get_port_forward(api_pb2.PortForwardRequest(pod_sandbox_id="pod")).url
        client = await sc.PortForwardClient.connect(url, websocket=True, ssl_context=client_ctx)
        try:
            assert (await asyncio.wait_for(client.forward(80, b"tls"), TIMEOUT)).data == b"TLS"
        finally:
            await client.close()


async def test_base_url_override(runtime: FakeStreamingRuntime) -> None:
    async with StreamingServer(runtime, StreamingConfig(base_url="http://node.example:10010/")) as server:
        url = server.get_exec(api_pb2.ExecRequest(container_id="c", cmd=["x"], stdout=True)).url
        assert url.startswith("http://node.example:10010/exec/")


# --- containerd's config keys --------------------------------------------------------------------------
def test_go_durations() -> None:
    assert config.parse_go_duration("4h0m0s") == 4 * 3600
    assert config.parse_go_duration("1.5h") == 5400
    assert config.parse_go_duration("1m30s") == 90
    assert config.parse_go_duration("300ms") == pytest.approx(0.3)
    assert config.parse_go_duration("0") == 0
    assert config.parse_go_duration("-2s") == -2
    for bad in ("", "4", "h", "1x", "1h 2m", "1.2.3s"):
        with pytest.raises(errdefs.InvalidArgumentError):
            config.parse_go_duration(bad)


def test_from_cri_defaults() -> None:
    cfg = config.from_cri_config()
    assert (cfg.address, cfg.port, cfg.idle_timeout, cfg.ssl_context) == ("127.0.0.1", 0, 4 * 3600, None)
    assert config.from_cri_config(stream_idle_timeout="0s").idle_timeout is None
    assert config.from_cri_config(stream_server_port="10010").port == 10010
    assert config.from_cri_config(stream_server_address="").address  # the default-route address, or loopback
    with pytest.raises(errdefs.InvalidArgumentError):
        config.from_cri_config(stream_server_port="http")
    with pytest.raises(errdefs.InvalidArgumentError):
        config.from_cri_config(stream_server_port="70000")
    with pytest.raises(errdefs.InvalidArgumentError):
        config.from_cri_config(stream_idle_timeout="forever")


def test_from_cri_tls(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    cfg = config.from_cri_config(enable_tls_streaming=True, tls_cert_file=str(cert), tls_key_file=str(key))
    assert cfg.ssl_context is not None
    with pytest.raises(errdefs.InvalidArgumentError, match="TLSKeyFile"):
        config.from_cri_config(enable_tls_streaming=True, tls_cert_file=str(cert))
    with pytest.raises(errdefs.InvalidArgumentError, match="EnableTLSStreaming is not set"):
        config.from_cri_config(tls_cert_file=str(cert))
    with pytest.raises(errdefs.UnimplementedError):
        config.from_cri_config(enable_tls_streaming=True)
    with pytest.raises(errdefs.InvalidArgumentError, match="x509"):
        config.from_cri_config(enable_tls_streaming=True, tls_cert_file=str(key), tls_key_file=str(key))
