"""Single-use tokens for streaming requests.

The Exec, Attach and PortForward RPCs do not stream themselves: they store the
request and answer with a URL holding a random token. The first HTTP request to
that URL consumes the token; a token not used within the TTL (one minute, as in
kubelet) expires. At most ``max_in_flight`` tokens wait at any time.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from arun import errdefs

T = TypeVar("T")

DEFAULT_TTL = 60.0
DEFAULT_MAX_IN_FLIGHT = 1000
TOKEN_LENGTH = 8  # base64url characters (6 random bytes)


@dataclass(frozen=True)
class _Entry(Generic[T]):
    request: T
    expires: float


class RequestCache(Generic[T]):
    """token -> request, oldest first, with expiry on a monotonic clock."""

    def __init__(
        self,
        *,
        ttl: float = DEFAULT_TTL,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        clock: Callable[[], float] = time.monotonic,
        token_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if ttl <= 0:
            raise errdefs.InvalidArgumentError(f"token ttl must be positive, got {ttl}")
        if max_in_flight < 1:
            raise errdefs.InvalidArgumentError(f"max in-flight requests must be >= 1, got {max_in_flight}")
        self._ttl = ttl
        self._max = max_in_flight
        self._clock = clock
        self._token_bytes = token_bytes
        self._entries: OrderedDict[str, _Entry[T]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _gc(self, now: float) -> None:
        while self._entries:
            token, entry = next(iter(self._entries.items()))
            if entry.expires >= now:
                return
            del self._entries[token]

    def _new_token(self) -> str:
        for _ in range(10):
            raw = self._token_bytes((TOKEN_LENGTH * 6 + 7) // 8)
            token = base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")[:TOKEN_LENGTH]
            if token not in self._entries:
                return token
        raise errdefs.InternalError("failed to generate a unique streaming token")

    def insert(self, request: T) -> str:
        """Store ``request`` and return its token; ResourceExhaustedError when too many wait."""
        now = self._clock()
        self._gc(now)
        if len(self._entries) >= self._max:
            raise errdefs.ResourceExhaustedError("maximum number of in-flight requests exceeded")
        token = self._new_token()
        self._entries[token] = _Entry(request, now + self._ttl)
        return token

    def consume(self, token: str) -> T | None:
        """The request for ``token``, removed from the cache; None if unknown, used or expired."""
        entry = self._entries.pop(token, None)
        if entry is None or self._clock() > entry.expires:
            return None
        return entry.request
