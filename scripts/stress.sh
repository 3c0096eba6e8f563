#!/usr/bin/env bash
# Load and correctness under load: mounts a stack, then for a bounded time
# runs READERS parallel readers checksumming every file of it (each reader
# takes a shard of the file list and loops over it until time is up) while
# WALKERS `find` loops and WALKERS `ls -lR` loops walk the tree. Reports
# files read, bytes, read errors and checksum mismatches (both must be 0),
# walker runs, errors and wrong file counts, and the daemon's RSS (VmRSS and
# peak VmHWM from /proc) at start and end. Exits 1 if anything went wrong.
# The mount is always unmounted (trap), whatever happens.
#
#   scripts/stress.sh [--seconds N] [--readers N] [--walkers N] [--threads N]
#                     [--cached] [--reference TAR] [LAYER...]
#
# Data, in order of preference:
#   LAYER... given: that stack; the reference checksums come from
#     --reference TAR (a tar of the expected merged tree), else from
#     `layerfs export` of the same layers (then only consistency between
#     the mount under load and export is checked);
#   the team's bench data ($DATA, default /tmp/layerfs-bench; see
#     /work/shared/bench/README.md): the 3-layer stack
#     three/l1.tar.gz three/l2.tar.zst three/l3.tar (gzip, single-frame
#     zstd, plain: every read path), checked against three-merged.tar, the
#     merged tree the harness wrote independently;
#   otherwise a generated stack of 20k files: two directory trees written
#     by Python, `layerfs create` of the first (gzip), `layerfs diff` to
#     the second (zstd), checked against the second tree itself.
#
# Readers open files with O_DIRECT, so that every pass reaches the daemon
# instead of the page cache (the mount lets the kernel cache pages for
# good); --cached reads through the page cache instead.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
DATA=${DATA:-/tmp/layerfs-bench}
seconds=120 readers=32 walkers=1 threads="" direct=1 reference="" layers=()
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --readers) readers=$2; shift 2 ;;
    --walkers) walkers=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --cached) direct=0; shift ;;
    --reference) reference=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "stress.sh: unknown option $1" >&2; exit 2 ;;
    *) layers+=("$(realpath "$1")"); shift ;;
  esac
done

