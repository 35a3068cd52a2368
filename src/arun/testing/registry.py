"""A real OCI registry for tests: Debian's ``docker-registry`` (distribution 2.8) on loopback.

``start_registry(tmp)`` writes a config (filesystem storage under ``tmp``, a free
127.0.0.1 port), starts the binary and waits until ``/v2/`` answers; ``stop()`` ends
that one process. Three auth modes:

* ``None``: anonymous pull and push;
* ``HtpasswdAuth``: HTTP Basic, checked by the registry against a bcrypt htpasswd file;
* ``TokenAuth``: the registry's own token auth (JWT, RS256, signed by a throwaway
  certificate it trusts) with a small aiohttp token server (``TokenServer``) issuing
  tokens — the Bearer flow containerd meets on Docker Hub, end to end.

Nothing here is used by the daemon; only tests and benchmarks import it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

__all__ = [
    "REGISTRY_BINARY",
    "HtpasswdAuth",
    "RegistryServer",
    "TokenAuth",
    "TokenServer",
    "free_port",
    "have_registry",
    "registry",
    "start_registry",
]

REGISTRY_BINARY = os.environ.get("ARUN_TEST_REGISTRY", "/usr/bin/docker-registry")
SERVICE = "arun-test-registry"
ISSUER = "arun-test-token-issuer"


def have_registry() -> bool:
    return os.access(REGISTRY_BINARY, os.X_OK)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bcrypt(password: str) -> str:
    """A bcrypt hash (``$2b$``) through libxcrypt, which glibc systems ship."""
    lib = ctypes.CDLL("libcrypt.so.1")
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt_gensalt.restype = ctypes.c_char_p
    salt = lib.crypt_gensalt(b"$2b$", 5, None, 0)
    out = lib.crypt(password.encode(), salt)
    if not out or not out.startswith(b"$2b$"):
        raise RuntimeError("libcrypt has no bcrypt support")
    return str(out.decode())


@dataclass
class HtpasswdAuth:
    """Basic auth: ``users`` maps user names to passwords."""

    users: Mapping[str, str]
    realm: str = "arun-test"


@dataclass
class TokenAuth:
    """Bearer token auth.

    ``users`` maps user names to passwords; ``grants`` maps a user name (``""`` for
    anonymous) to the actions it gets on every repository, e.g. ``{"alice": ("pull",
    "push"), "": ("pull",)}``. A user not in ``grants`` gets no access at all.
    """

    users: Mapping[str, str]
    grants: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Refresh tokens the token server accepts (grant_type=refresh_token), mapped to a user.
    refresh_tokens: Mapping[str, str] = field(default_factory=dict)
    expires_in: int = 300


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _Signer:
    """An RSA key and a self-signed certificate (made with the ``openssl`` CLI), signing
    JWTs as RS256 with the certificate in ``x5c`` so the registry can check it."""

    def __init__(self, directory: Path) -> None:
        self.key = directory / "token.key"
        self.cert = directory / "token.crt"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=arun-test-token-issuer",
                "-keyout",
                str(self.key),
                "-out",
                str(self.cert),
            ],
            check=True,
            capture_output=True,
        )
        der = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert), "-outform", "DER"], check=True, capture_output=True
        ).stdout
        self.x5c = base64.b64encode(der).decode()

    async def sign(self, claims: Mapping[str, Any]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        proc = await asyncio.create_subprocess_exec(
            "openssl", "dgst", "-sha256", "-sign", str(self.key),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        sig, err = await proc.communicate(signing_input.encode())
        if proc.returncode != 0:
            raise RuntimeError(f"openssl dgst failed: {err.decode(errors='replace')}")
        return f"{signing_input}.{_b64url(sig)}"


class TokenServer:
    """A token endpoint (``GET /token`` with Basic auth, ``POST /token`` OAuth2 form), as
    the distribution token spec describes. ``requests`` records what it was asked."""

    def __init__(self, auth: TokenAuth, signer: _Signer) -> None:
        self.auth = auth
        self.signer = signer
        self.port = 0
        self.requests: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/token", self._get)
        app.router.add_post("/token", self._post)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _basic_user(self, request: web.Request) -> str | None:
        """The authenticated user, ``""`` for anonymous; None for bad credentials."""
        header = request.headers.get("Authorization", "")
        if not header:
            return ""
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return None
        return user if self.auth.users.get(user) == password else None

    async def _issue(self, user: str, service: str, scopes: list[str]) -> web.Response:
        allowed = set(self.auth.grants.get(user, ()))
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) < 3 or parts[0] != "repository":
                continue
            name, wanted = ":".join(parts[1:-1]), parts[-1].split(",")
            granted = [a for a in wanted if a in allowed]
            if granted:
                access.append({"type": "repository", "name": name, "actions": granted})
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": user,
            "aud": service,
            "exp": now + self.auth.expires_in,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        token = await self.signer.sign(claims)
        return web.json_response(
            {"token": token, "access_token": token, "expires_in": self.auth.expires_in, "issued_at": ""}
        )

    async def _get(self, request: web.Request) -> web.Response:
        user = self._basic_user(request)
        scopes = request.query.getall("scope", [])
        self.requests.append({"method": "GET", "user": user, "scopes": scopes})
        if user is None:
            return web.json_response({"details": "invalid credentials"}, status=401)
        return await self._issue(user, request.query.get("service", ""), scopes)

    async def _post(self, request: web.Request) -> web.Response:
        form = await request.post()
        grant = str(form.get("grant_type", ""))
        scopes = " ".join(str(s) for s in form.getall("scope", [])).split()
        self.requests.append({"method": "POST", "grant_type": grant, "scopes": scopes})
        user: str | None
        if grant == "password":
            u, p = str(form.get("username", "")), str(form.get("password", ""))
            user = u if self.auth.users.get(u) == p else None
        elif grant == "refresh_token":
            user = self.auth.refresh_tokens.get(str(form.get("refresh_token", "")))
        else:
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if user is None:
            return web.json_response({"error": "invalid_grant"}, status=401)
        return await self._issue(user, str(form.get("service", "")), scopes)


@dataclass
class RegistryServer:
    """A running ``docker-registry``; ``host`` is ``127.0.0.1:<port>``. With TLS,
    ``ca_cert`` is the PEM file of its self-signed certificate (for 127.0.0.1)."""

    host: str
    root: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    token_server: TokenServer | None = None
    ca_cert: Path | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.ca_cert else 'http'}://{self.host}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    async def stop(self) -> None:
        await self.stop_process()
        if self.token_server is not None:
            await self.token_server.stop()

    async def stop_process(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, 5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                await asyncio.to_thread(self.process.wait)


def make_tls_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost: (cert, key)."""
    cert, key = directory / "tls.crt", directory / "tls.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def _config(root: Path, port: int, auth: HtpasswdAuth | TokenAuth | None, extra: Mapping[str, Any]) -> str:
    # JSON is YAML: the registry's config parser reads it as is.
    cfg: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": uuid.uuid4().hex},
    }
    if isinstance(auth, HtpasswdAuth):
        path = root / "htpasswd"
        path.write_text("".join(f"{u}:{bcrypt(p)}\n" for u, p in auth.users.items()))
        cfg["auth"] = {"htpasswd": {"realm": auth.realm, "path": str(path)}}
    cfg.update(extra)
    return json.dumps(cfg)


