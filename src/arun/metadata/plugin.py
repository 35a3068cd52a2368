"""Registration of the metadata database (``io.containerd.metadata.v1.sqlite``).

containerd calls its metadata plugin ``bolt`` after the BoltDB file it opens;
arun's is a SQLite database, so its id says so: a config written for
containerd that tunes ``[plugins."io.containerd.metadata.v1.bolt"]`` is then
reported as a section for an unknown plugin instead of being silently applied
to a different engine. The file lives where containerd keeps ``meta.db``:
``<root>/io.containerd.metadata.v1.sqlite/meta.db``.
"""

from __future__ import annotations

from arun.metadata.db import Database
from arun.plugin import InitContext, PluginType, register

ID = "sqlite"
FILENAME = "meta.db"


@register(PluginType.METADATA, ID, requires=(PluginType.CONTENT, PluginType.SNAPSHOT))
async def init(ic: InitContext) -> Database:
    db = Database(ic.root / FILENAME)
    await db.open()
    ic.meta.exports["path"] = str(db.path)
    return db
