#!/usr/bin/env bash
# Cross-checks layerfs against umoci, an independent OCI implementation.
#
# Builds a multi-layer OCI image with umoci (each layer made by modifying an
# unpacked rootfs and repacking: adds, deletes, kind changes, a directory
# whose whole content is replaced), unpacks the final image with umoci as the
# reference tree, then mounts the very same layer blobs with layerfs and
# compares the two trees.
#
# Usage: umoci-crosscheck.sh [--layers-only] WORKDIR
#   WORKDIR must not exist or be empty. Afterwards it holds:
#     image/            the OCI layout
#     expected/rootfs/  umoci's unpack of the final image
#     layers            the layer blob paths, bottom first, one per line
#   --layers-only  stop there (tests/umoci.rs compares the trees itself).
# Environment: LAYERFS  the layerfs binary (default: layerfs from PATH).
# Must run as root (umoci without --rootless; mknod, chown).
set -euo pipefail

layers_only=false
if [[ ${1:-} == --layers-only ]]; then
    layers_only=true
    shift
fi
if [[ $# -ne 1 ]]; then
    echo "usage: $0 [--layers-only] WORKDIR" >&2
    exit 2
fi
work=$1
layerfs=${LAYERFS:-layerfs}
tag=crosscheck

command -v umoci >/dev/null || {
    echo "umoci-crosscheck: umoci is not installed" >&2
    exit 1
}

mkdir -p "$work"
work=$(cd "$work" && pwd -P)
image=$work/image
bundle=$work/bundle

# Unpacks the current image into a fresh bundle; prints the rootfs path.
unpack() {
    rm -rf "$bundle"
    umoci unpack --image "$image:$tag" "$bundle" >/dev/null
    echo "$bundle/rootfs"
}

# Turns the changes made to the bundle's rootfs into a new layer.
commit() {
    umoci repack --image "$image:$tag" "$bundle" >/dev/null
}

umoci init --layout "$image" >/dev/null
umoci new --image "$image:$tag" >/dev/null

# Layer 1: a base system with every entry kind.
root=$(unpack)
(
    cd "$root"
    mkdir -p etc usr/bin usr/lib var/lib/app/data home/user dev \
        opt/dir-to-file/sub srv/content/nested dir-to-delete/deeper
    echo "base-host" >etc/hostname
    printf 'root:x:0:0::/root:/bin/sh\n' >etc/passwd
    printf '#!/bin/sh\necho tool\n' >usr/bin/tool
    chmod 4755 usr/bin/tool
    ln usr/bin/tool usr/bin/tool-alias
    head -c 200000 /dev/urandom >usr/lib/libbig.so
    ln -s usr/bin bin
    ln -s /usr/share/zoneinfo/UTC etc/localtime
    echo "db" >var/lib/app/data/db
    chown -R 1000:1000 var/lib/app
    chmod 600 var/lib/app/data/db
    echo "a" >opt/dir-to-file/a
    echo "b" >opt/dir-to-file/sub/b
    echo "will become a dir" >file-to-dir
    echo "doomed" >to-delete
    echo "x" >dir-to-delete/x
    echo "y" >dir-to-delete/deeper/y
    echo "one" >srv/content/one
    echo "two" >srv/content/nested/two
    mkfifo dev/fifo
    mknod dev/null c 1 3
    chmod 666 dev/null
    chmod 1777 home
)
commit

# Layer 2: deletions, kind changes, metadata and content changes.
root=$(unpack)
(
    cd "$root"
    rm to-delete
    rm -rf dir-to-delete
    rm -rf opt/dir-to-file
    echo "now a file" >opt/dir-to-file
    rm file-to-dir
    mkdir file-to-dir
    echo "inside" >file-to-dir/inside
    chmod 700 home/user
    chown 1001:1002 etc/hostname
    echo "user:x:1000:1000::/home/user:/bin/sh" >>etc/passwd
    echo "new" >etc/new.conf
    ln usr/bin/tool usr/bin/tool-layer2
)
commit

# Layer 3: a directory's whole content replaced, symlink games.
root=$(unpack)
(
    cd "$root"
    rm -rf srv/content/*
    mkdir srv/content/fresh
    echo "three" >srv/content/three
    echo "four" >srv/content/fresh/four
    echo "via symlinked dir" >bin/newtool
    rm etc/localtime
    mkdir etc/localtime
    ln -sfn usr/lib lib
)
commit

# Layer 4: deletion only.
root=$(unpack)
(
    cd "$root"
    rm -rf var
    rm bin
    rm usr/bin/tool-alias
)
commit

rm -rf "$work/expected"
umoci unpack --image "$image:$tag" "$work/expected" >/dev/null

# Layer digests in manifest order: index.json -> manifest -> layers.
index=$(cat "$image/index.json")
manifests=$(grep -o '"digest":"sha256:[0-9a-f]*"' <<<"$index" | cut -d: -f3 | tr -d '"')
if [[ $(wc -l <<<"$manifests") -ne 1 ]]; then
    echo "umoci-crosscheck: expected one manifest in index.json" >&2
    exit 1
fi
manifest=$(cat "$image/blobs/sha256/$manifests")
layer_part=${manifest#*\"layers\":}
grep -o '"digest":"sha256:[0-9a-f]*"' <<<"$layer_part" | cut -d: -f3 | tr -d '"' |
    sed "s|^|$image/blobs/sha256/|" >"$work/layers"
if [[ $(wc -l <"$work/layers") -lt 3 ]]; then
    echo "umoci-crosscheck: image has fewer than 3 layers" >&2
    exit 1
fi

if $layers_only; then
    exit 0
fi

# One line per entry: path, type, mode, owner, and for non-directories the
# size, link target and content hash.
listing() {
    (
        cd "$1"
        find . -mindepth 1 \( -type d -printf '%P d %m %U:%G\n' \) -o \
            \( -type f -printf '%P f %m %U:%G %s ' -exec sh -c 'sha256sum <"$1" | cut -d" " -f1' _ {} \; \) -o \
            -printf '%P %y %m %U:%G %s %l\n'
    ) | LC_ALL=C sort
}

mnt=$work/mnt
mkdir -p "$mnt"
cleanup() {
    if grep -q " $mnt " /proc/self/mountinfo; then
        "$layerfs" umount "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" 2>/dev/null || umount -l "$mnt"
    fi
}
trap cleanup EXIT
mapfile -t layer_paths <"$work/layers"
"$layerfs" mount "${layer_paths[@]}" "$mnt"

listing "$work/expected/rootfs" >"$work/expected.list"
listing "$mnt" >"$work/layerfs.list"
if ! diff -u "$work/expected.list" "$work/layerfs.list"; then
    echo "umoci-crosscheck: layerfs tree differs from umoci unpack (- umoci, + layerfs)" >&2
    exit 1
fi
echo "umoci-crosscheck: $(wc -l <"$work/expected.list") entries match across ${#layer_paths[@]} layers"
