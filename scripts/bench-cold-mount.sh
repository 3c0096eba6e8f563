#!/usr/bin/env bash
# Cold mount-ready time and daemon peak RSS of two (or more) layerfs
# binaries, interleaved run by run with `cat` of the same layers, the page
# cache dropped before each step: on a noisy machine only ratios from the
# same run mean anything. Needs root (FUSE, drop_caches).
#
#   scripts/bench-cold-mount.sh RUNS LAYER...
#
# Environment: BINS="name=path ..." (default: old=/tmp/layerfs-main and
# new=this tree's release build); CACHE=none mounts with --no-cache instead
# of an empty --cache-dir (which also times storing the index); IDLE=S
# waits S seconds after dropping the page cache: on a VM whose host takes
# back idle guest memory, pages freed a while ago cost a host fault each
# when the next read claims them (IDLE=6 measures that state). An entry
# `NAME=ratarmount` in BINS times ratarmount's first mount (`ratarmount -f
# --index-folders`, ready when the mount point appears) in the same runs,
# for ratios against the peer of the harness' table.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
runs=$1; shift
target=${CARGO_TARGET_DIR:-$here/target}
BINS=${BINS:-"old=/tmp/layerfs-main new=$target/release/layerfs"}
work=$(mktemp -d); mnt=$work/mnt; mkdir -p "$mnt"
trap 'mountpoint -q "$mnt" && umount -l "$mnt"; rm -rf "$work"' EXIT
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; sleep "${IDLE:-0}"; }
elapsed() { echo "$2 - $1" | bc; }
for _ in $(seq "$runs"); do
  drop; t0=$(date +%s.%N); cat "$@" > /dev/null
  echo "cat $(elapsed "$t0" "$(date +%s.%N)") 0"
  for nb in $BINS; do
    name=${nb%%=*}; bin=${nb#*=}
    rm -rf "$work/cache"; mkdir -p "$work/cache"
    if [ "${CACHE:-dir}" = none ]; then copt=(--no-cache); else copt=(--cache-dir "$work/cache"); fi
    drop; t0=$(date +%s.%N)
    if [ "$bin" = ratarmount ]; then
      ratarmount -f --index-folders "$work/cache" "$@" "$mnt" >/dev/null 2>&1 &
      pid=$!
      until mountpoint -q "$mnt"; do
        kill -0 "$pid" 2>/dev/null || { echo "ratarmount failed" >&2; exit 1; }
        sleep 0.005
      done
      t1=$(date +%s.%N)
      hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
      fusermount -u "$mnt"
    else
      "$bin" mount "${copt[@]}" "$@" "$mnt"
      t1=$(date +%s.%N)
      pid=$(pgrep -f -n "mount .*$mnt\$")
      hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
      "$bin" umount "$mnt"
    fi
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    echo "$name $(elapsed "$t0" "$t1") $((hwm / 1024))"
  done
done | tee "$work/runs"
python3 - "$work/runs" <<'PY'
import collections, statistics, sys
times, hwm = collections.defaultdict(list), collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, t, m = line.split()
    times[name].append(float(t)); hwm[name].append(int(m))
cat = statistics.median(times["cat"])
for name, ts in times.items():
    med = statistics.median(ts)
    print(f"{name}: median {med:.2f} s = {med / cat:.2f}x cat, VmHWM median {statistics.median(hwm[name]):.0f} MiB ({len(ts)} runs)")
PY
