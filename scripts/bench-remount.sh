#!/usr/bin/env bash
# Remount time with the stored index (issue 5's "remount <= 0.1 s") of two
# (or more) layerfs binaries, interleaved run by run, the page cache
# dropped before each mount (COLD=0 keeps it warm). Timed as the
# benchmark harness times `mount_warm`: from starting `mount -f` until a
# probe file can be stat'ed (fork-free poll). Each binary gets its own
# cache directory, filled by one first mount: entry formats differ between
# versions. On a noisy machine only ratios from the same run mean
# anything, so after the timed mounts each binary mounts PERF (3) more
# times the same way under `perf stat`, for its CPU time (task-clock, all
# threads) and page faults, which load changes far less than wall time
# (perf's own start would distort the timed runs); with CALLGRIND=1 it also
# prints each binary's instruction count for one warm remount (valgrind),
# which load does not change at all.
# Needs root (FUSE, drop_caches).
#
#   scripts/bench-remount.sh RUNS PROBE LAYER...
#
# PROBE is a path inside the mounted tree. Environment: BINS="name=path
# ..." (default: old=/tmp/layerfs-main and new=this tree's release build).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
runs=$1 probe=$2; shift 2
target=${CARGO_TARGET_DIR:-$here/target}
BINS=${BINS:-"old=/tmp/layerfs-main new=$target/release/layerfs"}
work=$(mktemp -d); mnt=$work/mnt; mkdir -p "$mnt"
trap 'mountpoint -q "$mnt" && umount -l "$mnt"; rm -rf "$work"' EXIT
drop() { [ "${COLD:-1}" = 0 ] || { sync; echo 3 > /proc/sys/vm/drop_caches; }; }
now() { echo "$EPOCHREALTIME"; }

# mount_ready BIN CACHE [WRAPPER...]: mounts in the foreground, returns
# once the probe is there (sets pid); fails after 60 s.
mount_ready() {
  local bin=$1 cache=$2; shift 2
  "$@" "$bin" mount -f -q --cache-dir "$cache" "${layers[@]}" "$mnt" &
  pid=$!
  local deadline=$((SECONDS + 60))
  until [ -e "$mnt/$probe" ]; do
    kill -0 "$pid" 2>/dev/null || { echo "$bin exited before the mount was ready" >&2; return 1; }
    [ $SECONDS -lt $deadline ] || { echo "$bin: not ready after 60 s" >&2; return 1; }
    read -r -t 0.002 <> <(:) || true
  done
}
unmount() { umount "$mnt"; wait "$pid" || true; }

layers=("$@")
for nb in $BINS; do
  name=${nb%%=*}; bin=${nb#*=}
  mkdir -p "$work/cache-$name"
  mount_ready "$bin" "$work/cache-$name"; unmount
done
for _ in $(seq "$runs"); do
  for nb in $BINS; do
    name=${nb%%=*}; bin=${nb#*=}
    drop; t0=$(now)
    mount_ready "$bin" "$work/cache-$name"
    t1=$(now)
    unmount
    echo "time $name $(echo "$t1 - $t0" | bc)"
  done
done | tee "$work/runs"
for _ in $(seq "${PERF:-3}"); do
  for nb in $BINS; do
    name=${nb%%=*}; bin=${nb#*=}
    drop
    mount_ready "$bin" "$work/cache-$name" perf stat -x, -o "$work/stat" -e task-clock,page-faults
    unmount
    awk -F, -v n="$name" '$3 == "task-clock" {c = $1} $3 == "page-faults" {f = $1}
      END {print "cpu", n, c, f}' "$work/stat"
  done
done | tee -a "$work/runs"
python3 - "$work/runs" <<'PY'
import collections, statistics, sys
times, cpu, faults = (collections.defaultdict(list) for _ in range(3))
for line in open(sys.argv[1]):
    what, name, *values = line.split()
    if what == "time":
        times[name].append(float(values[0]))
    else:
        cpu[name].append(float(values[0])); faults[name].append(int(values[1]))
names = list(times)
first = statistics.median(times[names[0]])
for name in names:
    med = statistics.median(times[name])
    line = (f"{name}: median {med:.3f} s (min {min(times[name]):.3f}, max {max(times[name]):.3f}, "
            f"{len(times[name])} runs) = {med / first:.2f}x {names[0]}")
    if cpu[name]:
        med_cpu = statistics.median(cpu[name])
        line += (f"; CPU {med_cpu:.1f} ms = {med_cpu / statistics.median(cpu[names[0]]):.2f}x, "
                 f"{statistics.median(faults[name]):.0f} page faults")
    print(line)
PY
if [ "${CALLGRIND:-0}" = 1 ]; then
  for nb in $BINS; do
    name=${nb%%=*}; bin=${nb#*=}
    mount_ready "$bin" "$work/cache-$name" valgrind --tool=callgrind -q \
      --callgrind-out-file="$work/cg-$name" --trace-children=no
    unmount
    echo "$name: $(callgrind_annotate "$work/cg-$name" 2>/dev/null | awk '/PROGRAM TOTALS/ {print $1}') instructions (callgrind, one warm remount)"
  done
fi
