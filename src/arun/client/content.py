"""The content store, seen from the client: blobs by digest, over ``containerd.services.content.v1``."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from arun import errdefs
from arun.client import _convert

if TYPE_CHECKING:
    from arun.client.client import Client

__all__ = ["Content", "ContentInfo", "digest_of"]

_SERVICE = "/containerd.services.content.v1.Content/"
# Bytes per Write message; well under the 4 MiB default message limit of grpc-go.
CHUNK = 1 << 20


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ContentInfo:
    digest: str
    size: int
    labels: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


def _info(i: object) -> ContentInfo:
    return ContentInfo(
        digest=i.digest,  # type: ignore[attr-defined]
        size=int(i.size),  # type: ignore[attr-defined]
        labels=dict(i.labels),  # type: ignore[attr-defined]
        created_at=_convert.timestamp(i.created_at),  # type: ignore[attr-defined]
        updated_at=_convert.timestamp(i.updated_at),  # type: ignore[attr-defined]
    )


class Content:
    """Blobs in the daemon's content store (namespaced like everything else)."""

    def __init__(self, client: Client) -> None:
        self._c = client

    async def info(self, digest: str) -> ContentInfo:
        """Size, labels and times of blob ``digest`` (NotFoundError when absent)."""
        from arun.api.containerd.services.content.v1 import content_pb2

        r = await self._c._unary(
            _SERVICE + "Info", content_pb2.InfoRequest(digest=digest), content_pb2.InfoResponse
        )
        return _info(r.info)

    async def list(self, *filters: str) -> list[ContentInfo]:
        """The records of every blob matching any of ``filters``."""
        from arun.api.containerd.services.content.v1 import content_pb2

        out: list[ContentInfo] = []
        req = content_pb2.ListContentRequest(filters=list(filters))
        async with self._c._stream(_SERVICE + "List", req, content_pb2.ListContentResponse) as msgs:
            async for m in msgs:
                out.extend(_info(i) for i in m.info)
        return out

    async def exists(self, digest: str) -> bool:
        """Whether the content store has blob ``digest``."""
        try:
            await self.info(digest)
        except errdefs.NotFoundError:
            return False
        return True

    async def chunks(self, digest: str, offset: int = 0, size: int = 0) -> AsyncIterator[bytes]:
        """The blob's bytes as they arrive (``size`` 0: to the end)."""
        from arun.api.containerd.services.content.v1 import content_pb2

        req = content_pb2.ReadContentRequest(digest=digest, offset=offset, size=size)
        async with self._c._stream(_SERVICE + "Read", req, content_pb2.ReadContentResponse) as msgs:
            async for m in msgs:
                yield bytes(m.data)

    async def read(self, digest: str) -> bytes:
        """The whole blob (meant for manifests and configs, not big layers)."""
        parts = [c async for c in self.chunks(digest)]
        return b"".join(parts)

    async def update_labels(self, digest: str, labels: Mapping[str, str]) -> ContentInfo:
        """Set (or, with an empty value, remove) these labels, leaving the others alone."""
        from google.protobuf import field_mask_pb2

        from arun.api.containerd.services.content.v1 import content_pb2

        info = content_pb2.Info(digest=digest, labels={k: v for k, v in labels.items() if v})
        mask = field_mask_pb2.FieldMask(paths=[f"labels.{k}" for k in labels])
        r = await self._c._unary(
            _SERVICE + "Update",
            content_pb2.UpdateRequest(info=info, update_mask=mask),
            content_pb2.UpdateResponse,
        )
        return _info(r.info)

    async def delete(self, digest: str) -> None:
        """Remove blob ``digest`` from the content store."""
        from google.protobuf import empty_pb2

        from arun.api.containerd.services.content.v1 import content_pb2

        await self._c._unary(
            _SERVICE + "Delete", content_pb2.DeleteContentRequest(digest=digest), empty_pb2.Empty
        )

    async def write(
        self,
        data: bytes | Sequence[bytes] | AsyncIterator[bytes],
        *,
        expected: str,
        size: int,
        ref: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> bool:
        """Store a blob of ``size`` bytes whose digest must be ``expected``.

        Returns False when the store already had it (nothing is sent), True when
        written. Follows the Write protocol of containerd's client: STAT with the
        ref (resuming at the offset the store reports), WRITE chunks, COMMIT with
        total and expected digest. The blob is checked against ``expected`` by the
        store; a mismatch is FailedPreconditionError and nothing is committed.
        """
        from arun.api.containerd.services.content.v1 import content_pb2

        ref = ref or f"arun-client-{expected}"
        Req = content_pb2.WriteContentRequest
        try:
            async with self._c._bidi(_SERVICE + "Write", Req, content_pb2.WriteContentResponse) as s:
                await s.send(Req(action=content_pb2.STAT, ref=ref, total=size, expected=expected))
                st = await s.recv()
                if st is None:
                    raise errdefs.UnavailableError("content write: stream ended before STAT reply")
                offset = int(st.offset)
                pos = 0
                async for chunk in _chunks(data):
                    end = pos + len(chunk)
                    if end <= offset:
                        pos = end
                        continue
                    if pos < offset:
                        chunk, pos = chunk[offset - pos :], offset
                    for i in range(0, len(chunk), CHUNK):
                        piece = chunk[i : i + CHUNK]
                        await s.send(Req(action=content_pb2.WRITE, offset=pos, data=piece))
                        w = await s.recv()
                        if w is None:
                            raise errdefs.UnavailableError("content write: stream ended during WRITE")
                        pos += len(piece)
                await s.send(
                    Req(
                        action=content_pb2.COMMIT,
                        total=size,
                        offset=pos,
                        expected=expected,
                        labels=dict(labels or {}),
                    ),
                    end=True,
                )
                c = await s.recv()
                if c is None:
                    raise errdefs.UnavailableError("content write: stream ended before COMMIT reply")
                if c.digest and c.digest != expected:
                    raise errdefs.FailedPreconditionError(
                        f"unexpected commit digest {c.digest}, expected {expected}"
                    )
        except errdefs.AlreadyExistsError:
            if labels:
                await self.update_labels(expected, labels)
            return False
        return True


async def _chunks(data: bytes | Sequence[bytes] | AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if isinstance(data, bytes | bytearray | memoryview):
        yield bytes(data)
    elif hasattr(data, "__aiter__"):
        async for c in data:
            yield bytes(c)
    else:
        for c in data:
            yield bytes(c)
