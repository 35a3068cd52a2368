"""Unpacking an image client-side: each layer applied by the daemon's differ onto a snapshot.

What containerd's client does in ``image.Unpack`` (1.6): for layer *n*, prepare
an ``extract-<unique> <chainID>`` snapshot on the chain of layers 1..n-1, ask
the diff service to apply the layer blob into its mounts, check that the
applied digest is the layer's diff ID, and commit it under the chain ID. A
chain ID that already exists is skipped. The layer blob gets the
``containerd.io/uncompressed`` label and the config the
``containerd.io/gc.ref.snapshot.<snapshotter>`` label that keeps the snapshots
alive while the image is. It all runs under one lease.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from arun import errdefs
from arun.client import _convert
from arun.client.images import ImageManifest, chain_id
from arun.client.types import Descriptor, Mount, PullProgress

if TYPE_CHECKING:
    from arun.client.client import Client

__all__ = ["apply_layer", "unpack"]

LABEL_SNAPSHOT_REF = "containerd.io/snapshot.ref"
LABEL_UNCOMPRESSED = "containerd.io/uncompressed"
LABEL_GC_SNAPSHOT = "containerd.io/gc.ref.snapshot."

Progress = Callable[[PullProgress], object] | None


def _unique() -> str:
    return f"{time.time_ns() % 1_000_000_000}-{base64.urlsafe_b64encode(os.urandom(3)).decode()}"


async def apply_layer(client: Client, layer: Descriptor, mounts: list[Mount]) -> Descriptor:
    """Apply one layer blob onto ``mounts`` with the daemon's differ; the applied (uncompressed) digest."""
    from arun.api.containerd.services.diff.v1 import diff_pb2

    req = diff_pb2.ApplyRequest(
        diff=_convert.descriptor_pb(layer), mounts=[_convert.mount_pb(m) for m in mounts]
    )
    r = await client._unary("/containerd.services.diff.v1.Diff/Apply", req, diff_pb2.ApplyResponse)
    return _convert.descriptor(r.applied)


async def unpack(
    client: Client, image: ImageManifest, snapshotter: str | None = None, progress: Progress = None
) -> str:
    """Make sure every layer of ``image`` is a committed snapshot; the top chain ID."""
    sn = client.snapshots(snapshotter)
    diff_ids = image.diff_ids
    if len(diff_ids) != len(image.layers):
        raise errdefs.InvalidArgumentError(
            f"image config has {len(diff_ids)} diff ids for {len(image.layers)} layers"
        )
    async with client.lease():
        chain: list[str] = []
        for layer, diff_id in zip(image.layers, diff_ids, strict=True):
            parent = chain_id(chain) if chain else ""
            chain.append(diff_id)
            cid = chain_id(chain)
            try:
                await sn.stat(cid)
                if progress:
                    progress(PullProgress(layer.digest, "unpacked", layer.size, layer.size))
                continue
            except errdefs.NotFoundError:
                pass
            if progress:
                progress(PullProgress(layer.digest, "unpacking", 0, layer.size))
            key = f"extract-{_unique()} {cid}"
            mounts = await sn.prepare(key, parent, labels={LABEL_SNAPSHOT_REF: cid})
            committed = False
            try:
                applied = await apply_layer(client, layer, mounts)
                if applied.digest != diff_id:
                    raise errdefs.DataLossError(
                        f"layer {layer.digest}: applied digest {applied.digest} is not diff id {diff_id}"
                    )
                try:
                    await sn.commit(cid, key)
                    committed = True
                except errdefs.AlreadyExistsError:
                    pass  # unpacked meanwhile by someone else
            finally:
                if not committed:
                    try:
                        await sn.remove(key)
                    except errdefs.ArunError:
                        pass
            await client.content.update_labels(layer.digest, {LABEL_UNCOMPRESSED: diff_id})
            if progress:
                progress(PullProgress(layer.digest, "unpacked", layer.size, layer.size))
        top = chain_id(chain)
        await client.content.update_labels(image.config_descriptor.digest, {LABEL_GC_SNAPSHOT + sn.name: top})
    return top
