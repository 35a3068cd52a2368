#!/bin/bash
# Interleaved A/B of the PSS benchmark (20 pods): A = the tree at $1/src, B = the tree at $2/src.
#   git archive <base-commit> src | tar -x -C /tmp/base
#   tools/shimperf/ab_pss.sh /tmp/base . 3
set -eu
A=$(realpath "$1")/src B=$(realpath "$2")/src ROUNDS=${3:-3}
PY=${PYTHON:-/work/main/.venv/bin/python}
for _ in $(seq "$ROUNDS"); do
  for side in A B; do
    if [ "$side" = A ]; then P=$A; else P=$B; fi
    echo "$side $(PYTHONPATH=$P "$PY" -m arun.benchmarks.shim_bench --only pss 2>/dev/null | tail -1)"
  done
done
