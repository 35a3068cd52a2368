"""Differs: applying a layer onto mounts, and computing a layer from two mounts.

containerd's ``diff.Applier`` and ``diff.Comparer``. The ``walking`` differ
(``arun.diff.walking.WalkingDiff``) implements both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from arun.core.content import Descriptor
from arun.core.mount import Mount

__all__ = ["UNCOMPRESSED_LABEL", "Applier", "Comparer"]

# Content label holding the digest of a compressed layer's uncompressed tar (its diffID).
UNCOMPRESSED_LABEL = "containerd.io/uncompressed"


@runtime_checkable
class Applier(Protocol):
    async def apply(self, desc: Descriptor, mounts: Sequence[Mount]) -> Descriptor:
        """Extract the layer ``desc`` (read from the differ's content store) onto ``mounts``.

        Returns the descriptor of the *uncompressed* tar (media type
        ``application/vnd.oci.image.layer.v1.tar``, its digest is the diffID).
        A hostile archive is InvalidArgumentError and nothing is written
        outside the target; a blob that does not match ``desc.digest``/``size``
        is FailedPreconditionError; an unknown media type UnimplementedError.
        On any error the target may hold part of the layer: the caller discards
        the snapshot it prepared (as containerd's unpacker removes it).
        """
        ...


@runtime_checkable
class Comparer(Protocol):
    async def compare(
        self,
        lower: Sequence[Mount],
        upper: Sequence[Mount],
        *,
        media_type: str = "",
        reference: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> Descriptor:
        """Write the changes from ``lower`` to ``upper`` as a layer into the content store.

        ``media_type`` defaults to tar+gzip (plain tar is also accepted); the
        blob is committed with ``labels`` plus ``containerd.io/uncompressed``.
        ``reference`` names the ingest (a unique one is made up if empty).
        """
        ...
