#!/usr/bin/env bash
# Mount-ready time and daemon RSS for one many-file layer in plain, gzip and
# zstd form, side by side with `cat`, `gzip -dc`, `zstd -dc` and `tar -x` of
# the same layer, page cache dropped before each step (needs root).
#
#   scripts/measure-mount.sh [FILES]      # default 100000 files
#
# Uses ../shared/bench/gen_layers.py to write the layer (deterministic), under
# $DATA (default /tmp/layerfs-measure). Prints a Markdown table.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
files=${1:-100000}
DATA=${DATA:-/tmp/layerfs-measure}
gen=${GEN:-$here/../shared/bench/gen_layers.py}
bin=$here/target/release/layerfs
cargo build --release --quiet --manifest-path "$here/Cargo.toml"

layer=$DATA/$files/layers/small.tar
if [ ! -f "$layer" ]; then
  python3 "$gen" "$DATA/$files" --files "$files" --only small >&2
fi
[ -f "$layer.gz" ] || gzip -6 -n -c "$layer" > "$layer.gz"
[ -f "$layer.zst" ] || zstd -q -3 -c "$layer" > "$layer.zst"
probe=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["probe"])' "$DATA/$files/meta/small.json")
mnt=$DATA/mnt
mkdir -p "$mnt"

drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc; }

timed() { # timed CMD...: seconds, cold cache
  drop; local t0; t0=$(now); "$@" > /dev/null; secs "$t0" "$(now)"
}

mount_ready() { # mount_ready LAYER: prints "SECONDS RSS_KIB"
  drop
  local t0 t1 pid
  t0=$(now)
  "$bin" mount "$1" "$mnt"
  stat "$mnt/$probe" > /dev/null
  t1=$(now)
  pid=$(pgrep -f -n "layerfs mount .*$mnt\$")
  echo "$(secs "$t0" "$t1") $(awk '/VmHWM/ {print $2}' "/proc/$pid/status")"
  "$bin" umount "$mnt"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
}

x=$DATA/x
cat_s=$(timed cat "$layer")
gz_s=$(timed gzip -dc "$layer.gz")
zst_s=$(timed zstd -dc "$layer.zst")
rm -rf "$x"; mkdir -p "$x"
drop; t0=$(now); tar -xf "$layer" -C "$x"; tarx_s=$(secs "$t0" "$(now)"); rm -rf "$x"
read -r plain_s plain_kib < <(mount_ready "$layer")
read -r gzm_s gzm_kib < <(mount_ready "$layer.gz")
read -r zstm_s zstm_kib < <(mount_ready "$layer.zst")
entries=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["entries"])' "$DATA/$files/meta/small.json")
ratio() { echo "scale=2; $1 / $2" | bc; }

cat <<TABLE
layer: $files files ($entries entries), tar $(stat -c %s "$layer") B, gz $(stat -c %s "$layer.gz") B, zst $(stat -c %s "$layer.zst") B; $(date -u +%F)

| step (page cache dropped) | seconds | ratio |
|---|---|---|
| cat small.tar | $cat_s | |
| tar -xf small.tar | $tarx_s | |
| gzip -dc small.tar.gz | $gz_s | |
| zstd -dc small.tar.zst | $zst_s | |
| layerfs mount-ready, tar | $plain_s | $(ratio "$plain_s" "$cat_s")x cat, $(ratio "$plain_s" "$tarx_s")x tar -x |
| layerfs mount-ready, gzip | $gzm_s | $(ratio "$gzm_s" "$gz_s")x gzip -dc |
| layerfs mount-ready, zstd | $zstm_s | $(ratio "$zstm_s" "$zst_s")x zstd -dc |

daemon peak RSS (VmHWM): tar $((plain_kib / 1024)) MiB, gzip $((gzm_kib / 1024)) MiB, zstd $((zstm_kib / 1024)) MiB
TABLE
