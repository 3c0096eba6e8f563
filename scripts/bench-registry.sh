#!/usr/bin/env bash
# Lazy mounts from a registry, measured beside a full pull (issue 8).
#
# Builds a two-layer gzip image from this machine's /usr/bin and /usr/share
# (real files: 43k of them here), pushes it to Debian's docker-registry on
# loopback, then in one run measures, with the page cache dropped before
# each step:
#   - skopeo copy of the whole image to an OCI layout on disk, then umoci
#     unpack of it (what reading one file takes without layerfs);
#   - layerfs: the first mount (which streams each blob once to index it),
#     a remount with the stored index, then on that mount the first byte of
#     one file near the end of the big layer and of one in its middle,
#     `ls -lR`, and a read of every file;
#   - layerfs' own index in the registry (issue 19): `layerfs index push`,
#     then first mounts with an empty cache, with and without the pushed
#     index (--no-remote-index);
#   - tables of contents the image carries (issue 19): the same content
#     converted by the real producers, eStargz by `ctr-remote image convert
#     --estargz --oci` (against a private containerd, started here and
#     stopped at the end) and zstd:chunked by `skopeo copy
#     --dest-compress-format zstd:chunked`, each pushed under a tag of its
#     own and mounted by reference with an empty cache.
# Each first mount with an empty cache is measured to ready, then the first
# byte of those two files, then a read of every file.
# Bytes are those the registry's access log says it sent for blob GETs.
# The converted layouts are kept in the work directory, as the source is.
#
# Usage: scripts/bench-registry.sh [--work DIR] [--delay MS] [--toc-only] [--prepare]
#   --delay MS   adds MS of latency each way on loopback (tc netem), as a
#                registry across a network has; needs the sch_netem module.
#   --toc-only   measures only the first mounts with an empty cache (plain
#                first pass, pushed index, eStargz, zstd:chunked).
#   --prepare    only builds and converts the images (minutes of CPU), so
#                that a timed run finds them in the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=/tmp/layerfs-bench-registry
DELAY=0
TOC_ONLY=0
PREPARE=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --work) WORK=$2; shift 2 ;;
    --delay) DELAY=$2; shift 2 ;;
    --toc-only) TOC_ONLY=1; shift ;;
    --prepare) PREPARE=1; shift ;;
    *) echo "usage: $0 [--work DIR] [--delay MS] [--toc-only] [--prepare]" >&2; exit 2 ;;
  esac
done
for tool in docker-registry skopeo pigz python3 containerd ctr ctr-remote; do
  command -v "$tool" >/dev/null || {
    echo "$0: $tool is needed (apt-get install docker-registry skopeo pigz containerd stargz-snapshotter)" >&2
    exit 1
  }
done
cargo build --release -q
LAYERFS=${CARGO_TARGET_DIR:-$PWD/target}/release/layerfs
mkdir -p "$WORK"
MNT=$WORK/mnt
REG_PID='' CTD_PID='' CTD_DIR=''
cleanup() {
  mountpoint -q "$MNT" 2>/dev/null && "$LAYERFS" umount "$MNT" || true
  [[ -n $REG_PID ]] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null || true
  stop_containerd
  [[ $DELAY != 0 ]] && tc qdisc del dev lo root 2>/dev/null || true
}
# A private containerd (own root, state, socket; CRI off) for ctr-remote's
# conversion; its directory is under /tmp as the socket path must stay
# under 108 bytes.
start_containerd() {
  CTD_DIR=$(mktemp -d /tmp/layerfs-bre.XXXXXX)
  cat > "$CTD_DIR/config.toml" <<EOF
version = 2
root = "$CTD_DIR/root"
state = "$CTD_DIR/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$CTD_DIR/containerd.sock"
[ttrpc]
  address = "$CTD_DIR/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$CTD_DIR/opt"
EOF
  containerd --config "$CTD_DIR/config.toml" > "$CTD_DIR/containerd.log" 2>&1 &
  CTD_PID=$!
  for _ in $(seq 300); do ctr_ ctr version >/dev/null 2>&1 && return; sleep 0.1; done
  echo "$0: containerd did not come up; see $CTD_DIR/containerd.log" >&2
  exit 1
}
# `ctr_ TOOL ARGS...`: ctr or ctr-remote against that containerd.
ctr_() { local tool=$1; shift; "$tool" --address "$CTD_DIR/containerd.sock" --namespace bench "$@"; }
stop_containerd() {
  if [[ -n $CTD_PID ]]; then
    kill "$CTD_PID" 2>/dev/null || true
    wait "$CTD_PID" 2>/dev/null || true
    CTD_PID=
  fi
  if [[ -n $CTD_DIR ]]; then
    awk -v dir="$CTD_DIR" 'index($5, dir) == 1 { print $5 }' /proc/self/mountinfo |
      sort -r | while read -r m; do umount -l "$m"; done
    rm -rf "$CTD_DIR"
    CTD_DIR=
  fi
}
trap cleanup EXIT

