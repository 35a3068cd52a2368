"""arun embedded in the caller's event loop: ``Runtime`` (the ``Client`` API, no socket)."""

from arun.embedded.runtime import Runtime
from arun.embedded.transport import InProcessTransport

__all__ = ["InProcessTransport", "Runtime"]
