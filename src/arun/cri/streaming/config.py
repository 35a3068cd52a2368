"""Settings of the streaming server, and their reading from containerd's CRI config keys."""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
from dataclasses import dataclass

from arun import errdefs
from arun.cri.streaming import constants as c
from arun.cri.streaming.cache import DEFAULT_MAX_IN_FLIGHT, DEFAULT_TTL
from arun.cri.streaming.handshake import Timeouts

DEFAULT_IDLE_TIMEOUT = 4 * 3600.0


@dataclass(frozen=True)
class StreamingConfig:
    """Settings of the streaming server; the defaults are containerd's."""

    #: Address to listen on (containerd's ``stream_server_address``).
    address: str = "127.0.0.1"
    #: Port to listen on; 0 picks a free one (``stream_server_port``).
    port: int = 0
    #: Scheme, host and port to put in URLs instead of the listening address (e.g. behind NAT).
    base_url: str | None = None
    #: Close a streaming connection after this many seconds without traffic
    #: (``stream_idle_timeout``); None for never.
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT
    #: How long a SPDY client has to open its streams.
    stream_creation_timeout: float = 30.0
    #: After exec/attach ends, how long to wait for the client to hang up before closing.
    close_grace: float = 30.0
    #: How long WebSocket output is held after the upgrade, for client-go <= 1.33's stream set-up race.
    websocket_hold: float = 0.1
    #: Serve HTTPS with this context (``enable_tls_streaming``); None for plain HTTP.
    ssl_context: ssl.SSLContext | None = None
    remotecommand_protocols: tuple[str, ...] = c.SPDY_REMOTECOMMAND_PROTOCOLS
    portforward_protocols: tuple[str, ...] = c.SPDY_PORTFORWARD_PROTOCOLS
    #: Lifetime of an unused URL token, and how many may wait at once.
    token_ttl: float = DEFAULT_TTL
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 0xFFFF:
            raise errdefs.InvalidArgumentError(f"invalid stream server port {self.port}")
        if self.idle_timeout is not None and self.idle_timeout <= 0:
            raise errdefs.InvalidArgumentError(f"invalid stream idle timeout {self.idle_timeout}")
        if self.stream_creation_timeout <= 0:
            raise errdefs.InvalidArgumentError(
                f"invalid stream creation timeout {self.stream_creation_timeout}"
            )
        if not self.remotecommand_protocols or not self.portforward_protocols:
            raise errdefs.InvalidArgumentError("the streaming protocol lists must not be empty")

    @property
    def timeouts(self) -> Timeouts:
        return Timeouts(
            self.idle_timeout, self.stream_creation_timeout, self.close_grace, self.websocket_hold
        )


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(text: str) -> float:
    """Seconds in a Go ``time.Duration`` string (``4h0m0s``, ``1.5h``, ``300ms``, ``0``)."""
    raw = text.strip()
    sign = -1.0 if raw.startswith("-") else 1.0
    body = raw.lstrip("+-")
    if body == "0":
        return 0.0
    if not body:
        raise errdefs.InvalidArgumentError(f"invalid duration {text!r}")
    total, pos = 0.0, 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None:
            raise errdefs.InvalidArgumentError(f"invalid duration {text!r}")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return sign * total


def default_host_address() -> str:
    """The address of the interface that carries the default route (127.0.0.1 if there is none).

    A UDP ``connect`` only looks the route up; nothing is sent.
    """
    for family, probe in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.connect((probe, 9))
                address = str(sock.getsockname()[0])
        except OSError:
            continue
        if not ipaddress.ip_address(address).is_unspecified:
            return address
    return "127.0.0.1"


def from_cri_config(
    *,
    stream_server_address: str = "127.0.0.1",
    stream_server_port: str = "0",
    stream_idle_timeout: str = "4h0m0s",
    enable_tls_streaming: bool = False,
    tls_cert_file: str = "",
    tls_key_file: str = "",
) -> StreamingConfig:
    """The config from containerd's CRI keys (``[plugins."io.containerd.grpc.v1.cri"]`` v2, or the
    ``io.containerd.server.v1.cri`` / ``io.containerd.cri.v1.runtime`` sections of v3).

    An empty address means the host's default-route address, as containerd resolves it; an idle
    timeout of 0 means none. TLS needs ``x509_key_pair_streaming`` files: containerd's
    self-signed fallback is not supported.
    """
    address = stream_server_address or default_host_address()
    try:
        port = int(stream_server_port or "0")
    except ValueError as exc:
        raise errdefs.InvalidArgumentError(f"invalid stream_server_port {stream_server_port!r}") from exc
    idle = parse_go_duration(stream_idle_timeout) if stream_idle_timeout else DEFAULT_IDLE_TIMEOUT
    if idle < 0:
        raise errdefs.InvalidArgumentError(f"invalid stream idle timeout {stream_idle_timeout!r}")
    context: ssl.SSLContext | None = None
    if enable_tls_streaming:
        if tls_cert_file and not tls_key_file:
            raise errdefs.InvalidArgumentError("must set X509KeyPairStreaming.TLSKeyFile")
        if tls_key_file and not tls_cert_file:
            raise errdefs.InvalidArgumentError("must set X509KeyPairStreaming.TLSCertFile")
        if not tls_cert_file:
            raise errdefs.UnimplementedError(
                "a self-signed certificate for the streaming server is not supported: "
                "set x509_key_pair_streaming tls_cert_file and tls_key_file"
            )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(tls_cert_file, tls_key_file)
        except (OSError, ssl.SSLError) as exc:
            raise errdefs.InvalidArgumentError(
                f"failed to load x509 key pair for stream server: {exc}"
            ) from exc
    elif tls_cert_file:
        raise errdefs.InvalidArgumentError(
            "X509KeyPairStreaming.TLSCertFile is set but EnableTLSStreaming is not set"
        )
    elif tls_key_file:
        raise errdefs.InvalidArgumentError(
            "X509KeyPairStreaming.TLSKeyFile is set but EnableTLSStreaming is not set"
        )
    return StreamingConfig(address=address, port=port, idle_timeout=idle or None, ssl_context=context)
