"""Print the Anonymous KiB of this process after arun.runtime.zygote.warm() and its module count
(with an argument: the module names too). Run with PYTHONPATH=<tree>/src python -S."""

import sys

from arun.runtime import zygote

zygote.warm()
anon = 0
with open("/proc/self/smaps_rollup") as fh:
    for line in fh:
        if line.startswith("Anonymous:"):
            anon = int(line.split()[1])
mods = sorted(sys.modules)
print(anon, len(mods))
if len(sys.argv) > 1:
    print(" ".join(m for m in mods))
