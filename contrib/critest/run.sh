#!/bin/bash
# run.sh - start arun with the critest configuration, run critest against it, stop arun.
#
# Usage: sudo ./run.sh OUTDIR [extra critest flags...]      (e.g. --websocket-exec --websocket-attach)
# Needs the offline CRI test environment (registry with critest's images on REGISTRY_ADDR, CNI
# plugins, crictl/critest in CRI_BIN) — see testenv's README. Uses PYTHON (default: python3 with
# arun importable; set PYTHONPATH=<checkout>/src to run a checkout).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] || { sed -n '2,8p' "$0"; exit 2; }
OUT=$1; shift
REGISTRY_ADDR=${REGISTRY_ADDR:-127.0.0.1:5000}
CNI_BIN_DIR=${CNI_BIN_DIR:-/usr/lib/cni}
CNI_CONF_DIR=${CNI_CONF_DIR:-/etc/cni/net.d}
TESTENV=${TESTENV:-$HERE/../../../shared/testenv}
PYTHON=${PYTHON:-python3}
CONF_DIR=/etc/arun-critest
CERTS_D=$CONF_DIR/certs.d
SOCK=/run/arun-critest/arun.sock
LOG=/var/log/arun-critest.log

mkdir -p "$CONF_DIR" /run/arun-critest
sed -e "s|@CNI_BIN_DIR@|$CNI_BIN_DIR|g" -e "s|@CNI_CONF_DIR@|$CNI_CONF_DIR|g" -e "s|@CERTS_D@|$CERTS_D|g" \
    "$HERE/arun-critest.toml" > "$CONF_DIR/config.toml"
# critest's images are mirrored to the local registry under their upstream paths.
for reg in registry.k8s.io k8s.gcr.io gcr.io docker.io "$REGISTRY_ADDR"; do
    mkdir -p "$CERTS_D/$reg"
    upstream=https://$reg
    [ "$reg" = docker.io ] && upstream=https://registry-1.docker.io
    [ "$reg" = "$REGISTRY_ADDR" ] && upstream=http://$reg
    printf 'server = "%s"\n\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' \
        "$upstream" "$REGISTRY_ADDR" > "$CERTS_D/$reg/hosts.toml"
done
if ! ls "$CNI_CONF_DIR"/*.conflist >/dev/null 2>&1 && [ -f "$TESTENV/cni/10-anchor.conflist" ]; then
    install -D -m 0644 "$TESTENV/cni/10-anchor.conflist" "$CNI_CONF_DIR/10-anchor.conflist"
fi

setsid "$PYTHON" -m arun daemon --config "$CONF_DIR/config.toml" >>"$LOG" 2>&1 </dev/null &
PID=$!
trap 'kill -TERM $PID 2>/dev/null; wait $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || { echo "arun did not start, see $LOG" >&2; exit 1; }
"$TESTENV/critest-run.sh" "unix://$SOCK" "$OUT" "$@"
