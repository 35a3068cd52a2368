"""Benchmarks (not tests): ``python -m arun.benchmarks`` (``make bench``) runs every module here.

The registry is the file name: every module ``arun/benchmarks/<name>_bench.py``
is a benchmark, run in name order. A module provides

``main(argv: list[str]) -> int | None``
    Run with default settings when ``argv`` is empty, print its own results
    (tables, JSON) and return an exit status (None means 0). ``async def main``
    works too: the runner gives it a fresh event loop.

and may provide

``REQUIRES: tuple[str, ...]``
    What it needs from the machine, checked before it runs; a module whose
    requirement is missing is reported as skipped with the reason instead of
    being run. Known words: ``root``, ``runc``, ``containerd``, ``ctr``,
    ``overlay``, ``gcc``, ``docker-registry``, ``busybox``.

``SUMMARY: str``
    A one-line description for ``--list`` (default: the docstring's first line).

The runner prints ``== <name>`` before each module, runs each in its own
process (so one module's crash, leaked threads or signal handlers never touch
the next), and ends with a summary table: module, status (ok, failed with its
exit status, skipped with the reason), seconds. It exits non-zero if any
module failed. ``python -m arun.benchmarks NAME ...`` runs the modules whose
names contain one of the words; arguments after ``--`` go to each module.
"""
