"""Client-opened streams the daemon can use later (containerd's ``streaming.StreamManager``)."""

from arun.streaming.manager import Stream, StreamManager

__all__ = ["Stream", "StreamManager"]
