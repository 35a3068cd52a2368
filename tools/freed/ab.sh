#!/bin/sh
# Interleaved A/B of tools/freed/probe.py: BASE_SRC (a copy of an unchanged src/) against this
# worktree's src/, ROUNDS rounds (root). The zygote runs the tree the probe imported arun from.
#   cp -r src /tmp/base-src && sh tools/freed/ab.sh /tmp/base-src 3
set -eu
BASE_SRC=$1
ROUNDS=${2:-3}
PY=${PYTHON:-python3}
r=1
while [ "$r" -le "$ROUNDS" ]; do
  for v in base new; do
    if [ "$v" = base ]; then P=$BASE_SRC; else P=src; fi
    echo "round $r $v $(PYTHONPATH=$P timeout 300 "$PY" tools/freed/probe.py --settle 10 2>/dev/null | tail -1)"
  done
  r=$((r + 1))
done
