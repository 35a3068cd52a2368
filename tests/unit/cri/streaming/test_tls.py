"""The streaming server over TLS (containerd's enable_tls_streaming): https and wss URLs."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from arun.api.cri.runtime.v1 import api_pb2
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