target=${CARGO_TARGET_DIR:-$here/target}
cargo build --release --quiet --manifest-path "$here/Cargo.toml"
layerfs=$target/release/layerfs
work=$(mktemp -d /tmp/layerfs-stress.XXXXXX)
mnt=$work/mnt
mkdir "$mnt"
cleanup() {
  set +e
  local pids
  pids=$(jobs -p)
  if [ -n "$pids" ]; then kill $pids 2>/dev/null; wait 2>/dev/null; fi
  if grep -q " $mnt fuse" /proc/self/mounts; then
    "$layerfs" umount "$mnt" 2>/dev/null || "$layerfs" umount -l "$mnt" || umount -l "$mnt"
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Reference checksums: "md5<TAB>path" per regular file (hard links included).
sums_of_tar() {
  python3 - "$1" > "$work/reference" <<'EOF'
import hashlib, sys, tarfile
with tarfile.open(sys.argv[1], "r|*") as tar:
    sums = {}
    for m in tar:
        name = m.name.lstrip("./") if m.name.startswith("./") else m.name
        name = name.strip("/")
        if m.isfile():
            h = hashlib.md5()
            f = tar.extractfile(m)
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
            sums[name] = h.hexdigest()
        elif m.islnk():
            target = m.linkname.lstrip("./") if m.linkname.startswith("./") else m.linkname
            sums[name] = sums.get(target.strip("/"), "?")
        else:
            sums.pop(name, None)
for name, md5 in sums.items():
    print(f"{md5}\t{name}")
EOF
}
sums_of_dir() {
  python3 - "$1" > "$work/reference" <<'EOF'
import hashlib, os, sys
root = sys.argv[1]
for d, _, files in os.walk(root):
    for f in files:
        p = os.path.join(d, f)
        if os.path.isfile(p) and not os.path.islink(p):
            with open(p, "rb") as fh:
                print(f"{hashlib.md5(fh.read()).hexdigest()}\t{os.path.relpath(p, root)}")
EOF
}

three=$DATA/layers/three
if [ ${#layers[@]} -gt 0 ]; then
  if [ -n "$reference" ]; then
    what="reference $reference"
    sums_of_tar "$reference"
  else
    what="reference: layerfs export of the same layers (consistency only)"
    "$layerfs" export -q "${layers[@]}" -o "$work/export.tar"
    sums_of_tar "$work/export.tar"
    rm "$work/export.tar"
  fi
elif [ -f "$three/l1.tar.gz" ] && [ -f "$three/l2.tar.zst" ] && [ -f "$three/l3.tar" ] \
    && [ -f "$DATA/layers/three-merged.tar" ]; then
  layers=("$three/l1.tar.gz" "$three/l2.tar.zst" "$three/l3.tar")
  what="reference $DATA/layers/three-merged.tar"
  sums_of_tar "$DATA/layers/three-merged.tar"
else
  python3 - "$work/gen" <<'EOF'
import os, random, sys
out, rng = sys.argv[1], random.Random(20261123)
def write(root, i, salt):
    p = os.path.join(root, f"d{i % 200:03}", f"f{i:05}")
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(rng.randbytes(rng.randrange(0, 3)) + (f"{salt}:{i}\n" * rng.randrange(1, 2000)).encode())
for i in range(20000):
    write(os.path.join(out, "v1"), i, "v1")
os.system(f"cp -a {out}/v1 {out}/v2")
for i in range(0, 20000, 7):
    os.remove(os.path.join(out, "v2", f"d{i % 200:03}", f"f{i:05}"))
for i in range(3, 20000, 11):
    write(os.path.join(out, "v2"), i, "v2")
EOF
  "$layerfs" create -q "$work/gen/v1" -o "$work/l1.tar.gz" > /dev/null
  "$layerfs" diff -q "$work/l1.tar.gz" "$work/gen/v2" -o "$work/l2.tar.zst" > /dev/null
  layers=("$work/l1.tar.gz" "$work/l2.tar.zst")
  what="reference: the generated directory tree"
  sums_of_dir "$work/gen/v2"
fi
nfiles=$(wc -l < "$work/reference")

start=$(date +%s%N)
"$layerfs" mount ${threads:+--threads "$threads"} --log-file "$work/daemon.log" "${layers[@]}" "$mnt"
mount_s=$(( ($(date +%s%N) - start) / 1000000 ))
daemon=""
for pid in $(pgrep -x layerfs); do
  if tr '\0' '\n' < "/proc/$pid/cmdline" 2>/dev/null | grep -qxF "$mnt"; then daemon=$pid; fi
done
[ -n "$daemon" ] || { echo "stress.sh: no daemon found for $mnt" >&2; exit 1; }
rss() { awk '/^VmRSS|^VmHWM/ { printf "%s %.0f MiB  ", $1, $2 / 1024 }' "/proc/$daemon/status"; }
rss_start=$(rss)

deadline=$(( $(date +%s) + seconds ))
for ((i = 0; i < readers; i++)); do
  python3 - "$work/reference" "$mnt" "$i" "$readers" "$deadline" "$direct" \
      > "$work/reader.$i" 2> "$work/reader.$i.err" <<'EOF' &
import hashlib, json, mmap, os, random, sys, time
ref, mnt, index, count, deadline, direct = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), sys.argv[6] == "1"
entries = [line.rstrip("\n").split("\t", 1) for line in open(ref)]
random.Random(42).shuffle(entries)          # shards mix directories
shard = entries[index::count]
flags = os.O_RDONLY | (os.O_DIRECT if direct else 0)
buf = mmap.mmap(-1, 1 << 20)                # page-aligned, as O_DIRECT wants
view = memoryview(buf)
files = nbytes = errors = mismatches = passes = 0
while time.time() < deadline and shard:
    for md5, rel in shard:
        if time.time() >= deadline:
            break
        h = hashlib.md5()
        try:
            fd = os.open(os.path.join(mnt, rel), flags)
            try:
                while (k := os.readv(fd, [buf])) > 0:
                    h.update(view[:k])
                    nbytes += k
            finally:
                os.close(fd)
        except OSError as e:
            errors += 1
            if errors <= 5:
                print(f"{rel}: {e}", file=sys.stderr)
            continue
        files += 1
        if h.hexdigest() != md5:
            mismatches += 1
            if mismatches <= 5:
                print(f"{rel}: checksum mismatch", file=sys.stderr)
    else:
        passes += 1
print(json.dumps(dict(files=files, bytes=nbytes, errors=errors, mismatches=mismatches, passes=passes)))
EOF
done

# Walkers: loops of `find -type f` (which must count every reference file)
# and `ls -lR`, until the deadline.
walk() {
  local kind=$1 n=$2 runs=0 errors=0 wrong=0 count
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if [ "$kind" = find ]; then
      # pipefail: a failing find fails the substitution.
      if count=$(find "$mnt" -type f 2>> "$work/walk.err" | wc -l); then
        [ "$count" -eq "$nfiles" ] || { wrong=$((wrong + 1)); echo "find counted $count files" >> "$work/walk.err"; }
      else
        errors=$((errors + 1))
      fi
    else
      ls -lR "$mnt" > /dev/null 2>> "$work/walk.err" || errors=$((errors + 1))
    fi
    runs=$((runs + 1))
  done
  echo "$runs $errors $wrong" > "$work/walk.$kind.$n"
}
for ((i = 0; i < walkers; i++)); do
  walk find "$i" &
  walk ls "$i" &
done
wait
rss_end=$(rss)

python3 - "$work" "$seconds" <<'EOF' > "$work/summary"
import glob, json, os, sys
work, seconds = sys.argv[1], float(sys.argv[2])
t = dict(files=0, bytes=0, errors=0, mismatches=0, passes=0)
missing = 0
for p in glob.glob(os.path.join(work, "reader.*")):
    if p.endswith(".err"):
        continue
    try:
        r = json.loads(open(p).read())
    except ValueError:
        missing += 1
        continue
    for k in t:
        t[k] += r[k]
w = {}
for p in glob.glob(os.path.join(work, "walk.*.*")):
    kind = p.split(".")[-2]
    runs, errors, wrong = map(int, open(p).read().split())
    a = w.setdefault(kind, [0, 0, 0])
    a[0] += runs; a[1] += errors; a[2] += wrong
print(f"readers: {t['files']} files read ({t['passes']} full shard passes), "
      f"{t['bytes'] / 1e9:.2f} GB ({t['bytes'] / 1e6 / seconds:.0f} MB/s, {t['files'] / seconds:.0f} files/s), "
      f"errors {t['errors'] + missing}, checksum mismatches {t['mismatches']}")
for kind in ("find", "ls"):
    runs, errors, wrong = w.get(kind, [0, 0, 0])
    label = "find -type f" if kind == "find" else "ls -lR"
    extra = f", wrong file counts {wrong}" if kind == "find" else ""
    print(f"{label}: {runs} runs, errors {errors}{extra}")
bad = t["errors"] + missing + t["mismatches"] + sum(a[1] + a[2] for a in w.values())
print(f"BAD {bad}")
EOF

echo "layerfs stress: ${layers[*]}"
echo "  $what: $nfiles files; ${seconds} s, $readers readers ($([ $direct = 1 ] && echo O_DIRECT || echo page cache)), $walkers find + $walkers ls -lR walkers${threads:+, --threads $threads}"
echo "  mount (layerfs mount until ready): ${mount_s} ms"
grep -v '^BAD' "$work/summary" | sed 's/^/  /'
echo "  daemon RSS at start: $rss_start"
echo "  daemon RSS at end:   $rss_end"
for f in "$work"/reader.*.err "$work/walk.err"; do
  [ -s "$f" ] && { echo "  $(basename "$f"):"; head -5 "$f" | sed 's/^/    /'; }
done
[ -s "$work/daemon.log" ] && { echo "  daemon log:"; head -5 "$work/daemon.log" | sed 's/^/    /'; }
bad=$(sed -n 's/^BAD //p' "$work/summary")
if [ "$bad" -ne 0 ]; then
  echo "FAIL: $bad errors or mismatches"
  exit 1
fi
echo "OK"
