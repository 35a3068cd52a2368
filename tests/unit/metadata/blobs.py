"""Committing a blob through the metadata content store, for the metadata tests."""

from __future__ import annotations

from arun.core.content import digest_bytes
from arun.metadata.meta import Metadata


async def put(meta: Metadata, data: bytes, **labels: str) -> str:
    """Write and commit ``data`` (with ``labels``) in the current namespace; its digest."""
    cs = meta.content_store()
    dgst = digest_bytes(data)
    w = await cs.writer(f"ref-{dgst}", total=len(data))
    await w.write(data)
    await w.commit(len(data), dgst, labels=labels)
    return dgst
