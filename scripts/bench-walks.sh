#!/usr/bin/env bash
# First walks and cold random reads of two (or more) layerfs binaries and of
# the kernel on the extracted tree, interleaved run by run, the page cache
# dropped after each mount: on a noisy machine only ratios from the same run
# mean anything. Needs root (FUSE, drop_caches) and the harness' data sets.
#
#   scripts/bench-walks.sh RUNS walk LAYER DIR   # find -printf, plain find, ls -lR
#   scripts/bench-walks.sh RUNS rand LAYER       # 1,000 random 4 KiB reads of big/blob.bin, then dd
#   scripts/bench-walks.sh RUNS rand LAYER MANIFEST  # 1,000 random files: open, 4 KiB pread, close
#
# A walk row `floor` walks DIR again with only the kernel's dentries and
# inodes dropped (`drop_caches` 2), its blocks still cached: what the
# kernel itself spends creating the inodes a first walk must create, with
# no disk read. No filesystem's first walk of a fresh mount goes below it,
# since every mount's first walk must create the same inodes.
#
# A LAYER that is a directory (an extracted layer: $DATA/x/big, $DATA/x/small)
# is also read by the kernel directly, as the `plain` row of `rand`.
# e.g. `scripts/bench-walks.sh 3 walk $DATA/layers/small.tar $DATA/x/small`
# or `scripts/bench-walks.sh 2 rand $DATA/layers/big.mf.tar.zst`. Each
# binary keeps its own index cache across runs (the mounts are warm-index
# remounts); a walk prints wall seconds, the walker's user+system CPU
# seconds, and the daemon's CPU ticks and major faults. Environment:
# BINS="name=path ..." (default: old=/tmp/layerfs-main and new=this tree's
# release build); BENCH (default ../shared/bench) for randread.py. Takes
# /work/bench.lock if it exists, so that it never times against another
# benchmark.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
if [ -e /work/bench.lock ] && [ -z "${BENCH_LOCKED:-}" ]; then
  BENCH_LOCKED=1 exec flock /work/bench.lock "$0" "$@"
fi
runs=$1 what=$2 layer=$3 dir=${4:-}
manifest=$dir
target=${CARGO_TARGET_DIR:-$here/target}
bench=${BENCH:-$here/../shared/bench}
if [ "$what" = rand ] && [ ! -f "$bench/randread.py" ]; then
  echo "no $bench/randread.py: set BENCH to the harness' directory" >&2
  exit 2
fi
BINS=${BINS:-"old=/tmp/layerfs-main new=$target/release/layerfs"}
work=$(mktemp -d); mnt=$work/mnt; mkdir -p "$mnt"
trap 'mountpoint -q "$mnt" && umount -l "$mnt"; rm -rf "$work"' EXIT
# drop [LEVEL]: 3 (default) drops everything; 2 only dentries and inodes.
drop() { sync; echo "${1:-3}" > /proc/sys/vm/drop_caches; }
# A path that exists once the mount is up.
probe() {
  if [ "$what" = rand ] && [ -z "$manifest" ]; then echo "$mnt/big/blob.bin"; else find "$mnt" -mindepth 1 -maxdepth 1 -print -quit; fi
}

# randread ROOT RUN: the random reads of `rand` under ROOT.
randread() {
  if [ -n "$manifest" ]; then
    python3 "$bench/randread.py" files "$1" "$manifest" -n 1000 --deadline 60 --seed "$2"
  else
    python3 "$bench/randread.py" file "$1/big/blob.bin" -n 1000 --deadline 20 --seed "$2"
  fi
}

# The walks, by name, of ROOT.
walk() {
  case $1 in
    find1) find "$2" -printf '%s %p\n' ;;
    findp) find "$2" ;;
    ls1) LC_ALL=C ls -lR "$2" ;;
  esac
}
export -f walk

# timed_walk NAME ROOT [LEVEL]: the walk after dropping caches; wall and
# the walker's own CPU seconds.
timed_walk() {
  drop "${3:-3}"
  /usr/bin/time -f "%e %U %S" -o "$work/t" bash -c 'walk "$@" > /dev/null' _ "$1" "$2"
  awk -v l="$1" '{printf "%s %.2f s (cpu %.2f s)", l, $1, $2 + $3}' "$work/t"
}

mount_bin() { # BIN CACHE -> sets pid
  "$1" mount -f --cache-dir "$2" "$layer" "$mnt" 2> "$work/daemon.err" &
  pid=$!
  for _ in $(seq 2400); do
    if mountpoint -q "$mnt"; then
      p=$(probe)
      [ -n "$p" ] && [ -e "$p" ] && return 0
    fi
    kill -0 "$pid" 2> /dev/null || { cat "$work/daemon.err" >&2; return 1; }
    sleep 0.05
  done
  echo "mount of $layer did not come up" >&2
  return 1
}

unmount_bin() {
  umount "$mnt"
  wait "$pid" || true
}

daemon_stats() { awk '{printf " daemon cpu %d ticks majflt %d", $14 + $15, $12}' "/proc/$pid/stat"; }

for run in $(seq "$runs"); do
  for nb in $BINS plain= floor=; do
    name=${nb%%=*}; bin=${nb#*=}
    if [ "$what" = walk ]; then
      for label in find1 findp ls1; do
        if [ "$name" = plain ] || [ "$name" = floor ]; then
          [ -n "$dir" ] || continue
          if [ "$name" = floor ]; then
            walk "$label" "$dir" > /dev/null # its blocks into the page cache
            echo "run $run $name $(timed_walk "$label" "$dir" 2)"
          else
            echo "run $run $name $(timed_walk "$label" "$dir")"
          fi
          continue
        fi
        mkdir -p "$work/cache-$name"
        mount_bin "$bin" "$work/cache-$name"
        echo "run $run $name $(timed_walk "$label" "$mnt")$(daemon_stats)"
        unmount_bin
      done
    elif [ "$name" = floor ]; then
      continue
    elif [ "$name" = plain ]; then
      if [ -d "$layer" ]; then
        drop
        echo "run $run $name rand $(randread "$layer" "$run")"
      fi
    else
      mkdir -p "$work/cache-$name"
      mount_bin "$bin" "$work/cache-$name"
      drop
      echo "run $run $name rand $(randread "$mnt" "$run")"
      unmount_bin
      [ -z "$manifest" ] || continue
      mount_bin "$bin" "$work/cache-$name"
      drop
      echo "run $run $name seq $(dd if="$mnt/big/blob.bin" of=/dev/null bs=1M 2>&1 | tail -1)"
      unmount_bin
    fi
  done
done
