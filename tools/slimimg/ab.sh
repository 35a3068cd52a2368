#!/bin/bash
# Interleaved A/B of the zygote's warm image: the Anonymous KiB of a fresh process after
# arun.runtime.zygote.warm() (tools/slimimg/warm_anon.py), for up to four source trees/flags,
# over 8 copies of the script with names of different lengths (the figure moves by up to ~0.5 MiB
# with such incidental layout changes when the sources are compiled in memory).
#   usage: tools/slimimg/ab.sh NAME=SRC[:FLAGS] ...   e.g.
#   tools/slimimg/ab.sh A=/tmp/base/src B=/tmp/new/src C=/tmp/new/src:-OO
# Regimes: nocache = arun's sources compiled in memory (their __pycache__ removed,
# PYTHONDONTWRITEBYTECODE=1); cached = their *.pyc/*.opt-2.pyc written, then loaded.
# NB: nocache deletes the __pycache__ directories under each SRC.
set -e
PY=${PY:-/work/main/.venv/bin/python}
here=$(cd "$(dirname "$0")" && pwd)
pads=$(mktemp -d /tmp/slimimg-pads-XXXXXX)
trap 'rm -rf "$pads"' EXIT
for n in 1 7 13 22 31 45 60 80; do cp "$here/warm_anon.py" "$pads/m$(printf '%*s' $n '' | tr ' ' x).py"; done
for regime in nocache cached; do
  for s in "$pads"/*.py; do
    for arm in "$@"; do
      name=${arm%%=*}; rest=${arm#*=}; src=${rest%%:*}; flags=""; [ "$rest" != "$src" ] && flags=${rest#*:}
      if [ $regime = nocache ]; then
        find "$src" -name __pycache__ -prune -exec rm -rf {} +
        a=$(PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=$src $PY $flags -S "$s" | cut -d' ' -f1)
      else
        env -u PYTHONDONTWRITEBYTECODE PYTHONPATH=$src $PY $flags -S "$s" >/dev/null
        a=$(env -u PYTHONDONTWRITEBYTECODE PYTHONPATH=$src $PY $flags -S "$s" | cut -d' ' -f1)
      fi
      echo "$regime $name $a"
    done
  done
done | awk '{k=$1" "$2; s[k]+=$3; n[k]++; v[k]=v[k]" "$3} END {for (k in s) printf "%s mean=%.0f [%s]\n", k, s[k]/n[k], v[k]}' | sort