async def start_registry(
    tmp: Path | None = None,
    *,
    auth: HtpasswdAuth | TokenAuth | None = None,
    extra_config: Mapping[str, Any] | None = None,
    tls: bool = False,
) -> RegistryServer:
    """Start a registry with its storage under ``tmp`` (a new temp dir if None); with
    ``tls``, serving HTTPS with a fresh self-signed certificate."""
    if not have_registry():
        raise FileNotFoundError(f"{REGISTRY_BINARY} not found (Debian package docker-registry)")
    if tmp is not None:
        os.makedirs(tmp, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="arun-registry-", dir=tmp))
    extra = dict(extra_config or {})
    ca_cert: Path | None = None
    token_server: TokenServer | None = None
    if isinstance(auth, TokenAuth):
        signer = await asyncio.to_thread(_Signer, root)
        token_server = TokenServer(auth, signer)
        await token_server.start()
        extra["auth"] = {
            "token": {
                "realm": token_server.realm,
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": str(signer.cert),
            }
        }
    tls_cfg: dict[str, str] | None = None
    if tls:
        ca_cert, key = await asyncio.to_thread(make_tls_cert, root)
        tls_cfg = {"certificate": str(ca_cert), "key": str(key)}
    for _ in range(5):
        port = free_port()
        config = root / "config.yml"
        text = _config(root, port, auth, extra)
        if tls_cfg is not None:
            cfg = json.loads(text)
            cfg["http"]["tls"] = tls_cfg
            text = json.dumps(cfg)
        config.write_text(text)
        log_path = root / "registry.log"
        proc = _spawn(config, log_path)
        server = RegistryServer(f"127.0.0.1:{port}", root, proc, log_path, token_server, ca_cert)
        if await _wait_ready(server):
            return server
        await server.stop_process()
    if token_server is not None:
        await token_server.stop()
    raise RuntimeError(f"docker-registry did not start:\n{server.log()}")


def _spawn(config: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as logf:
        return subprocess.Popen(
            [REGISTRY_BINARY, "serve", str(config)],
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


async def _wait_ready(server: RegistryServer, wait: float = 10.0) -> bool:
    deadline = time.monotonic() + wait
    ssl_arg: Any = True
    if server.ca_cert is not None:
        import ssl

        ssl_arg = ssl.create_default_context(cafile=str(server.ca_cert))
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                return False
            try:
                async with session.get(f"{server.url}/v2/", ssl=ssl_arg) as resp:
                    if resp.status in (200, 401):
                        return True
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.02)
    return False


@contextlib.asynccontextmanager
async def registry(
    tmp: Path | None = None,
    *,
    auth: HtpasswdAuth | TokenAuth | None = None,
    extra_config: Mapping[str, Any] | None = None,
    keep_data: bool = False,
    tls: bool = False,
) -> AsyncIterator[RegistryServer]:
    """``async with registry(tmp_path) as reg:`` — started, then stopped and removed."""
    server = await start_registry(tmp, auth=auth, extra_config=extra_config, tls=tls)
    try:
        yield server
    finally:
        await server.stop()
        if not keep_data:
            shutil.rmtree(server.root, ignore_errors=True)
