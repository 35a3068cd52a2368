"""Registrations of the metadata database (``io.containerd.metadata.v1.sqlite``) and of its
garbage-collection scheduler (``io.containerd.gc.v1.scheduler``).

containerd calls its metadata plugin ``bolt`` after the BoltDB file it opens;
arun's is a SQLite database, so its id says so: a config written for
containerd that tunes ``[plugins."io.containerd.metadata.v1.bolt"]`` is then
reported as a section for an unknown plugin instead of being silently applied
to a different engine. The file lives where containerd keeps ``meta.db``:
``<root>/io.containerd.metadata.v1.sqlite/meta.db``.

The plugin's instance is a ``Metadata``: the database and every namespaced
store over it, wrapping the loaded content store and snapshotters.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from arun.errdefs import InvalidArgumentError, NotFoundError
from arun.metadata.db import Database
from arun.metadata.gc import Scheduler, SchedulerConfig
from arun.metadata.meta import Metadata
from arun.plugin import InitContext, PluginType, register

log = logging.getLogger(__name__)

ID = "sqlite"
FILENAME = "meta.db"


@dataclass
class MetadataConfig:
    """``[plugins."io.containerd.metadata.v1.sqlite"]``."""

    # "shared": a blob already in the store becomes visible in another namespace
    # without being sent again; "isolated": every namespace must send its bytes.
    content_sharing_policy: str = "shared"


@register(
    PluginType.METADATA,
    ID,
    requires=(PluginType.CONTENT, PluginType.SNAPSHOT, PluginType.EVENT),
    config=MetadataConfig,
)
async def init(ic: InitContext) -> Metadata:
    cfg: MetadataConfig = ic.config
    if cfg.content_sharing_policy not in ("shared", "isolated"):
        raise InvalidArgumentError(
            f'content_sharing_policy must be "shared" or "isolated", not {cfg.content_sharing_policy!r}'
        )
    try:
        content = ic.get_single(PluginType.CONTENT)
    except NotFoundError as e:
        # The rest of the metadata (namespaces, containers, images, leases) still works.
        log.warning("metadata without a content store: %s", e)
        content = None
    snapshotters = ic.get_all(PluginType.SNAPSHOT)
    try:
        publisher = ic.get_single(PluginType.EVENT)
    except NotFoundError:
        log.info("no event exchange loaded: store events are not published")
        publisher = None
    db = Database(ic.root / FILENAME)
    await db.open()
    ic.meta.exports["path"] = str(db.path)
    return Metadata(
        db,
        content=content,
        snapshotters=snapshotters,
        publisher=publisher,
        shared_content=cfg.content_sharing_policy == "shared",
    )


@register(PluginType.GC, "scheduler", requires=(PluginType.METADATA,), config=SchedulerConfig)
async def init_gc(ic: InitContext) -> Scheduler:
    meta: Metadata = ic.get_single(PluginType.METADATA)
    scheduler = Scheduler(meta.collector, ic.config)
    meta.hooks.on_mutation(scheduler.mutation)
    meta.leases.collect = scheduler.schedule_and_wait
    ic.meta.exports.update(
        {
            "PauseThreshold": str(scheduler.pause_threshold),
            "DeletionThreshold": str(scheduler.deletion_threshold),
            "MutationThreshold": str(scheduler.mutation_threshold),
            "ScheduleDelay": f"{scheduler.schedule_delay}s",
        }
    )
    scheduler.start()
    return scheduler
