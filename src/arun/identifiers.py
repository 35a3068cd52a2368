"""Validation of object identifiers, as containerd's ``pkg/identifiers``.

An identifier is 1 to 76 characters of ASCII letters, digits and ``._-``; it must
start and end with a letter or digit, and separators may not repeat.
"""

from __future__ import annotations

import re

from arun.errdefs import InvalidArgumentError

MAX_LENGTH = 76
_ALNUM = r"[A-Za-z0-9]+"
_SEPARATOR = r"[._-]"
_PATTERN = re.compile(rf"^{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*$")


def validate(identifier: str) -> str:
    """Return ``identifier`` if valid, else raise InvalidArgumentError."""
    if not identifier:
        raise InvalidArgumentError("identifier must not be empty")
    if len(identifier) > MAX_LENGTH:
        raise InvalidArgumentError(
            f"identifier {identifier[:MAX_LENGTH]!r}... greater than maximum length ({MAX_LENGTH} characters)"
        )
    if not _PATTERN.match(identifier):
        raise InvalidArgumentError(f"identifier {identifier!r} must match {_PATTERN.pattern}")
    return identifier
