#!/usr/bin/env bash
# layerfs beside its peers (ratarmount, archivemount, squashfuse,
# fuse-overlayfs, kernel overlayfs, tar -x), measured in one run by the
# team's harness in ../shared/bench, on its deterministic data sets.
#
#   scripts/bench.sh [peers.sh options]
#   scripts/bench.sh --quick                                  # ~10+ min
#   scripts/bench.sh --phases big --tools layerfs,ratarmount  # one phase, two tools
#
# Builds layerfs (release), generates the data sets once (~20 GB under
# $DATA, default /tmp/layerfs-bench), installs the peers if missing, then
# prints the harness' Markdown report with a "layerfs / peer" ratio table.
# Needs root (mounts, drop_caches).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bench=${BENCH:-$here/../shared/bench}
export DATA=${DATA:-/tmp/layerfs-bench}

cargo build --release --quiet --manifest-path "$here/Cargo.toml"
if ! command -v ratarmount >/dev/null || ! command -v squashfuse_ll >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq fuse3 fuse-overlayfs squashfuse squashfs-tools archivemount pigz zstd fio bc >/dev/null
  pip install -q ratarmount
fi
[ -f "$DATA/layers/small.tar" ] || "$bench/make-data.sh"

TOOL_NAME=layerfs \
TOOL_MOUNT="$here/target/release/layerfs mount -f --cache-dir {idx} {layers} {mnt}" \
TOOL_CLEAN='rm -rf {idx}' \
TOOL_INDEXED=1 \
  "$bench/peers.sh" "$@"
