#!/usr/bin/env bash
# Container start from a registry: containerd's overlayfs snapshotter
# against the layerfs snapshotter (issue 18), same image, same run.
#
# Builds with umoci a three-layer gzip image: Debian's static busybox
# (busybox-static), then this machine's /usr/share/locale and
# /usr/share/man, then /usr/lib/python3.11 (about 300 MB of real files),
# pushes it to Debian's docker-registry on loopback, starts a private
# containerd (own root, state, socket; CRI off; layerfs as the proxy plugin
# `layerfs`), and measures, with the page cache dropped before each:
#   - overlayfs: `ctr image pull` + `ctr run`;
#   - layerfs without a stored index: `ctr-remote image rpull --snapshotter
#     layerfs` + `ctr run --snapshotter layerfs`, empty cache;
#   - layerfs with the index stored beforehand (`layerfs ls` of the
#     reference with the snapshotter's --cache-dir; its own cost shown on a
#     row of its own), then the same pull and run.
# Time is from the start of the pull to the container's first output line;
# the container then hashes busybox and one file of each data layer (the
# last in name order, deep in its blob). Bytes are those the registry's
# access log says it sent for blob GETs, pull and run together.
#
# The layerfs rows need target/release/layerfs ($CARGO_TARGET_DIR/release/
# layerfs if that is set) with the `snapshotter` command (`cargo build
# --release`); without it they are skipped.
#
# Usage: scripts/bench-snapshotter.sh [--work DIR] [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=/tmp/layerfs-bench-snapshotter
RUNS=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --work) WORK=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    *) echo "usage: $0 [--work DIR] [--runs N]" >&2; exit 2 ;;
  esac
done
for tool in docker-registry skopeo umoci containerd ctr ctr-remote runc curl python3; do
  command -v "$tool" >/dev/null || {
    echo "$0: $tool is needed (apt-get install docker-registry skopeo umoci containerd runc stargz-snapshotter busybox-static curl)" >&2
    exit 1
  }
done
[[ -x /bin/busybox ]] || { echo "$0: /bin/busybox is needed (apt-get install busybox-static)" >&2; exit 1; }
LAYERFS=${CARGO_TARGET_DIR:-$PWD/target}/release/layerfs
HAVE_LAYERFS=0
if [[ -x $LAYERFS ]] && "$LAYERFS" snapshotter --help >/dev/null 2>&1; then
  HAVE_LAYERFS=1
fi

