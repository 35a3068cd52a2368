"""The diff service: the configured differs, tried in order of preference
(the first that does not answer UNIMPLEMENTED for a media type wins)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from arun.core.content import Descriptor
from arun.core.diff import Applier, Comparer
from arun.core.mount import Mount
from arun.errdefs import FailedPreconditionError, UnimplementedError


@dataclass
class DiffConfig:
    """``[plugins."io.containerd.service.v1.diff-service"]``."""

    # Differs by plugin id, in order of preference.
    default: list[str] = field(default_factory=lambda: ["walking"])
    # Accepted for compatibility; the differs decide how they sync.
    sync_fs: bool = False


class DiffLocal:
    def __init__(self, differs: Sequence[Applier | Comparer]) -> None:
        if not differs:
            raise FailedPreconditionError("no differ loaded")
        self.differs = list(differs)

    async def apply(self, desc: Descriptor, mounts: Sequence[Mount]) -> Descriptor:
        last: Exception = UnimplementedError(f"no differ can apply media type {desc.media_type!r}")
        for d in self.differs:
            if not isinstance(d, Applier):
                continue
            try:
                return await d.apply(desc, mounts)
            except UnimplementedError as e:
                last = e
        raise last

    async def apply_stream(
        self, desc: Descriptor, mounts: Sequence[Mount], source: Callable[[], bytes]
    ) -> Descriptor:
        """``apply`` with the layer's bytes from ``source`` (a blocking chunk function, see
        ``WalkingDiff.apply_stream``) — used by pulls to unpack a layer while it downloads.
        Only differs that can stream take part; UNIMPLEMENTED when none can (the caller
        then waits for the download and calls ``apply``)."""
        for d in self.differs:
            stream = getattr(d, "apply_stream", None)
            if stream is None or not isinstance(d, Applier):
                continue
            result: Descriptor = await stream(desc, mounts, source)
            return result
        raise UnimplementedError(f"no differ can apply media type {desc.media_type!r} from a stream")

    async def diff(
        self,
        lower: Sequence[Mount],
        upper: Sequence[Mount],
        *,
        media_type: str = "",
        reference: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> Descriptor:
        last: Exception = UnimplementedError(f"no differ can produce media type {media_type!r}")
        for d in self.differs:
            if not isinstance(d, Comparer):
                continue
            try:
                return await d.compare(
                    lower, upper, media_type=media_type, reference=reference, labels=labels
                )
            except UnimplementedError as e:
                last = e
        raise last
