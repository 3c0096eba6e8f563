#!/usr/bin/env bash
# Fuzzing layerfs with cargo-fuzz (libFuzzer), on stable Rust.
#
#   scripts/fuzz.sh build                 build every target (ASan)
#   scripts/fuzz.sh seed                  write seed corpora from GNU tar, bsdtar
#                                         and the compressors into fuzz/corpus/
#   scripts/fuzz.sh run SECONDS [TARGET...]   run each target (default: all)
#                                         for SECONDS, FUZZ_JOBS at a time
#   scripts/fuzz.sh report                the last run's execs, rate and
#                                         crashes per target
#
# Needs `cargo install cargo-fuzz`; its -Z flags work on stable rustc with
# RUSTC_BOOTSTRAP=1.
# Crashes land in fuzz/artifacts/TARGET/; fix them, then keep each as a
# regression test (tests/fuzz_regressions.rs reads tests/fuzz-regressions/).
# Environment: FUZZ_JOBS (parallel targets, default 1), FUZZ_NICE (default
# 15), FUZZ_SANITIZER (address or none, default address), CARGO_TARGET_DIR.
set -euo pipefail

SELF=$(realpath "$0")
cd "$(dirname "$SELF")/../fuzz"
export RUSTC_BOOTSTRAP=1
TARGETS=(tar_index layer_source merge tree_decode)
SANITIZER=${FUZZ_SANITIZER:-address}
NICE=${FUZZ_NICE:-15}
JOBS=${FUZZ_JOBS:-1}
LOGS=logs
# libFuzzer's input size bound per target: tars of a few members, and
# compressed layers whose header and first blocks matter.
# Stack::open indexes on scoped threads, which free their last bytes just
# after the scope has joined them: LeakSanitizer's per-input check reports
# that as a leak, so it is off for the merge target (ASan's other checks
# stay on).
leak_check() {
	case $1 in
	merge) echo 0 ;;
	*) echo 1 ;;
	esac
}

max_len() {
	case $1 in
	tree_decode) echo 4096 ;;
	*) echo 65536 ;;
	esac
}

build() {
	nice -n "$NICE" cargo fuzz build -s "$SANITIZER" --release --debug-assertions
}

