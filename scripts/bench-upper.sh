#!/usr/bin/env bash
# Issue 17's figures for the writable mount, side by side in one run:
#  1. time to the first write after making a stack writable: `layerfs
#     mount --upper` of the layer against `tar -x` of it plus a kernel
#     overlay on the extracted tree (caches dropped before each);
#  2. copy-up of a 1 GiB lower file (opening it for writing copies it
#     whole into the upper), then `sync` (fuse-overlayfs' syncfs does not
#     reach its upper, so only a whole sync times every tool's write-back):
#     layerfs --upper against fuse-overlayfs and the kernel's overlay over
#     the extracted tree.
# Needs root, fuse-overlayfs (apt-get install fuse-overlayfs) and a disk
# with room for the layer twice over.
#
#   scripts/bench-upper.sh RUNS LAYER BIG_LAYER
#
# LAYER: the many-file layer (the harness's small.tar: 200k files);
# BIG_LAYER: a layer holding one 1 GiB file, BIG_FILE (default blob.bin).
# Prints one line per measurement and the medians with their ratios.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
runs=$1 layer=$(realpath "$2") big=$(realpath "$3")
big_file=${BIG_FILE:-blob.bin}
bin=${LAYERFS:-${CARGO_TARGET_DIR:-$here/target}/release/layerfs}
work=$(mktemp -d "${TMPDIR:-/var/tmp}/bench-upper.XXXXXX")
mnt=$work/mnt
mkdir -p "$mnt"
cleanup() {
  "$bin" umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { echo "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
fresh() { rm -rf "$work/upper" "$work/work" "$work/lower"; mkdir -p "$work/upper" "$work/work" "$work/lower"; }
kernel_overlay() { mount -t overlay overlay -o "lowerdir=$1,upperdir=$work/upper,workdir=$work/work" "$mnt"; }
results=$work/results
: > "$results"
record() { echo "$1 $2" | tee -a "$results"; }

for run in $(seq "$runs"); do
  # 1. First write.
  fresh; drop; t=$(now)
  "$bin" mount -q --no-cache --upper "$work/upper" "$layer" "$mnt"
  echo written > "$mnt/first-write"
  record first-write/layerfs "$(since "$t")"
  "$bin" umount "$mnt"

  fresh; drop; t=$(now)
  tar -xf "$layer" -C "$work/lower"
  kernel_overlay "$work/lower"
  echo written > "$mnt/first-write"
  record first-write/tar-x+overlay "$(since "$t")"
  umount "$mnt"

  # 2. Copy-up of a 1 GiB lower file, the mount already up.
  fresh
  "$bin" mount -q --no-cache --upper "$work/upper" "$big" "$mnt"
  drop; t=$(now)
  : >> "$mnt/$big_file"; sync
  record copy-up/layerfs "$(since "$t")"
  "$bin" umount "$mnt"

  fresh
  tar -xf "$big" -C "$work/lower"
  fuse-overlayfs -o "lowerdir=$work/lower,upperdir=$work/upper,workdir=$work/work" "$mnt"
  drop; t=$(now)
  : >> "$mnt/$big_file"; sync
  record copy-up/fuse-overlayfs "$(since "$t")"
  umount "$mnt"

  fresh
  tar -xf "$big" -C "$work/lower"
  kernel_overlay "$work/lower"
  drop; t=$(now)
  : >> "$mnt/$big_file"; sync
  record copy-up/kernel-overlay "$(since "$t")"
  umount "$mnt"
  echo "run $run done" >&2
done

echo
echo "medians of $runs runs (seconds):"
sort -k1,1 -k2,2n "$results" | awk '
  function flush() { if (n) printf "%s %.3f\n", key, (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2 }
  $1 != key { flush(); key = $1; n = 0 }
  { v[++n] = $2 }
  END { flush() }' | tee "$work/medians"
ratio() { awk -v a="$1" -v b="$2" '$1 == a { x = $2 } $1 == b { y = $2 } END { if (y > 0) printf "%s / %s = %.2fx\n", a, b, x / y }' "$work/medians"; }
ratio first-write/layerfs first-write/tar-x+overlay
ratio copy-up/layerfs copy-up/fuse-overlayfs
ratio copy-up/layerfs copy-up/kernel-overlay
