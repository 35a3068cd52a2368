"""WebSocket channel framing (channel.k8s.io family), without sockets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arun.cri.streaming import channels
from arun.cri.streaming import constants as c

V5 = channels.REMOTECOMMAND_PROTOCOLS[c.REMOTECOMMAND_V5]
V4 = channels.REMOTECOMMAND_PROTOCOLS[c.REMOTECOMMAND_V4]
V1 = channels.REMOTECOMMAND_PROTOCOLS[c.REMOTECOMMAND_V1]
B64 = channels.REMOTECOMMAND_PROTOCOLS[c.BASE64_V1]
B64V4 = channels.REMOTECOMMAND_PROTOCOLS[c.BASE64_V4]


def test_binary_framing_is_a_channel_byte_then_the_data() -> None:
    # the example session of wsstream's documentation: "foo\n" on stdin, "\n" on stdout
    assert channels.encode(V1, channels.STDIN, b"foo\n") == bytes([0, 102, 111, 111, 10])
    assert channels.decode(V1, bytes([1, 10])) == channels.ChannelData(1, b"\n")


def test_base64_framing_is_an_ascii_digit_then_base64() -> None:
    assert channels.encode(B64, channels.STDIN, b"foo\n") == "0Zm9vCg=="
    assert channels.decode(B64, "1Cg==") == channels.ChannelData(1, b"\n")
    assert channels.decode(B64, b"1Cg==") == channels.ChannelData(1, b"\n")  # binary frames are read too
    with pytest.raises(channels.ChannelProtocolError):
        channels.decode(B64, "1***")
    with pytest.raises(ValueError):
        channels.encode(B64, 10, b"")


def test_channel_numbers() -> None:
    assert (channels.STDIN, channels.STDOUT, channels.STDERR, channels.ERROR, channels.RESIZE) == (
        0,
        1,
        2,
        3,
        4,
    )
    assert channels.CLOSE_SIGNAL == 255


def test_v5_close_signal() -> None:
    assert channels.encode_close(channels.STDIN) == b"\xff\x00"
    assert channels.decode(V5, b"\xff\x00") == channels.ChannelClosed(0)
    with pytest.raises(channels.ChannelProtocolError):
        channels.decode(V5, b"\xff\x00\x01")
    # before v5, 255 is just a channel number nobody uses
    assert channels.decode(V4, b"\xff\x00") == channels.ChannelData(255, b"\x00")


def test_empty_message_carries_nothing() -> None:
    assert channels.decode(V4, b"") is None
    assert channels.decode(B64, "") is None
    # the server's "ready" message: a channel byte and no data
    assert channels.decode(V4, b"\x01") == channels.ChannelData(1, b"")


@given(st.integers(0, 254), st.binary(max_size=200))
def test_binary_round_trip(channel: int, data: bytes) -> None:
    message = channels.encode(V4, channel, data)
    assert isinstance(message, bytes)
    assert channels.decode(V4, message) == channels.ChannelData(channel, data)


@given(st.integers(0, 9), st.binary(max_size=200))
def test_base64_round_trip(channel: int, data: bytes) -> None:
    message = channels.encode(B64V4, channel, data)
    assert isinstance(message, str)
    assert channels.decode(B64V4, message) == channels.ChannelData(channel, data)


def test_port_prefix_is_little_endian() -> None:
    assert channels.encode_port(8080) == b"\x90\x1f"
    assert channels.decode_port(b"\x90\x1frest") == 8080
    with pytest.raises(channels.ChannelProtocolError):
        channels.decode_port(b"\x01")


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        ([], ""),
        (["v5.channel.k8s.io"], "v5.channel.k8s.io"),
        (["v4.channel.k8s.io", "v5.channel.k8s.io"], "v4.channel.k8s.io"),  # the client's order wins
        (["bogus", "base64.channel.k8s.io"], "base64.channel.k8s.io"),
        (["v4.base64.channel.k8s.io"], "v4.base64.channel.k8s.io"),
        (["channel.k8s.io"], "channel.k8s.io"),
        (["v3.channel.k8s.io"], None),  # never offered over WebSocket, as upstream
        (["v2.channel.k8s.io"], None),
        (["bogus"], None),
    ],
)
def test_remotecommand_negotiation(offered: list[str], chosen: str | None) -> None:
    got = channels.negotiate(offered, channels.REMOTECOMMAND_PROTOCOLS)
    assert (got.name if got else None) == chosen


def test_protocol_properties() -> None:
    assert V5.close_signal and V5.json_status and not V5.base64
    assert V4.json_status and not V4.close_signal
    assert B64V4.json_status and B64V4.base64
    assert not V1.json_status and not B64.json_status
    assert channels.negotiate(["v5.channel.k8s.io"], channels.PORTFORWARD_PROTOCOLS) is None


def test_constants_negotiate_prefers_the_client() -> None:
    assert c.negotiate(["a", "b"], ["b", "a"]) == "a"
    assert c.negotiate(["x"], ["a"]) is None
    assert c.split_header_values(["v5.channel.k8s.io, v4.channel.k8s.io", " ", "channel.k8s.io"]) == [
        "v5.channel.k8s.io",
        "v4.channel.k8s.io",
        "channel.k8s.io",
    ]