# Seeds: real archives in every dialect the tools write, compressed by every
# codec; nothing here is committed (fuzz/.gitignore).
seed() {
	local work
	work=$(mktemp -d)
	trap 'rm -rf "$work"' RETURN
	mkdir -p corpus/{tar_index,layer_source,merge,tree_decode}
	local src=$work/src
	mkdir -p "$src/dir/sub" "$src/empty"
	printf 'hello\n' >"$src/dir/file"
	head -c 3000 /dev/urandom >"$src/dir/sub/blob"
	ln -s ../dir/file "$src/dir/sub/link"
	ln "$src/dir/file" "$src/dir/hard"
	local long
	long=$(printf 'n%.0s' {1..120})/$(printf 'm%.0s' {1..90})
	mkdir -p "$src/$(dirname "$long")"
	printf 'long\n' >"$src/$long"
	mkfifo "$src/fifo"
	mknod "$src/chr" c 1 3 2>/dev/null || true
	setfattr -n user.seed -v value "$src/dir/file" 2>/dev/null || true
	truncate -s 200000 "$src/sparse"
	printf 'data' | dd of="$src/sparse" bs=1 seek=70000 conv=notrunc status=none
	local base=(--owner=0 --group=0 --mtime=@1700000000 -C "$src" .)
	for format in v7 oldgnu gnu ustar posix; do
		tar --format=$format -cf "$work/$format.tar" "${base[@]}" 2>/dev/null || true
	done
	for version in 0.0 0.1 1.0; do
		tar --format=posix --sparse --sparse-version=$version \
			-cf "$work/sparse-$version.tar" "${base[@]}"
	done
	tar --format=gnu --sparse -cf "$work/sparse-old.tar" "${base[@]}"
	tar --format=posix --xattrs -cf "$work/xattrs.tar" "${base[@]}"
	bsdtar --format=pax -cf "$work/bsd-pax.tar" -C "$src" .
	bsdtar --format=ustar -cf "$work/bsd-ustar.tar" -C "$src" . 2>/dev/null || true
	# Layers for the merge: whiteouts, an opaque directory, a replaced kind.
	local l2=$work/l2 l3=$work/l3
	mkdir -p "$l2/dir/sub" "$l3/dir"
	: >"$l2/dir/.wh.file"
	: >"$l2/dir/sub/.wh..wh..opq"
	printf 'new\n' >"$l2/dir/sub/new"
	printf 'file now\n' >"$l2/empty"
	mkdir "$l3/dir/hard"
	: >"$l3/.wh.fifo"
	tar --format=posix -cf "$work/l2.tar" --owner=0 --group=0 -C "$l2" .
	tar --format=gnu -cf "$work/l3.tar" --owner=0 --group=0 -C "$l3" .
	for t in "$work"/*.tar; do
		local name
		name=$(basename "$t" .tar)
		cp "$t" "corpus/tar_index/$name"
		head -c 1536 "$t" >"corpus/tar_index/$name-head"
	done
	local plain=$work/posix.tar
	gzip -c "$plain" >"corpus/layer_source/gz"
	pigz -c -b 128 "$plain" >"corpus/layer_source/pigz"
	zstd -q -c "$plain" >"corpus/layer_source/zst"
	pzstd -q -c -p 2 "$plain" >"corpus/layer_source/pzst" 2>/dev/null || true
	bzip2 -c "$plain" >"corpus/layer_source/bz2"
	xz -c "$plain" >"corpus/layer_source/xz"
	xz -c -T2 --block-size=8192 "$plain" >"corpus/layer_source/xz-blocks"
	lz4 -q -c "$plain" >"corpus/layer_source/lz4"
	cp "$work/sparse-1.0.tar" corpus/layer_source/plain
	# The test suite's layer builder: every member kind and whiteout form
	# in each dialect and codec, stacks for the merge, stored trees and
	# seek indexes (tests/fuzz_regressions.rs).
	(cd .. && LAYERFS_FUZZ_SEEDS="$PWD/fuzz/corpus" nice -n "$NICE" \
		cargo test --release --test fuzz_regressions -- --ignored write_fuzz_seeds)
	for t in "${TARGETS[@]}"; do
		echo "corpus/$t: $(find "corpus/$t" -type f | wc -l) files"
	done
}

run_one() {
	local target=$1 seconds=$2
	mkdir -p "corpus/$target" "artifacts/$target" "$LOGS"
	nice -n "$NICE" cargo fuzz run -s "$SANITIZER" --release --debug-assertions \
		"$target" "corpus/$target" -- \
		-max_total_time="$seconds" -max_len="$(max_len "$target")" \
		-rss_limit_mb=2048 -timeout=30 -print_final_stats=1 \
		-detect_leaks="$(leak_check "$target")" \
		>"$LOGS/$target.log" 2>&1 || true
}

run() {
	local seconds=${1:?seconds per target}
	shift
	local targets=("$@")
	[ ${#targets[@]} -gt 0 ] || targets=("${TARGETS[@]}")
	build
	local running=0
	for t in "${targets[@]}"; do
		run_one "$t" "$seconds" &
		running=$((running + 1))
		if [ "$running" -ge "$JOBS" ]; then
			wait -n || true
			running=$((running - 1))
		fi
	done
	wait
	report "${targets[@]}"
}

report() {
	local targets=("$@")
	[ ${#targets[@]} -gt 0 ] || targets=("${TARGETS[@]}")
	printf '%-13s %8s %12s %8s %8s %8s\n' target seconds execs exec/s corpus crashes
	for t in "${targets[@]}"; do
		local log=$LOGS/$t.log
		[ -f "$log" ] || continue
		local execs secs crashes corpus
		execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
		secs=$(sed -n 's/^stat::.*//;s/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
		corpus=$(find "corpus/$t" -type f | wc -l)
		crashes=$(find "artifacts/$t" -type f | wc -l)
		printf '%-13s %8s %12s %8s %8s %8s\n' "$t" "${secs:-?}" "${execs:-?}" \
			"$(( ${execs:-0} / (${secs:-0} > 0 ? ${secs:-1} : 1) ))" "$corpus" "$crashes"
	done
}

case ${1:-} in
build) build ;;
seed) seed ;;
run) shift; run "$@" ;;
report) shift; report "$@" ;;
*) sed -n '2,17p' "$SELF" >&2; exit 2 ;;
esac
