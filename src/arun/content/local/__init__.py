"""The local (backend) content store: ``LocalStore`` and its writer."""

from arun.content.local.store import LabelStore, LocalReaderAt, LocalStore, MemoryLabelStore
from arun.content.local.writer import LocalWriter

__all__ = ["LabelStore", "LocalReaderAt", "LocalStore", "LocalWriter", "MemoryLabelStore"]
