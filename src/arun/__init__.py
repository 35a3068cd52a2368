"""arun: a containerd-compatible container runtime daemon in Python."""

__version__ = "0.1.0"

__all__ = ["__version__"]
