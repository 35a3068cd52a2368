#!/bin/sh
# Installs the Debian packages arun and its test suite use, if any is missing.
#   runc, crun                      OCI runtimes the shims drive
#   containerd                      for `ctr` and `containerd-shim-runc-v2` (test peers, benchmarks)
#   containernetworking-plugins     CNI plugins in /usr/lib/cni
#   docker-registry                 a real registry on loopback for pull/push tests
#   busybox-static, busybox         root filesystems of test images
#   iptables, iproute2              CNI bridge/portmap, network namespaces
set -eu
PKGS="runc crun containerd containernetworking-plugins docker-registry busybox-static iptables iproute2 util-linux procps python3-venv"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing packages:$missing (run as root)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
# Debian enables the packaged services; arun's tests start their own instances.
for svc in containerd docker-registry; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active -q "$svc" 2>/dev/null; then
        systemctl stop "$svc" || true
    fi
done
