#!/usr/bin/env bash
# Scale figures: one layer of 1M entries, and 100 small layers stacked.
# For each: mount time (indexing, then again from the stored index), the
# daemon's peak and settled RSS and its bytes per entry, `find` and `ls -lR`
# each on a fresh mount with caches dropped, then again. Data is generated
# once under $DATA/scale (about 1.1 GB) by a deterministic Python script.
# Needs root (FUSE, drop_caches).
#
#   scripts/bench-scale.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
export DATA=${DATA:-/tmp/layerfs-bench}
layerfs=$here/target/release/layerfs
scale=$DATA/scale
cargo build --release --quiet --manifest-path "$here/Cargo.toml"
mkdir -p "$scale"

if [ ! -f "$scale/million.tar" ] || [ ! -f "$scale/stack/099.tar" ]; then
  python3 - "$scale" <<'EOF'
import io, os, sys, tarfile
out = sys.argv[1]

def add(tar, name, data=b"", kind=tarfile.REGTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.mtime, info.mode = kind, 1700000000, 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if data else None)

# One layer: 1000 directories of 1000 small files each.
with tarfile.open(os.path.join(out, "million.tar.part"), "w", format=tarfile.PAX_FORMAT) as tar:
    for d in range(1000):
        add(tar, f"d{d:04}", kind=tarfile.DIRTYPE)
        for f in range(999):
            add(tar, f"d{d:04}/file-{f:04}.txt", f"{d}/{f}\n".encode())
os.rename(os.path.join(out, "million.tar.part"), os.path.join(out, "million.tar"))

# 100 layers: each adds 1000 files in its own directory and a shared one,
# replaces 50 files of the layer below and whites out 50 others.
os.makedirs(os.path.join(out, "stack"), exist_ok=True)
for n in range(100):
    with tarfile.open(os.path.join(out, "stack", f"{n:03}.tar"), "w", format=tarfile.PAX_FORMAT) as tar:
        add(tar, f"layer{n:03}", kind=tarfile.DIRTYPE)
        add(tar, "shared", kind=tarfile.DIRTYPE)
        for f in range(1000):
            add(tar, f"layer{n:03}/f{f:04}", f"{n}/{f}\n".encode())
        for f in range(10):
            add(tar, f"shared/from-{n:03}-{f}", b"s\n")
        if n:
            for f in range(50):
                add(tar, f"layer{n-1:03}/f{f:04}", f"replaced by {n}\n".encode())
            for f in range(50, 100):
                add(tar, f"layer{n-1:03}/.wh.f{f:04}")
EOF
fi

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
secs() { local t0=$EPOCHREALTIME; "$@" > /dev/null; awk -v a="${t0/,/.}" -v b="${EPOCHREALTIME/,/.}" 'BEGIN{printf "%.2f", b-a}'; }
status() { awk -v k="$2:" '$1==k{print int($2/1024)}' "/proc/$1/status"; }

# measure NAME LAYER...: one table row
measure() {
  local name=$1; shift
  local mnt=$scale/mnt idx=$scale/idx pid mount_s remount_s hwm rss hwm2 entries find1 find2 lsr1 lsr2
  mkdir -p "$mnt"; rm -rf "$idx"
  # Indexing mount; then walks with find on a fresh page and dentry cache.
  drop_caches
  mount_s=$(secs "$layerfs" mount --cache-dir "$idx" "$@" "$mnt")
  pid=$(pgrep -nf "layerfs mount --cache-dir $idx")
  drop_caches
  find1=$(secs find "$mnt")
  find2=$(secs find "$mnt")
  entries=$(find "$mnt" | wc -l)
  hwm=$(status "$pid" VmHWM); rss=$(status "$pid" VmRSS)
  "$layerfs" umount "$mnt"
  # Mount from the stored index; then ls -lR, first and again.
  drop_caches
  remount_s=$(secs "$layerfs" mount --cache-dir "$idx" "$@" "$mnt")
  pid=$(pgrep -nf "layerfs mount --cache-dir $idx")
  hwm2=$(status "$pid" VmHWM)
  drop_caches
  lsr1=$(secs ls -lR "$mnt")
  lsr2=$(secs ls -lR "$mnt")
  "$layerfs" umount "$mnt"
  printf '| %s | %s | %s | %s | %s | %s / %s | %s | %s / %s | %s / %s |\n' "$name" "$entries" \
    "$mount_s" "$remount_s" "$hwm" "$rss" "$hwm2" \
    "$(( rss * 1048576 / entries ))" "$find1" "$find2" "$lsr1" "$lsr2"
}

echo "# layerfs at scale, $(date -u +%Y-%m-%d), $(nproc) cores; command: scripts/bench-scale.sh"
echo
echo "| stack | entries | mount s (index) | remount s (stored index) | peak RSS MiB | settled RSS MiB / remount peak | settled B/entry | find s: first / again | ls -lR s: first / again |"
echo "|---|---|---|---|---|---|---|---|---|"
measure "1 layer, 1M entries (plain tar)" "$scale/million.tar"
mapfile -t stack < <(ls "$scale"/stack/*.tar)
measure "100 layers, 1k entries each" "${stack[@]}"
