"""containerd-shim-arun-v1: the per-pod process that drives runc for arun (and containerd).

Importing this package does nothing: the entry points live in ``arun.shim.__main__`` (command
line) and ``arun.shim.server`` (``serve``, also called by the daemon's zygote after a fork).
"""
