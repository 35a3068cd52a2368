"""Label validation, as containerd's ``pkg/labels``: key and value together
at most 4096 bytes, and the key not empty."""

from __future__ import annotations

from collections.abc import Mapping

from arun.errdefs import InvalidArgumentError

MAX_SIZE = 4096


def validate(key: str, value: str) -> None:
    if not key:
        raise InvalidArgumentError("label key must not be empty")
    if len(key.encode()) + len(value.encode()) > MAX_SIZE:
        raise InvalidArgumentError(
            f"label key and value greater than maximum size ({MAX_SIZE} bytes), key: {key[:10]!r}"
        )


def validate_all(labels: Mapping[str, str]) -> None:
    for k, v in labels.items():
        validate(k, v)
