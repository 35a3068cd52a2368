"""Names shared by the streaming protocols: subprotocols, stream types, headers, and negotiation."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

# remotecommand subprotocols (X-Stream-Protocol-Version over SPDY, Sec-WebSocket-Protocol over WebSocket)
REMOTECOMMAND_V1 = "channel.k8s.io"
REMOTECOMMAND_V2 = "v2.channel.k8s.io"
REMOTECOMMAND_V3 = "v3.channel.k8s.io"  # adds the resize stream
REMOTECOMMAND_V4 = "v4.channel.k8s.io"  # exit status as a JSON metav1.Status
REMOTECOMMAND_V5 = "v5.channel.k8s.io"  # WebSocket only: adds the half-close signal
BASE64_V1 = "base64.channel.k8s.io"
BASE64_V4 = "v4.base64.channel.k8s.io"

PORTFORWARD_V1 = "portforward.k8s.io"
#: client-go's port-forward over WebSocket tunnels SPDY: this prefix on the SPDY subprotocol.
SPDY_TUNNEL_PREFIX = "SPDY/3.1+"
PORTFORWARD_TUNNEL = SPDY_TUNNEL_PREFIX + PORTFORWARD_V1

#: What the SPDY endpoint offers for exec/attach, best first (kubelet's list).
SPDY_REMOTECOMMAND_PROTOCOLS: tuple[str, ...] = (
    REMOTECOMMAND_V4,
    REMOTECOMMAND_V3,
    REMOTECOMMAND_V2,
    REMOTECOMMAND_V1,
)
SPDY_PORTFORWARD_PROTOCOLS: tuple[str, ...] = (PORTFORWARD_V1,)

# HTTP headers
HEADER_PROTOCOL_VERSION = "X-Stream-Protocol-Version"
HEADER_ACCEPTED_PROTOCOL_VERSIONS = "X-Accepted-Stream-Protocol-Versions"
UPGRADE_SPDY = "SPDY/3.1"

# SPDY stream headers
STREAM_TYPE = "streamtype"  # sent as "streamType"; SPDY header names travel in lower case
STREAM_TYPE_ERROR = "error"
STREAM_TYPE_STDIN = "stdin"
STREAM_TYPE_STDOUT = "stdout"
STREAM_TYPE_STDERR = "stderr"
STREAM_TYPE_RESIZE = "resize"
STREAM_TYPE_DATA = "data"
PORT_HEADER = "port"
REQUEST_ID_HEADER = "requestid"  # sent as "requestID"

# exit status
NON_ZERO_EXIT_CODE_REASON = "NonZeroExitCode"
EXIT_CODE_CAUSE_TYPE = "ExitCode"

#: RFC 6455 close code for a normal closure.
WS_CLOSE_NORMAL = 1000


def split_header_values(values: Iterable[str]) -> list[str]:
    """Every comma-separated, trimmed, non-empty token of the given header values, in order."""
    out: list[str] = []
    for value in values:
        for token in value.split(","):
            token = token.strip()
            if token:
                out.append(token)
    return out


def negotiate(client: Sequence[str], server: Sequence[str]) -> str | None:
    """The first protocol of the client's list the server supports (the client's preference wins)."""
    allowed = set(server)
    for proto in client:
        if proto in allowed:
            return proto
    return None
