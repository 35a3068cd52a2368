"""Snapshotters: the SQLite metastore (``storage``) and the ``overlay`` and ``native`` implementations."""
