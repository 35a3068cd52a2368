"""Kernel same-page merging (KSM) for arun's shims.

Every arun shim is forked from the zygote and should share its pages with it copy-on-write. But
CPython writes a reference count into every object it touches, so each shim soon holds its own
copy of most pages it ran code from — several MiB per pod, and nearly the same bytes in every
shim. KSM (``/sys/kernel/mm/ksm``) lets the kernel find such identical pages and keep one copy.

Two halves:

* the zygote marks its private writable mappings ``MADV_MERGEABLE`` before it forks (``mark``);
  the mark is a property of the mappings, so it is inherited by every shim forked from it and
  dropped at ``execve``: runc, and the containers it starts, are never merged. (The process-wide
  ``PR_SET_MEMORY_MERGE`` would survive ``execve`` into the containers, so it is not used.)
* the daemon switches the kernel's scanner on when it is off (``switch_on``); it then scans only
  memory marked mergeable (ours, and that of whoever else asked for it, e.g. QEMU guests).

The shim manager's ``ksm`` setting picks ``on`` (both), ``mark`` (mark only; leave the host's
setting as it is) or ``off``.
"""

from __future__ import annotations

import logging
import os

from arun.errdefs import InvalidArgumentError

log = logging.getLogger(__name__)

MODES = ("on", "mark", "off")
RUN = "/sys/kernel/mm/ksm/run"
# The zygote's environment variable that asks it to mark its memory (it pops it at start).
ENV = "ARUN_ZYGOTE_KSM"
MADV_MERGEABLE = 12


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise InvalidArgumentError(f"shim manager ksm {mode!r}: want one of {', '.join(MODES)}")
    return mode


def switch_on(run: str = RUN) -> bool:
    """Start the kernel's same-page merging scanner when it is stopped (``run`` is 0); whether
    it runs now. Never raises: without KSM, shims simply keep their own copies."""
    try:
        with open(run) as fh:
            state = fh.read().strip()
        if state == "0":
            with open(run, "w") as fh:
                fh.write("1\n")
            log.info("switched on kernel same-page merging for shim memory", extra={"path": run})
            return True
    except OSError as e:
        log.info("kernel same-page merging is not available", extra={"path": run, "error": str(e)})
        return False
    if state != "1":
        log.info("kernel same-page merging is not running", extra={"path": run, "run": state})
    return state == "1"


def mark() -> int:
    """Mark this process's private writable mappings mergeable; the number of bytes marked.

    Called by the zygote once, after it has imported and warmed up what a shim runs and
    before it forks: those are the pages every shim inherits and then copies."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    madvise = libc.madvise
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    madvise.restype = ctypes.c_int
    marked = 0
    with open("/proc/self/maps") as fh:
        ranges = [line.split(None, 2)[:2] for line in fh]
    for span, perms in ranges:
        # Private and writable: heap, obmalloc arenas, the stack, libraries' data. Shared
        # mappings cannot be merged; read-only ones are never copied.
        if perms != "rw-p":
            continue
        start, end = (int(x, 16) for x in span.split("-"))
        if madvise(start, end - start, MADV_MERGEABLE) == 0:
            marked += end - start
        else:
            err = ctypes.get_errno()
            if err == 22:  # EINVAL: a kind of mapping KSM does not take (or no KSM at all)
                continue
            raise OSError(err, os.strerror(err))
    return marked


def mergeable_kib(pid: int) -> int:
    """How much of ``pid``'s address space is marked mergeable (``mg`` in smaps' VmFlags), KiB."""
    total = size = 0
    with open(f"/proc/{pid}/smaps") as fh:
        for line in fh:
            if line.startswith("Size:"):
                size = int(line.split()[1])
            elif line.startswith("VmFlags:") and "mg" in line.split()[1:]:
                total += size
    return total
