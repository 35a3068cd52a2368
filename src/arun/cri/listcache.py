"""The last reply of each list RPC, kept while every entry in it is unchanged.

The list entries (``Container``/``PodSandbox`` messages) are built once per object and state and
shared (container_list, sandbox_list). Copying them into a reply message still costs some
microseconds each, which adds up with kubelet relisting a thousand containers every second. A
reply whose filter and entries are the very same objects as last time is therefore the last reply
itself: a changed state makes a new entry object, a created or removed object changes the list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from arun.api.cri.runtime.v1 import api_pb2

E = TypeVar("E")
R = TypeVar("R")


class ReplyCache(Generic[E, R]):
    """One cached reply, for the last (filter, entries) it was built from."""

    def __init__(self, build: Callable[[Sequence[E]], R]) -> None:
        self._build = build
        self._key = b""
        self._entries: list[E] = []
        self._reply: R | None = None

    def reply(self, filter_key: bytes, entries: list[E]) -> R:
        """The reply for ``entries`` (listed under the filter serialised as ``filter_key``).

        The reply may be shared with earlier callers: send it, do not modify it.
        """
        old = self._entries
        if (
            self._reply is not None
            and filter_key == self._key
            and len(old) == len(entries)
            and all(a is b for a, b in zip(old, entries, strict=True))
        ):
            return self._reply
        reply = self._build(entries)
        self._key, self._entries, self._reply = filter_key, entries, reply
        return reply


def _containers_reply(entries: Sequence[api_pb2.Container]) -> api_pb2.ListContainersResponse:
    out = api_pb2.ListContainersResponse()
    out.containers.extend(entries)
    return out


def _sandboxes_reply(entries: Sequence[api_pb2.PodSandbox]) -> api_pb2.ListPodSandboxResponse:
    out = api_pb2.ListPodSandboxResponse()
    out.items.extend(entries)
    return out


class ListReplies:
    """The cached replies of ListContainers and ListPodSandbox (one CRI service's)."""

    def __init__(self) -> None:
        self.containers: ReplyCache[api_pb2.Container, api_pb2.ListContainersResponse] = ReplyCache(
            _containers_reply
        )
        self.sandboxes: ReplyCache[api_pb2.PodSandbox, api_pb2.ListPodSandboxResponse] = ReplyCache(
            _sandboxes_reply
        )
