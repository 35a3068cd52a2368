"""The status written on the error stream when an exec or attach ends.

Protocol v4 and later (``v4.channel.k8s.io``, ``v5.channel.k8s.io`` and the
``v4.base64`` WebSocket variant) write a JSON ``metav1.Status``, which client-go
decodes as follows: ``status: "Success"`` is exit code 0; ``status: "Failure"``
with ``reason: "NonZeroExitCode"`` must carry ``details.causes[]`` with a cause of
``reason: "ExitCode"`` whose ``message`` is the code in decimal (0..255);
any other failure becomes an error with the status ``message``.

Earlier versions write nothing on success and the failure's message as plain
text.

The JSON is laid out as Go's ``encoding/json`` marshals ``metav1.Status`` (field
order, ``"metadata":{}`` always present, HTML characters escaped), so the bytes
match what kubelet and containerd send.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from arun.cri.streaming import constants as c

STATUS_SUCCESS = "Success"
STATUS_FAILURE = "Failure"
REASON_INTERNAL_ERROR = "InternalError"


@dataclass(frozen=True)
class Cause:
    reason: str = ""  # Go's StatusCause.Type, marshalled as "reason"
    message: str = ""


@dataclass(frozen=True)
class Status:
    status: str
    message: str = ""
    reason: str = ""
    causes: tuple[Cause, ...] = ()
    code: int = 0

    @property
    def success(self) -> bool:
        return self.status == STATUS_SUCCESS


def success() -> Status:
    return Status(STATUS_SUCCESS)


def exit_code(code: int, cmd: list[str] | tuple[str, ...] = ()) -> Status:
    """The failure for a command that exited with ``code`` (non-zero), worded as containerd words it."""
    detail = f"error executing command [{' '.join(cmd)}], exit code {code}"
    return Status(
        STATUS_FAILURE,
        message=f"command terminated with non-zero exit code: {detail}",
        reason=c.NON_ZERO_EXIT_CODE_REASON,
        causes=(Cause(c.EXIT_CODE_CAUSE_TYPE, str(code)),),
    )


def internal_error(message: str) -> Status:
    """apimachinery's ``NewInternalError``: code 500, reason InternalError, the error as the cause."""
    return Status(
        STATUS_FAILURE,
        message=f"Internal error occurred: {message}",
        reason=REASON_INTERNAL_ERROR,
        causes=(Cause(message=message),),
        code=500,
    )


def _go_json(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    # encoding/json escapes these for safe embedding in HTML.
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def to_dict(status: Status) -> dict[str, Any]:
    out: dict[str, Any] = {"metadata": {}}
    if status.status:
        out["status"] = status.status
    if status.message:
        out["message"] = status.message
    if status.reason:
        out["reason"] = status.reason
    if status.causes:
        causes = []
        for cause in status.causes:
            item = {}
            if cause.reason:
                item["reason"] = cause.reason
            if cause.message:
                item["message"] = cause.message
            causes.append(item)
        out["details"] = {"causes": causes}
    if status.code:
        out["code"] = status.code
    return out


def encode_json(status: Status) -> bytes:
    """The v4 error-stream payload."""
    return _go_json(to_dict(status)).encode("utf-8")


def encode_text(status: Status) -> bytes:
    """The v1-v3 error-stream payload: nothing on success, the message on failure."""
    return b"" if status.success else status.message.encode("utf-8")


def encode(status: Status, *, json_status: bool) -> bytes:
    return encode_json(status) if json_status else encode_text(status)


class StatusDecodeError(ValueError):
    """The error stream did not hold a status client-go would accept."""


@dataclass(frozen=True)
class Outcome:
    """What a client makes of an error stream: an exit code, or an error message."""

    exit_code: int | None = None
    error: str | None = None


def decode_json(data: bytes) -> Outcome:
    """Interpret a v4 error stream the way client-go's ``errorDecoderV4`` does."""
    if not data:
        return Outcome(exit_code=0)
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise StatusDecodeError(f"error stream protocol error: {exc} in {data!r}") from exc
    if not isinstance(obj, dict):
        raise StatusDecodeError(f"error stream protocol error: not an object: {data!r}")
    state = obj.get("status")
    if state == STATUS_SUCCESS:
        return Outcome(exit_code=0)
    if state != STATUS_FAILURE:
        raise StatusDecodeError("error stream protocol error: unknown error")
    if obj.get("reason") == c.NON_ZERO_EXIT_CODE_REASON:
        details = obj.get("details")
        if not isinstance(details, dict):
            raise StatusDecodeError("error stream protocol error: details must be set")
        for cause in details.get("causes") or ():
            if not isinstance(cause, dict) or cause.get("reason") != c.EXIT_CODE_CAUSE_TYPE:
                continue
            text = cause.get("message", "")
            if not (isinstance(text, str) and text.isascii() and text.isdigit() and int(text) <= 255):
                raise StatusDecodeError(f"error stream protocol error: invalid exit code value {text!r}")
            return Outcome(exit_code=int(text))
        raise StatusDecodeError(f"error stream protocol error: no {c.EXIT_CODE_CAUSE_TYPE} cause given")
    return Outcome(error=str(obj.get("message", "")))


def decode_text(data: bytes) -> Outcome:
    """Interpret a v1-v3 error stream: empty is success, anything else an error."""
    if not data:
        return Outcome(exit_code=0)
    return Outcome(error=data.decode("utf-8", "replace"))
