"""``make bench``: run every benchmark (today: the unpack benchmark) with the given arguments."""

from __future__ import annotations

import sys

from arun.benchmarks import unpack_bench

if __name__ == "__main__":
    sys.exit(unpack_bench.main(sys.argv[1:]))