# --- the image -------------------------------------------------------------
LAYOUT=$WORK/layout
if [[ ! -f $LAYOUT/index.json ]]; then
  echo "building the image from /usr/bin and /usr/share ..." >&2
  rm -rf "$LAYOUT" && mkdir -p "$LAYOUT/blobs/sha256"
  for part in bin share; do
    tar -C / --sort=name -cf - "usr/$part" 2>/dev/null | pigz -6 > "$WORK/$part.tar.gz"
  done
  python3 - "$LAYOUT" "$WORK/bin.tar.gz" "$WORK/share.tar.gz" <<'EOF'
import gzip, hashlib, json, os, shutil, sys
layout, layers = sys.argv[1], sys.argv[2:]
def blob(data=None, path=None):
    if path:
        h = hashlib.sha256()
        with open(path, 'rb') as f:
            for b in iter(lambda: f.read(1 << 20), b''):
                h.update(b)
        digest, size = h.hexdigest(), os.path.getsize(path)
        shutil.move(path, f"{layout}/blobs/sha256/{digest}")
    else:
        digest, size = hashlib.sha256(data).hexdigest(), len(data)
        open(f"{layout}/blobs/sha256/{digest}", 'wb').write(data)
    return {"digest": f"sha256:{digest}", "size": size}
def diff_id(path):
    h = hashlib.sha256()
    with gzip.open(path, 'rb') as f:
        for b in iter(lambda: f.read(1 << 20), b''):
            h.update(b)
    return f"sha256:{h.hexdigest()}"
diff_ids = [diff_id(p) for p in layers]
descs = [dict(mediaType="application/vnd.oci.image.layer.v1.tar+gzip", **blob(path=p)) for p in layers]
config = json.dumps({"architecture": "amd64", "os": "linux",
    "rootfs": {"type": "layers", "diff_ids": diff_ids}, "config": {}}).encode()
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": dict(mediaType="application/vnd.oci.image.config.v1+json", **blob(config)),
    "layers": descs}).encode()
index = {"schemaVersion": 2, "manifests": [dict(mediaType="application/vnd.oci.image.manifest.v1+json",
    annotations={"org.opencontainers.image.ref.name": "bench"}, **blob(manifest))]}
json.dump(index, open(f"{layout}/index.json", "w"))
json.dump({"imageLayoutVersion": "1.0.0"}, open(f"{layout}/oci-layout", "w"))
EOF
fi

# The same content as eStargz (ctr-remote, against the private containerd)
# and as zstd:chunked (skopeo). GNU tar pads each source layer to a 10 KiB
# record, so skopeo 1.9's zstd:chunked writer, which hangs on a tar that
# ends at its end-of-archive marker, is not in danger here.
ESTARGZ=$WORK/estargz
if [[ ! -f $ESTARGZ/index.json ]]; then
  echo "converting to eStargz (ctr-remote image convert --estargz --oci) ..." >&2
  start_containerd
  tar -C "$LAYOUT" -cf - . | ctr_ ctr images import --no-unpack --base-name bench.test/bench - >/dev/null
  ctr_ ctr-remote images convert --oci --estargz bench.test/bench:bench bench.test/bench:estargz >/dev/null
  rm -rf "$ESTARGZ" "$WORK/estargz.tar" && mkdir -p "$ESTARGZ"
  ctr_ ctr images export "$WORK/estargz.tar" bench.test/bench:estargz
  tar -C "$ESTARGZ" -xf "$WORK/estargz.tar"
  rm -f "$WORK/estargz.tar"
  stop_containerd
