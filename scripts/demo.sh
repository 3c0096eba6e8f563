#!/usr/bin/env bash
# Builds layerfs, writes the sample stack, mounts it, shows the merged tree,
# unmounts, and lists the tree with what each whiteout hid. Run from the
# repository root.
set -euo pipefail
cargo build --release --quiet
layerfs=${CARGO_TARGET_DIR:-target}/release/layerfs
dir=$(mktemp -d /tmp/layerfs-demo.XXXXXX)
mapfile -t layers < <(scripts/make-sample.sh "$dir")
mkdir -p "$dir/mnt"
# On any exit: unmount if still mounted (an error half-way), then clean up.
trap 'mountpoint -q "$dir/mnt" && "$layerfs" umount "$dir/mnt"; rm -rf "$dir"' EXIT
echo "+ layerfs mount ${layers[*]} $dir/mnt"
"$layerfs" mount "${layers[@]}" "$dir/mnt"
echo "+ ls -lR $dir/mnt"
ls -lR --time-style=+%F "$dir/mnt"
echo "+ cat $dir/mnt/etc/os-release $dir/mnt/srv/www/index.html $dir/mnt/opt/app/config.toml"
cat "$dir/mnt/etc/os-release" "$dir/mnt/srv/www/index.html" "$dir/mnt/opt/app/config.toml"
echo "+ layerfs umount $dir/mnt"
"$layerfs" umount "$dir/mnt"
echo "+ layerfs ls --all ${layers[*]}   # the merged tree, then what the merge hid"
"$layerfs" ls --all "${layers[@]}"