mkdir -p "$WORK"
# containerd's socket path must stay under 108 bytes.
RUN=$(mktemp -d /tmp/layerfs-bsn.XXXXXX)
ADDR=$RUN/containerd.sock
SOCK=$RUN/layerfs.sock
NS=bench
CTD_PID= REG_PID= SNAP_PID=
ctr_() { ctr --address "$ADDR" --namespace "$NS" "$@"; }
stop_snapshotter() {
  if [[ -n $SNAP_PID ]]; then
    kill "$SNAP_PID" 2>/dev/null || true
    wait "$SNAP_PID" 2>/dev/null || true
    SNAP_PID=
  fi
}
# Detaches every mount below $1, deepest first (lazily, so a busy mount
# cannot stop the cleanup).
unmount_below() {
  awk -v dir="$1" 'index($5, dir) == 1 { print $5 }' /proc/self/mountinfo |
    sort -r | while read -r m; do umount -l "$m"; done
}
fresh_snapshotter_dir() {
  unmount_below "$WORK/snapshotter"
  rm -rf "$WORK/snapshotter" && mkdir -p "$WORK/snapshotter"
}
cleanup() {
  set +e
  if [[ -n $CTD_PID ]]; then
    for t in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$t"; done
    sleep 1
    for t in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$t"; done
    for c in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$c"; done
    for i in $(ctr_ images ls -q 2>/dev/null); do ctr_ images rm --sync "$i" >/dev/null; done
    kill "$CTD_PID"; wait "$CTD_PID"
  fi
  stop_snapshotter
  [[ -n $REG_PID ]] && kill "$REG_PID" && wait "$REG_PID"
  unmount_below "$RUN"
  unmount_below "$WORK/snapshotter"
  rm -rf "$RUN" "$WORK/snapshotter" /run/containerd/runc/"$NS"
  rmdir /sys/fs/cgroup/*/"$NS" /sys/fs/cgroup/"$NS" 2>/dev/null
  return 0
}
trap cleanup EXIT

# --- the image -------------------------------------------------------------
LAYOUT=$WORK/layout
DATA=(usr/share/locale usr/share/man usr/lib/python3.11)
if [[ ! -f $LAYOUT/index.json ]]; then
  echo "building the image (busybox, ${DATA[*]}) ..." >&2
  rm -rf "$LAYOUT" "$WORK/base" "$WORK/stage"
  umoci init --layout "$LAYOUT"
  umoci new --image "$LAYOUT:bench"
  mkdir -p "$WORK/base/bin" "$WORK/base/etc" "$WORK/base/tmp" "$WORK/base/proc" "$WORK/base/sys" "$WORK/base/dev"
  cp /bin/busybox "$WORK/base/bin/"
  for applet in sh sha256sum cat ls echo; do ln -s busybox "$WORK/base/bin/$applet"; done
  umoci insert --image "$LAYOUT:bench" "$WORK/base" /
  # Two data layers: locale and man together, python alone.
  mkdir -p "$WORK/stage/usr/share"
  cp -a "/${DATA[0]}" "/${DATA[1]}" "$WORK/stage/usr/share/"
  umoci insert --image "$LAYOUT:bench" "$WORK/stage" /
  umoci insert --image "$LAYOUT:bench" "/${DATA[2]}" "/${DATA[2]}"
  umoci config --image "$LAYOUT:bench" --config.env PATH=/bin
  rm -rf "$WORK/base" "$WORK/stage"
fi
# The last regular file of each data directory, in name order.
READ=(/bin/busybox)
for d in "${DATA[@]}"; do
  READ+=("$(find "/$d" -type f | LC_ALL=C sort | tail -1)")
done
SCRIPT="echo started; sha256sum ${READ[*]} > /dev/null && echo read"

# --- the registry ----------------------------------------------------------
# shellcheck source=lib/registry.sh
source "$(dirname "$0")/lib/registry.sh"
start_registry "$RUN/registry"
skopeo copy -q --dest-tls-verify=false "oci:$LAYOUT:bench" "docker://127.0.0.1:$PORT/bench:1"
REF=127.0.0.1:$PORT/bench:1

# --- containerd ------------------------------------------------------------
cat > "$RUN/config.toml" <<EOF
version = 2
root = "$RUN/root"
state = "$RUN/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$ADDR"
[ttrpc]
  address = "$ADDR.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$RUN/opt"
[proxy_plugins.layerfs]
  type = "snapshot"
  address = "$SOCK"
EOF
containerd --config "$RUN/config.toml" > "$RUN/containerd.log" 2>&1 &
CTD_PID=$!
for _ in $(seq 300); do ctr_ version >/dev/null 2>&1 && break; sleep 0.1; done

drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.3f}')"; }
row() { printf '%-46s %10s s %14s bytes\n' "$1" "$2" "$3"; }
BLOBS=$(python3 - "$LAYOUT" <<'EOF'
import json, sys
layout = sys.argv[1]
blob = lambda d: json.load(open(f"{layout}/blobs/sha256/{d.split(':')[1]}"))
index = json.load(open(f"{layout}/index.json"))
manifest = blob([m for m in index["manifests"]
                 if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "bench"][0]["digest"])
print(manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"]))
EOF
)

start_snapshotter() {
  rm -f "$SOCK"
  "$LAYERFS" snapshotter --address "$SOCK" --root "$WORK/snapshotter/root" \
    --cache-dir "$WORK/snapshotter/cache" --log-file "$WORK/snapshotter/log" &
  SNAP_PID=$!
  for _ in $(seq 300); do [[ -S $SOCK ]] && break; sleep 0.1; done
  # containerd redials a socket that went away with a backoff of up to 3 s;
  # requests fail meanwhile: wait until it answers through the snapshotter.
  for _ in $(seq 100); do
    ctr --address "$ADDR" --namespace "$NS" snapshots --snapshotter layerfs ls >/dev/null 2>&1 && break
    sleep 0.1
  done
}

# Pulls with `$1` (a pull command) and runs the container (`$2`: extra
# `ctr run` options); prints a row: seconds from the start of the pull to
# the container's first line, and the blob bytes fetched for both.
measure() {
  local label=$1 pull=$2 run_opts=$3 t0 first
  drop
  blob_bytes >/dev/null
  t0=$(now)
  # shellcheck disable=SC2086 # the pull and run options are word lists
  $pull "$REF" >/dev/null
  # shellcheck disable=SC2086
  ctr_ run --rm $run_opts "$REF" bench sh -c "$SCRIPT" |
    { IFS= read -r _; now > "$RUN/first"; cat > "$RUN/rest"; }
  first=$(cat "$RUN/first")
  grep -qx read "$RUN/rest" || { echo "$label: the container did not read its files" >&2; exit 1; }
  row "$label" "$(elapsed "$t0" "$first")" "$(blob_bytes)"
  ctr_ images rm --sync "$REF" >/dev/null
}

echo "image: busybox + ${DATA[*]} in 3 gzip layers, $BLOBS bytes of blobs; registry on loopback"
echo "container reads: ${READ[*]}"
printf '%-46s %12s %20s\n' step "to 1st line" "blob bytes fetched"
for run in $(seq "$RUNS"); do
  [[ $RUNS -gt 1 ]] && echo "run $run"
  measure "overlayfs: ctr image pull + ctr run" "ctr_ image pull --plain-http" ""
  if [[ $HAVE_LAYERFS == 1 ]]; then
    fresh_snapshotter_dir
    start_snapshotter
    measure "layerfs, no stored index: rpull + run" \
      "ctr-remote --address $ADDR --namespace $NS image rpull --plain-http --snapshotter layerfs" \
      "--snapshotter layerfs"
    stop_snapshotter

    fresh_snapshotter_dir
    drop
    blob_bytes >/dev/null
    t0=$(now)
    "$LAYERFS" ls -q --cache-dir "$WORK/snapshotter/cache" "$REF" >/dev/null
    row "  (storing the index: layerfs ls)" "$(elapsed "$t0" "$(now)")" "$(blob_bytes)"
    rm -rf "$WORK/snapshotter/cache/chunks"
    start_snapshotter
    measure "layerfs, stored index: rpull + run" \
      "ctr-remote --address $ADDR --namespace $NS image rpull --plain-http --snapshotter layerfs" \
      "--snapshotter layerfs"
    stop_snapshotter
  else
    echo "(layerfs rows skipped: $LAYERFS has no snapshotter command; cargo build --release)"
  fi
done