fi
ZSTD_CHUNKED=$WORK/zstd-chunked
if [[ ! -f $ZSTD_CHUNKED/index.json ]]; then
  echo "converting to zstd:chunked (skopeo copy --dest-compress-format zstd:chunked) ..." >&2
  rm -rf "$ZSTD_CHUNKED"
  skopeo copy -q --dest-compress-format zstd:chunked --dest-compress \
    "oci:$LAYOUT:bench" "oci:$ZSTD_CHUNKED:zstd-chunked"
fi
# Two files of the big layer: the last in name order (deep in a plain blob,
# but in the tail a TOC is read from), and the middle one.
mapfile -t SHARE < <(find /usr/share -type f | LC_ALL=C sort)
LAST=${SHARE[-1]#/}
MID=${SHARE[${#SHARE[@]} / 2]#/}
unset SHARE
if [[ $PREPARE == 1 ]]; then
  echo "images ready in $WORK" >&2
  exit 0
fi

# --- the registry ----------------------------------------------------------
# shellcheck source=lib/registry.sh
source "$(dirname "$0")/lib/registry.sh"
start_registry "$WORK/registry"
skopeo copy -q --dest-tls-verify=false "oci:$LAYOUT:bench" "docker://127.0.0.1:$PORT/bench:1"
skopeo copy -q --dest-tls-verify=false "oci:$ESTARGZ:estargz" "docker://127.0.0.1:$PORT/bench:estargz"
skopeo copy -q --dest-tls-verify=false "oci:$ZSTD_CHUNKED:zstd-chunked" "docker://127.0.0.1:$PORT/bench:zstd-chunked"
REF=127.0.0.1:$PORT/bench:1
if [[ $DELAY != 0 ]]; then
  tc qdisc add dev lo root netem delay "${DELAY}ms"
fi

drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
row() { printf '%-42s %10s s %14s bytes%s\n' "$1" "$2" "$3" "${4:+ ($4)}"; }
elapsed() { python3 -c "print(f'{$2 - $1:.3f}')"; }
percent() { python3 -c "print(f'{100 * $1 / $2:.2f}% of blobs')"; }
# Layer blob bytes of the image tagged $2 in the layout $1.
blob_total() {
  python3 - "$1" "$2" <<'EOF'
import json, sys
layout, tag = sys.argv[1:]
blob = lambda d: json.load(open(f"{layout}/blobs/sha256/{d.split(':')[1]}"))
manifests = json.load(open(f"{layout}/index.json"))["manifests"]
tagged = [m for m in manifests
          if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
manifest = blob((tagged or manifests)[0]["digest"])
print(sum(layer["size"] for layer in manifest["layers"]))
EOF
}
BLOBS=$(blob_total "$LAYOUT" bench)
blob_bytes >/dev/null

# The first byte of the last file, then of the middle one, on the mount.
first_byte() {
  local t0 t1
  t0=$(now); head -c1 "$MNT/$LAST" >/dev/null; t1=$(now)
  row "  first byte of one file" "$(elapsed "$t0" "$t1")" "$(blob_bytes)"
  t0=$(now); head -c1 "$MNT/$MID" >/dev/null; t1=$(now)
  row "  first byte of the middle file" "$(elapsed "$t0" "$t1")" "$(blob_bytes)"
}
read_every_file() {
  local t0 t1
  t0=$(now); find "$MNT" -type f -print0 | xargs -0 cat >/dev/null; t1=$(now)
  row "  read every file" "$(elapsed "$t0" "$t1")" "$(blob_bytes)"
}
# `first_mount LABEL REF BLOBS [FLAGS...]`: mounts REF with an empty cache
# (and FLAGS), then measures the first byte of the one file and a read of
# every file; the bytes before ready are also shown as a share of BLOBS.
first_mount() {
  local label=$1 ref=$2 blobs=$3 empty=$WORK/cache-empty t0 t1 bytes
  shift 3
  rm -rf "$empty"
  drop
  blob_bytes >/dev/null
  t0=$(now); "$LAYERFS" mount -q --cache-dir "$empty" "$@" "$ref" "$MNT"; t1=$(now)
  bytes=$(blob_bytes)
  row "$label" "$(elapsed "$t0" "$t1")" "$bytes" "$(percent "$bytes" "$blobs")"
  first_byte
  read_every_file
  "$LAYERFS" umount "$MNT"
  rm -rf "$empty"
}

echo "image: 2 gzip layers, $BLOBS bytes of blobs; registry on loopback, delay ${DELAY} ms"
echo "one file: /$LAST; the middle file: /$MID"
printf '%-42s %12s %20s\n' step time "blob bytes fetched"

CACHE=$WORK/cache; rm -rf "$CACHE"; mkdir -p "$MNT"
if [[ $TOC_ONLY == 0 ]]; then
  drop; rm -rf "$WORK/pulled"
  t0=$(now); skopeo copy -q --src-tls-verify=false "docker://$REF" "oci:$WORK/pulled:1"; t1=$(now)
  row "skopeo copy (whole image to disk)" "$(elapsed "$t0" "$t1")" "$(blob_bytes)"
  if command -v umoci >/dev/null; then
    rm -rf "$WORK/bundle"; drop
    t0=$(now); umoci unpack --image "$WORK/pulled:1" "$WORK/bundle" >/dev/null 2>&1; t1=$(now)
    row "  then umoci unpack (to read a file)" "$(elapsed "$t0" "$t1")" 0
    rm -rf "$WORK/bundle"
  fi

  drop
  t0=$(now); "$LAYERFS" mount -q --cache-dir "$CACHE" "$REF" "$MNT"; t1=$(now)
  row "layerfs first mount (indexes)" "$(elapsed "$t0" "$t1")" "$(blob_bytes)"
  "$LAYERFS" umount "$MNT"
  rm -rf "$CACHE/chunks"

  drop
  t0=$(now); "$LAYERFS" mount -q --cache-dir "$CACHE" "$REF" "$MNT"; t1=$(now)
  row "layerfs mount, stored index" "$(elapsed "$t0" "$t1")" "$(blob_bytes)"
  first_byte
  t0=$(now); cat "$MNT/$LAST" >/dev/null; t1=$(now)
  row "  rest of that file" "$(elapsed "$t0" "$t1")" "$(blob_bytes)"
  t0=$(now); ls -lR "$MNT" >/dev/null; t1=$(now)
  row "  ls -lR" "$(elapsed "$t0" "$t1")" "$(blob_bytes)"
  read_every_file
  "$LAYERFS" umount "$MNT"
else
  # The index to push is built by a first pass of its own.
  "$LAYERFS" ls -q --cache-dir "$CACHE" --no-remote-index "$REF" >/dev/null
  blob_bytes >/dev/null
fi

# --- layerfs' own index in the registry --------------------------------------
# Bytes here are blob GETs, the index artifact's blobs included.
t0=$(now); "$LAYERFS" index push -q --cache-dir "$CACHE" "$REF" 2>/dev/null; t1=$(now)
row "layerfs index push (from the stored index)" "$(elapsed "$t0" "$t1")" "$(blob_bytes)"
first_mount "first mount, empty cache, no-remote-index" "$REF" "$BLOBS" --no-remote-index
first_mount "first mount, empty cache, remote-index" "$REF" "$BLOBS"

# --- tables of contents the image carries ------------------------------------
first_mount "first mount, empty cache, eStargz" "${REF%:1}:estargz" "$(blob_total "$ESTARGZ" estargz)"
first_mount "first mount, empty cache, zstd:chunked" "${REF%:1}:zstd-chunked" \
  "$(blob_total "$ZSTD_CHUNKED" zstd-chunked)"
