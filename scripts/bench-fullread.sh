#!/usr/bin/env bash
# Cold full reads (`tar -cf - -C MNT . | wc -c`, the harness' `fullread`)
# of layerfs binaries beside the kernel on the extracted tree and `cat` of
# the layer, interleaved step by step, the page cache dropped before each
# step: on a noisy machine only ratios from the same run mean anything.
# Each binary's index is built once, before the runs, so every timed read
# is on a remount (as the harness does). Needs root (FUSE, drop_caches);
# hold the bench lock: `flock /work/bench.lock scripts/bench-fullread.sh ...`.
#
#   scripts/bench-fullread.sh RUNS VARIANT...
#
# VARIANT: small.tar, small.gz, small.zst, small.zstmf (layers of
# $DATA/layers), any layer file, or a directory layer (an extracted tree,
# e.g. $DATA/x/small: no `cat` row for it; the kernel row reads the
# extracted tree all the same). Environment: DATA (default
# /tmp/layerfs-bench), BINS="name=path ..." (default: old=/tmp/layerfs-main
# and new=this tree's release build), PLAIN=0 to leave out the kernel on
# $DATA/x/small, WARM=1 to `cat` the layer into the page cache after the
# drop (what a read-ahead could at best achieve). With the kernel row, the
# same read of the extracted tree again with everything cached (`floor`:
# what `tar` and the pipe cost without any I/O) and each time's ratio to it.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
runs=$1; shift
DATA=${DATA:-/tmp/layerfs-bench}
target=${CARGO_TARGET_DIR:-$here/target}
BINS=${BINS:-"old=/tmp/layerfs-main new=$target/release/layerfs"}
work=$(mktemp -d); mnt=$work/mnt; mkdir -p "$mnt"
trap 'mountpoint -q "$mnt" && umount -l "$mnt"; rm -rf "$work"' EXIT
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
elapsed() { echo "$2 - $1" | bc; }
layer_of() {
  case $1 in
    small.tar) echo "$DATA/layers/small.tar" ;;
    small.gz) echo "$DATA/layers/small.tar.gz" ;;
    small.zst) echo "$DATA/layers/small.tar.zst" ;;
    small.zstmf) echo "$DATA/layers/small.mf.tar.zst" ;;
    *) echo "$1" ;;
  esac
}
# Times one full read of $1; prints seconds and bytes.
fullread() {
  local t0 t1 bytes
  t0=$(date +%s.%N)
  bytes=$(tar -cf - -C "$1" . | wc -c)
  t1=$(date +%s.%N)
  echo "$(elapsed "$t0" "$t1") $bytes"
}
mount_with() { # BIN CACHE LAYER
  "$1" mount --cache-dir "$2" "$3" "$mnt"
}
unmount_with() { # BIN
  local pid
  pid=$(pgrep -f -n "mount .*$mnt\$" || true)
  "$1" umount "$mnt"
  while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
}
for variant in "$@"; do
  layer=$(layer_of "$variant")
  for nb in $BINS; do
    name=${nb%%=*}; bin=${nb#*=}
    mkdir -p "$work/cache-$name-$variant"
    mount_with "$bin" "$work/cache-$name-$variant" "$layer"
    unmount_with "$bin"
  done
done
for _ in $(seq "$runs"); do
  for variant in "$@"; do
    layer=$(layer_of "$variant")
    if [ ! -d "$layer" ]; then
      drop; t0=$(date +%s.%N); cat "$layer" > /dev/null
      echo "$variant cat $(elapsed "$t0" "$(date +%s.%N)") $(stat -c %s "$layer")"
    fi
    if [ "${PLAIN:-1}" = 1 ]; then
      drop; echo "$variant kernel $(fullread "$DATA/x/small")"
      fullread "$DATA/x/small" > /dev/null
      echo "$variant floor $(fullread "$DATA/x/small")"
    fi
    for nb in $BINS; do
      name=${nb%%=*}; bin=${nb#*=}
      mount_with "$bin" "$work/cache-$name-$variant" "$layer"
      drop
      [ "${WARM:-0}" = 1 ] && cat "$layer" > /dev/null
      echo "$variant $name $(fullread "$mnt")"
      unmount_with "$bin"
    done
  done
done | tee "$work/runs"
python3 - "$work/runs" "$(awk '/file_bytes/ {gsub(/[^0-9]/, ""); print}' "$DATA/meta/small.json" 2>/dev/null || echo 0)" <<'PY'
import collections, statistics, sys
times = collections.defaultdict(list)
size = {}
for line in open(sys.argv[1]):
    variant, name, t, n = line.split()
    times[(variant, name)].append(float(t))
    if name == "cat":
        size[variant] = int(n)
data = int(sys.argv[2]) or 1
for variant in dict.fromkeys(v for v, _ in times):
    cat = statistics.median(times[(variant, "cat")]) if (variant, "cat") in times else None
    kernel = times.get((variant, "kernel"))
    kernel = statistics.median(kernel) if kernel else None
    floor = times.get((variant, "floor"))
    floor = statistics.median(floor) if floor else None
    for (v, name), ts in times.items():
        if v != variant or name == "cat":
            continue
        med = statistics.median(ts)
        mbps = data / med / 1e6
        line = f"{variant} {name}: median {med:.2f} s = {mbps:.1f} MB/s of file data"
        if cat:
            line += f"; {mbps / (size[variant] / cat / 1e6):.2f}x cat's MB/s"
        if kernel and name not in ("kernel", "floor"):
            line += f", {kernel / med:.2f}x the kernel's MB/s"
        if floor and name != "floor":
            line += f", {med / floor:.2f}x the warm floor's time"
        print(line + f" ({len(ts)} runs: {' '.join(f'{t:.2f}' for t in ts)})")
    if cat:
        print(f"{variant} cat: median {cat:.2f} s = {size[variant] / cat / 1e6:.0f} MB/s of the layer file")
PY
