#!/usr/bin/env bash
# Writes a small three-layer sample stack into DIR (default ./sample):
#   base.tar.gz   a tiny root filesystem (gzip)
#   app.tar.zst   an application layer that deletes and replaces things (zstd)
#   patch.tar     a patch layer with an opaque directory (plain tar)
# and prints the layer paths, bottom first. Needs GNU tar, gzip and zstd.
set -euo pipefail
dir=${1:-sample}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$dir"

layer() { # layer NAME [SKIP...]: pack $work/NAME, less the directory members SKIP, on stdout
  local name=$1; shift
  (cd "$work/$name" && find . -mindepth 1 | LC_ALL=C sort | grep -vxF -f <(printf './%s\n' "$@" ''))  |
    tar --no-recursion --owner=0 --group=0 --numeric-owner --mtime=@1700000000 \
        --format=pax --pax-option=delete=atime,delete=ctime -C "$work/$name" -cf - -T -
}

# Layer 1: a small root filesystem.
mkdir -p "$work/base"/{etc,usr/bin,var/log,srv/www,tmp}
ln -s usr/bin "$work/base/bin"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$work/base/etc/passwd"
printf 'NAME="sample"\n' > "$work/base/etc/os-release"
printf '#!/bin/sh\necho hello from the base layer\n' > "$work/base/usr/bin/hello"
chmod 755 "$work/base/usr/bin/hello"
printf 'old log\n' > "$work/base/var/log/old.log"
printf '<h1>v1</h1>\n' > "$work/base/srv/www/index.html"
printf 'TODO: remove me\n' > "$work/base/srv/www/legacy.html"
ln "$work/base/etc/passwd" "$work/base/etc/passwd.hardlink"
chmod 1777 "$work/base/tmp"
layer base | gzip -n > "$dir/base.tar.gz"

# Layer 2: deletes a file and a directory, replaces a file, adds an app
# (installed through the base layer's bin -> usr/bin symlink: the layer has
# bin/app but no bin/ directory member).
mkdir -p "$work/app"/{var,srv/www,bin,opt/app}
: > "$work/app/var/.wh.log"
: > "$work/app/srv/www/.wh.legacy.html"
printf '<h1>v2</h1>\n' > "$work/app/srv/www/index.html"
printf '#!/bin/sh\necho app\n' > "$work/app/bin/app"
chmod 755 "$work/app/bin/app"
printf 'setting = 1\n' > "$work/app/opt/app/config.toml"
head -c 3145728 /dev/urandom > "$work/app/opt/app/data.bin"
layer app bin | zstd -q -3 > "$dir/app.tar.zst"

# Layer 3: makes /opt/app opaque (only the new config shows) and patches /etc.
mkdir -p "$work/patch"/{opt/app,etc}
: > "$work/patch/opt/app/.wh..wh..opq"
printf 'setting = 2\n' > "$work/patch/opt/app/config.toml"
printf 'NAME="sample"\nVERSION="2"\n' > "$work/patch/etc/os-release"
layer patch > "$dir/patch.tar"

printf '%s\n' "$dir/base.tar.gz" "$dir/app.tar.zst" "$dir/patch.tar"
