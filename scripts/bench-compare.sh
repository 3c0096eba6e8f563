#!/usr/bin/env bash
# Issue 22's figure for `layerfs compare`: two versions of a many-file
# stack sharing their bottom layer, compared
#  1. by `layerfs compare` with the indexes in the cache (as after a first
#     mount or compare), and with none (`--no-cache`: both stacks indexed);
#  2. by unpacking both (`layerfs export | tar -x`, which applies the
#     whiteouts) and `diff -r`.
# For compare it shows what was read: the file contents compare read
# (its own count, `-v`), and the bytes the process read through read(2)
# and pread(2) (rchar of /proc/PID/io, taken from the exited process
# before it is reaped) against the shared layer's size and the cache's
# (read_bytes would count the binary's own pages, faulted in from disk).
#
#   scripts/bench-compare.sh [FILES]
#
# FILES: files in the shared bottom layer (default 200000, about 1 KiB
# each). Needs python3, GNU tar and diff, root for dropping caches (else
# the caches stay warm). Prints one line per measurement.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
files=${1:-200000}
bin=${LAYERFS:-${CARGO_TARGET_DIR:-$here/target}/release/layerfs}
work=$(mktemp -d "${TMPDIR:-/var/tmp}/bench-compare.XXXXXX")
trap 'rm -rf "$work"' EXIT
drop() { sync; if [ -w /proc/sys/vm/drop_caches ]; then echo 3 > /proc/sys/vm/drop_caches; fi; }
now() { echo "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }

# The layers: base.tar (FILES files in 200 directories), and two tops.
# v1 rewrites 1,000 files (new bytes, a few more of them: a file rewritten
# with the same size would be read on both sides, the shared layer's copy
# included) and adds a directory; v2 rewrites another 1,000, whites out
# 500 files and a directory.
python3 - "$work" "$files" <<'EOF'
import io, random, sys, tarfile
work, files = sys.argv[1], int(sys.argv[2])
rng = random.Random(22)

def blob(n, seed):
    return random.Random(seed).randbytes(n)

def member(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 1700000000
    tar.addfile(info, io.BytesIO(data))

sizes = [rng.randint(200, 1800) for _ in range(files)]
path = lambda i: f"d{i % 200:03}/f{i:07}"
with tarfile.open(f"{work}/base.tar", "w", format=tarfile.PAX_FORMAT) as tar:
    for d in range(200):
        info = tarfile.TarInfo(f"d{d:03}")
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1700000000
        tar.addfile(info)
    for i in range(files):
        member(tar, path(i), blob(sizes[i], i))
with tarfile.open(f"{work}/v1.tar", "w", format=tarfile.PAX_FORMAT) as tar:
    for i in range(0, files, files // 1000):
        member(tar, path(i), blob(sizes[i] + 17, -i - 1))
    for i in range(100):
        member(tar, f"new/f{i}", blob(4096, 10**9 + i))
with tarfile.open(f"{work}/v2.tar", "w", format=tarfile.PAX_FORMAT) as tar:
    for i in range(1, files, files // 1000):
        member(tar, path(i), blob(sizes[i] + 31, -i - 2))
    for i in range(2, files, files // 500):
        d, f = path(i).split("/")
        member(tar, f"{d}/.wh.{f}", b"")
    member(tar, ".wh.d199", b"")
EOF
base=$work/base.tar
echo "shared layer: $base, $(stat -c %s "$base") bytes, $files files"
echo "tops: v1 $(stat -c %s "$work/v1.tar") bytes, v2 $(stat -c %s "$work/v2.tar") bytes"

# Runs layerfs with ARGS; prints its wall time, the content bytes it says
# it read, and its rchar, read from the exited process before
# it is reaped (waitid with WNOWAIT).
measure() {
  python3 - "$bin" "$@" <<'EOF'
import os, subprocess, sys, time
start = time.monotonic()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
err = p.stderr.read().decode(errors="replace")
os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)
elapsed = time.monotonic() - start
io = dict(line.split(": ") for line in open(f"/proc/{p.pid}/io").read().splitlines())
status = p.wait()
if status not in (0, 1):
    sys.exit(f"layerfs exited {status}: {err}")
contents = [l.split("read ")[1].split(" bytes")[0] for l in err.splitlines() if "compare: read" in l]
print(f"{elapsed:.3f} s, contents read {contents[0] if contents else '?'} bytes, "
      f"rchar {int(io['rchar'])} bytes")
EOF
}

a=("$base" "$work/v1.tar") b=("$base" "$work/v2.tar")
lines=$("$bin" compare --no-cache "${a[@]}" -- "${b[@]}" | wc -l) || true
echo "differences: $lines lines"

drop
echo "compare, no cache (both stacks indexed): $(measure compare -v --no-cache "${a[@]}" -- "${b[@]}")"

export XDG_CACHE_HOME=$work/cache
"$bin" compare -q "${a[@]}" -- "${b[@]}" > /dev/null || true
cache_bytes=$(du -sb "$work/cache" | cut -f1)
drop
echo "compare, indexes cached ($cache_bytes bytes of cache): $(measure compare -v "${a[@]}" -- "${b[@]}")"
echo "compare, indexes cached, page cache warm: $(measure compare -v "${a[@]}" -- "${b[@]}")"

drop
t=$(now)
for side in a b; do
  mkdir "$work/$side"
  if [ $side = a ]; then layers=("${a[@]}"); else layers=("${b[@]}"); fi
  "$bin" export -q --no-cache "${layers[@]}" | tar -x -C "$work/$side"
done
unpacked=$(since "$t")
t=$(now)
diff -r --no-dereference "$work/a" "$work/b" > /dev/null || true
diffed=$(since "$t")
echo "export | tar -x of both: $unpacked s; diff -r: $diffed s; total $(awk -v a="$unpacked" -v b="$diffed" 'BEGIN { printf "%.3f", a + b }') s"
