#!/bin/sh
# Build the Go unary-call client against the grpc-go that cri-tools vendors (no network needed):
#   tools/grpcfast/grpcbench/build.sh /tmp/gfbench   ->  /tmp/gfbench/grpcbench
set -eu
out=${1:-/tmp/gfbench}
tree=${CRI_TOOLS:-/work/tools/cri-tools}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out/cmd/grpcbench"
cp "$tree/go.mod" "$tree/go.sum" "$out/"
ln -sfn "$tree/vendor" "$out/vendor"
cp "$here/main.go" "$out/cmd/grpcbench/main.go"
cd "$out" && GOFLAGS=-mod=vendor ${GO:-/work/tools/gov/bin/go} build -o "$out/grpcbench" ./cmd/grpcbench
echo "$out/grpcbench"
