"""The exit status on the error stream: the bytes kubelet/containerd write, decoded as client-go does."""

from __future__ import annotations

import json

import pytest

from arun.cri.streaming import status


def test_success_bytes() -> None:
    assert status.encode_json(status.success()) == b'{"metadata":{},"status":"Success"}'
    assert status.encode_text(status.success()) == b""


def test_non_zero_exit_bytes() -> None:
    s = status.exit_code(3, ["sh", "-c", "exit 3"])
    assert status.encode_json(s) == (
        b'{"metadata":{},"status":"Failure",'
        b'"message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], '
        b'exit code 3",'
        b'"reason":"NonZeroExitCode",'
        b'"details":{"causes":[{"reason":"ExitCode","message":"3"}]}}'
    )
    assert status.encode_text(s) == (
        b"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3"
    )


def test_internal_error_bytes() -> None:
    s = status.internal_error("boom <&>")
    assert status.encode_json(s) == (
        b'{"metadata":{},"status":"Failure","message":"Internal error occurred: boom \\u003c\\u0026\\u003e",'
        b'"reason":"InternalError","details":{"causes":[{"message":"boom \\u003c\\u0026\\u003e"}]},'
        b'"code":500}'
    )
    assert json.loads(status.encode_json(s))["message"] == "Internal error occurred: boom <&>"


@pytest.mark.parametrize("code", [0, 1, 2, 126, 127, 128, 137, 255])
def test_client_go_reads_back_the_exit_code(code: int) -> None:
    s = status.success() if code == 0 else status.exit_code(code, ["x"])
    assert status.decode_json(status.encode_json(s)) == status.Outcome(exit_code=code)


def test_client_go_decoding_rules() -> None:
    assert status.decode_json(b"") == status.Outcome(exit_code=0)
    assert status.decode_json(b'{"status":"Success"}') == status.Outcome(exit_code=0)
    assert status.decode_json(b'{"status":"Failure","message":"m"}') == status.Outcome(error="m")
    bad = [
        b"not json",
        b"[]",
        b'{"status":"Weird"}',
        b'{"status":"Failure","reason":"NonZeroExitCode"}',
        b'{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[]}}',
        b'{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"256"}]}}',
        b'{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"-1"}]}}',
    ]
    for raw in bad:
        with pytest.raises(status.StatusDecodeError):
            status.decode_json(raw)
    # other causes are skipped until the ExitCode one
    raw = (
        b'{"status":"Failure","reason":"NonZeroExitCode",'
        b'"details":{"causes":[{"reason":"Other","message":"x"},{"reason":"ExitCode","message":"7"}]}}'
    )
    assert status.decode_json(raw) == status.Outcome(exit_code=7)


def test_text_statuses() -> None:
    assert status.decode_text(b"") == status.Outcome(exit_code=0)
    assert status.decode_text(b"it broke") == status.Outcome(error="it broke")
    assert status.encode(status.success(), json_status=False) == b""
    assert status.encode(status.success(), json_status=True).startswith(b"{")
