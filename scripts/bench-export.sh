#!/usr/bin/env bash
# `layerfs export` throughput beside `cat` of the same layers and beside
# extracting them with `tar -x` then packing the tree with `tar -c`, all in
# one run, caches dropped before every command, on the shared harness' data
# sets (generated if missing, like scripts/bench.sh does).
#
#   scripts/bench-export.sh [ROUNDS]      # default 1 round; the median is printed
#
# Figures are MB/s of uncompressed tar produced (export, tar -c) or of layer
# bytes read (cat), the wall time, peak RSS, and each tool's time as a ratio
# to layerfs export. Needs root (drop_caches) and ~5 GB free under $DATA.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bench=${BENCH:-$here/../shared/bench}
export DATA=${DATA:-/tmp/layerfs-bench}
rounds=${1:-1}
layerfs=$here/target/release/layerfs
scratch=$DATA/scratch/export
cargo build --release --quiet --manifest-path "$here/Cargo.toml"
[ -f "$DATA/layers/small.tar" ] || "$bench/make-data.sh"

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# run NAME CMD: runs CMD with cold caches; sets SECS and RSS_KB
run() {
  local t0 t1
  drop_caches
  t0=$EPOCHREALTIME
  /usr/bin/time -f %M -o "$scratch/rss" bash -c "$2"
  t1=$EPOCHREALTIME
  SECS=$(awk -v a="${t0/,/.}" -v b="${t1/,/.}" 'BEGIN{printf "%.3f", b-a}')
  RSS_KB=$(tail -n1 "$scratch/rss")
}

median() { sort -g | awk '{v[n++]=$1} END{print (n%2)? v[(n-1)/2] : (v[n/2-1]+v[n/2])/2}'; }

# bench SET LAYER...: the three ways of producing SET's flat tar
bench() {
  local set=$1; shift
  local layers=("$@") quoted tar_bytes layer_bytes x
  quoted=$(printf '%q ' "${layers[@]}")
  layer_bytes=$(stat -c %s "${layers[@]}" | awk '{s+=$1} END{print s}')
  tar_bytes=$("$layerfs" export --no-cache "${layers[@]}" | wc -c)
  local -A secs=() rss=()
  for ((r = 0; r < rounds; r++)); do
    run cat "cat $quoted > /dev/null"
    secs[cat]+="$SECS "; rss[cat]=$RSS_KB
    run export "$layerfs export --no-cache $quoted > /dev/null"
    secs[export]+="$SECS "; rss[export]=$RSS_KB
    run export-file "$layerfs export --no-cache $quoted -o $scratch/flat.tar"
    secs[export-file]+="$SECS "; rss[export-file]=$RSS_KB
    rm -f "$scratch/flat.tar"
    rm -rf "$scratch/x"; mkdir -p "$scratch/x"
    # tar -x of each layer in order (whiteouts are not applied: this is the
    # cost of the bytes, which favours tar), then tar -c of the tree.
    run "tar -x, tar -c" "for l in $quoted; do tar -xf \"\$l\" -C $scratch/x; done && tar -cf - -C $scratch/x . > /dev/null"
    secs["tar -x, tar -c"]+="$SECS "; rss["tar -x, tar -c"]=$RSS_KB
    rm -rf "$scratch/x"
  done
  local base
  base=$(tr ' ' '\n' <<<"${secs[export]}" | grep . | median)
  for tool in cat export export-file "tar -x, tar -c"; do
    local s mbps bytes
    s=$(tr ' ' '\n' <<<"${secs[$tool]}" | grep . | median)
    bytes=$tar_bytes; [[ $tool == cat ]] && bytes=$layer_bytes
    mbps=$(awk -v b="$bytes" -v s="$s" 'BEGIN{printf "%.0f", b/1e6/s}')
    printf '| %s | %s | %s | %s | %s | %s |\n' "$set" "$tool" "$s" "$mbps" \
      "$((rss[$tool] / 1024))" "$(awk -v s="$s" -v b="$base" 'BEGIN{printf "%.2f", s/b}')"
  done
}

mkdir -p "$scratch"
echo "# layerfs export, $(date -u +%Y-%m-%d), $(nproc) cores, rounds=$rounds"
echo "# command: scripts/bench-export.sh $rounds"
echo
echo "| data set | tool | seconds | MB/s | peak RSS MiB | time / export |"
echo "|---|---|---|---|---|---|"
bench "small.tar (200k files, 1.79 GB)" "$DATA/layers/small.tar"
bench "small.tar.gz" "$DATA/layers/small.tar.gz"
bench "three (tar.gz + tar.zst + tar)" "$DATA/layers/three/l1.tar.gz" "$DATA/layers/three/l2.tar.zst" "$DATA/layers/three/l3.tar"
bench "big.tar (one 2 GiB file)" "$DATA/layers/big.tar"
bench "big.tar.gz" "$DATA/layers/big.tar.gz"
rm -rf "$scratch"
