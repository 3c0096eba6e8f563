//! Mount failures: every bad layer or mountpoint must give a non-zero exit,
//! exactly one stderr line `layerfs: ...` naming the offending file, and
//! leave nothing mounted.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::mount::{layerfs, mount_args, mount_count};
use common::{Codec, Layer, Layers, Mount};

/// Runs `layerfs mount LAYERS MOUNTPOINT`, expecting a failure that names
/// `offender` and none of `innocent`, and leaves the number of mounts at
/// the mountpoint as it was; returns the one stderr line.
fn expect_failure(
    layers: &[PathBuf],
    mountpoint: &Path,
    offender: &Path,
    innocent: &[PathBuf],
) -> String {
    let mounts_before = mount_count(mountpoint);
    // Cleans up whatever a buggy binary might leave mounted.
    let _guard = (mounts_before == 0).then(|| Mount::guard(mountpoint));
    let run = layerfs(mount_args(&[], layers, mountpoint));
    let context = format!("stderr was:\n{}", run.stderr);
    assert!(!run.status.success(), "mount succeeded; {context}");
    assert_eq!(
        mount_count(mountpoint),
        mounts_before,
        "mount count at {} changed; {context}",
        mountpoint.display()
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line; {context}");
    assert!(
        lines[0].starts_with("layerfs: "),
        "no `layerfs: ` prefix; {context}"
    );
    let named = offender.display().to_string();
    assert!(lines[0].contains(&named), "{named} not named; {context}");
    for other in innocent {
        let other = other.display().to_string();
        assert!(
            !lines[0].contains(&other),
            "blames innocent {other}; {context}"
        );
    }
    lines[0].to_string()
}

/// A valid layer stack of one file, for tests that break something else.
fn good_layer(stack: &mut Layers) -> PathBuf {
    stack.add(&Layer::default().file("ok", "ok"));
    stack.paths.last().unwrap().clone()
}

/// Expects mounting a single layer with exactly `bytes` to fail.
fn expect_bad_layer(bytes: &[u8]) {
    let mut stack = Layers::new();
    stack.add_bytes(bytes);
    let mount = Mount::fresh();
    expect_failure(&stack.paths, mount.path(), &stack.paths[0], &[]);
}

/// Expects mounting a single layer with exactly `bytes` to fail with
/// exactly the line `layerfs: LAYER{rest}`.
fn expect_error_line(bytes: &[u8], rest: &str) {
    let mut stack = Layers::new();
    stack.add_bytes(bytes);
    let mount = Mount::fresh();
    let line = expect_failure(&stack.paths, mount.path(), &stack.paths[0], &[]);
    assert_eq!(line, format!("layerfs: {}{rest}", stack.paths[0].display()));
}

fn sample_tar() -> Vec<u8> {
    Layer::default()
        .file("first", "1".repeat(3000))
        .file("second", "2".repeat(3000))
        .to_tar()
}

#[test]
fn layer_that_is_not_a_tar() {
    require!(Fuse);
    expect_bad_layer(&b"this is plain text, not a tar archive\n".repeat(40));
}

#[test]
fn xz_magic_then_garbage() {
    require!(Fuse);
    let mut bytes = vec![0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];
    bytes.extend(std::iter::repeat_n(0x11, 2000));
    expect_bad_layer(&bytes);
}

#[test]
fn bzip2_magic_then_garbage() {
    require!(Fuse);
    let mut bytes = b"BZh91AY&SY".to_vec();
    bytes.extend(std::iter::repeat_n(0x22, 2000));
    expect_bad_layer(&bytes);
}

#[test]
fn lz4_magic_then_garbage() {
    require!(Fuse);
    let mut bytes = vec![0x04, 0x22, 0x4d, 0x18, 0x64, 0x40];
    bytes.extend(std::iter::repeat_n(0x33, 2000));
    expect_bad_layer(&bytes);
}

#[test]
fn lzma_layer_is_unsupported() {
    require!(Fuse);
    let mut bytes = vec![0x5d, 0x00, 0x00, 0x80, 0x00];
    bytes.extend(std::iter::repeat_n(0x44, 2000));
    expect_bad_layer(&bytes);
}

#[test]
fn bzip2_xz_and_lz4_streams_truncated() {
    require!(Fuse);
    for codec in [Codec::XzMultiBlock, Codec::Lz4, Codec::Bzip2] {
        let bytes = codec.encode(&sample_tar());
        expect_bad_layer(&bytes[..bytes.len() / 2]);
    }
}

#[test]
fn tar_truncated_inside_member_data() {
    require!(Fuse);
    let tar = sample_tar();
    expect_bad_layer(&tar[..512 + 1000]);
}

#[test]
fn tar_truncated_inside_a_header() {
    require!(Fuse);
    let tar = sample_tar();
    // first header + 3000 bytes padded to 3072, then half of the next header
    expect_bad_layer(&tar[..512 + 3072 + 200]);
}

#[test]
fn gzip_stream_truncated() {
    require!(Fuse);
    let gz = Codec::Gzip.encode(&sample_tar());
    expect_bad_layer(&gz[..gz.len() / 2]);
}

#[test]
fn zstd_stream_truncated() {
    require!(Fuse);
    let zst = Codec::Zstd.encode(&sample_tar());
    expect_bad_layer(&zst[..zst.len() / 2]);
}

#[test]
fn gzip_header_with_corrupt_deflate_data() {
    require!(Fuse);
    let mut gz = Codec::Gzip.encode(&sample_tar());
    for b in &mut gz[10..40] {
        *b ^= 0x5a;
    }
    expect_bad_layer(&gz);
}

/// Flips one byte of the name of the header at `offset` without fixing
/// the checksum.
fn corrupt_header_at(offset: usize) -> Vec<u8> {
    let mut tar = sample_tar();
    tar[offset] ^= 0x01;
    tar
}

#[test]
fn bad_checksum_in_first_header() {
    require!(Fuse);
    expect_bad_layer(&corrupt_header_at(0));
}

#[test]
fn bad_checksum_in_a_later_header() {
    require!(Fuse);
    expect_bad_layer(&corrupt_header_at(512 + 3072));
}

#[test]
fn missing_layer_file() {
    require!(Fuse);
    let mut stack = Layers::new();
    let good = good_layer(&mut stack);
    let missing = stack.dir().join("does-not-exist.tar");
    let mount = Mount::fresh();
    expect_failure(
        &[good.clone(), missing.clone()],
        mount.path(),
        &missing,
        &[good],
    );
}

/// A directory is a layer (tests/dir_layer.rs); a symlink to a directory
/// that is gone is neither, and is named.
#[test]
fn layer_that_is_a_dangling_symlink() {
    require!(Fuse);
    let mut stack = Layers::new();
    let good = good_layer(&mut stack);
    let link = stack.dir().join("a-directory");
    std::os::unix::fs::symlink(stack.dir().join("gone"), &link).unwrap();
    let mount = Mount::fresh();
    expect_failure(&[link.clone(), good.clone()], mount.path(), &link, &[good]);
}

#[test]
fn bad_middle_layer_is_the_one_named() {
    require!(Fuse);
    let mut stack = Layers::new();
    stack
        .add(&Layer::default().file("a", "a"))
        .add_bytes(b"garbage garbage garbage garbage")
        .add(&Layer::default().file("c", "c"));
    let [lower, bad, upper] = <[PathBuf; 3]>::try_from(stack.paths.clone()).unwrap();
    let mount = Mount::fresh();
    expect_failure(&stack.paths, mount.path(), &bad, &[lower, upper]);
}

#[test]
fn missing_mountpoint() {
    require!(Fuse);
    let mut stack = Layers::new();
    good_layer(&mut stack);
    let mountpoint = stack.dir().join("no-such-dir");
    expect_failure(&stack.paths, &mountpoint, &mountpoint, &stack.paths);
    assert!(
        !mountpoint.exists(),
        "layerfs created the missing mountpoint"
    );
}

#[test]
fn mountpoint_that_is_a_file() {
    require!(Fuse);
    let mut stack = Layers::new();
    good_layer(&mut stack);
    let mountpoint = stack.dir().join("plain-file");
    std::fs::write(&mountpoint, "not a dir").unwrap();
    expect_failure(&stack.paths, &mountpoint, &mountpoint, &stack.paths);
}

#[test]
fn mountpoint_already_mounted() {
    require!(Fuse);
    let mut stack = Layers::new();
    good_layer(&mut stack);
    let existing = stack.mount();
    expect_failure(&stack.paths, existing.path(), existing.path(), &stack.paths);
    assert_eq!(
        std::fs::read(existing.join("ok")).unwrap(),
        b"ok",
        "the existing mount stopped working"
    );
}

/// layerfs must find its own mount in /proc/self/mountinfo even where the
/// kernel escapes the mountpoint (space as `\040`, backslash as `\134`).
#[test]
fn escaped_mountpoint_already_mounted() {
    require!(Fuse);
    let mut stack = Layers::new();
    good_layer(&mut stack);
    let existing = Mount::fresh_named("with space\\and backslash");
    layerfs(mount_args(&[], &stack.paths, existing.path())).expect_success("first mount");
    expect_failure(&stack.paths, existing.path(), existing.path(), &stack.paths);
    layerfs([OsStr::new("umount"), existing.path().as_os_str()]).expect_success("umount");
    assert_eq!(mount_count(existing.path()), 0, "umount left the mount");
}

#[test]
fn umount_of_a_directory_that_is_not_mounted() {
    let dir = tempfile::tempdir().unwrap();
    let run = layerfs([OsStr::new("umount"), dir.path().as_os_str()]);
    assert!(
        !run.status.success(),
        "umount of a plain directory succeeded"
    );
    let named = dir.path().display().to_string();
    assert!(
        run.stderr.starts_with("layerfs: ") && run.stderr.contains(&named),
        "error should start with `layerfs: ` and name {named}: {}",
        run.stderr
    );
}

// Hostile input, class by class (issue 6): each is refused before anything
// is mounted with exactly one line naming the layer, the byte offset in the
// decompressed stream and the problem.

/// One tar member: a GNU header named `name` of type `typeflag` holding
/// `data`, with `edit` applied to the raw block before the checksum.
fn raw_member(name: &str, typeflag: u8, data: &[u8], edit: impl FnOnce(&mut [u8; 512])) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.set_path(name).expect("short name");
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    header.set_entry_type(tar::EntryType::new(typeflag));
    edit(header.as_mut_bytes());
    header.set_cksum();
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
    out
}

/// A base-256 numeric field of `len` bytes holding `value`.
fn base256(value: i128, len: usize) -> Vec<u8> {
    let mut field = value.to_be_bytes()[16 - len..].to_vec();
    field[0] = (field[0] & 0x7f) | 0x80;
    field
}

/// `first`, then a member whose header field at `range` holds `value`.
fn with_field(range: std::ops::Range<usize>, value: &[u8]) -> Vec<u8> {
    let mut tar = raw_member("first", b'0', b"", |_| {});
    tar.extend(raw_member("f", b'0', b"", |h| {
        h[range.clone()].copy_from_slice(value)
    }));
    tar.extend([0; 1024]);
    tar
}

#[test]
fn exact_errors_for_truncation_checksums_and_non_layers() {
    require!(Fuse);
    let tar = sample_tar();
    expect_error_line(
        &tar[..512 + 1000],
        " (layer 1): at byte 1512: archive is truncated",
    );
    expect_error_line(
        &tar[..512 + 3072 + 200],
        " (layer 1): at byte 3784: archive is truncated",
    );
    expect_error_line(
        &corrupt_header_at(512 + 3072),
        " (layer 1): at byte 3584: bad header checksum",
    );
    expect_error_line(
        &b"this is plain text, not a tar archive\n".repeat(40),
        " (layer 1): at byte 0: not a tar archive",
    );
}

#[test]
fn exact_errors_for_absurd_and_negative_numbers() {
    require!(Fuse);
    let cases: [(std::ops::Range<usize>, Vec<u8>, &str); 6] = [
        // 2^93 bytes, and -1 bytes.
        (124..136, base256(1 << 93, 12), "size"),
        (124..136, base256(-1, 12), "size"),
        (108..116, base256(-1, 8), "uid"),
        (116..124, base256(1 << 40, 8), "gid"),
        (136..148, base256(1 << 80, 12), "mtime"),
        (124..136, b"77777777777x".to_vec(), "size"),
    ];
    for (range, value, field) in cases {
        expect_error_line(
            &with_field(range, &value),
            &format!(" (layer 1): at byte 512: bad number in the {field} field"),
        );
    }
}

/// A negative base-256 mtime is a well-defined time before 1970.
#[test]
fn negative_mtime_is_a_time_before_the_epoch() {
    require!(Fuse);
    use std::os::unix::fs::MetadataExt;
    let mut stack = Layers::new();
    stack.add_bytes(&with_field(136..148, &base256(-100, 12)));
    let mount = stack.mount();
    let meta = std::fs::metadata(mount.join("f")).expect("stat f");
    assert_eq!(meta.mtime(), -100);
}

#[test]
fn exact_errors_for_bad_pax_records() {
    require!(Fuse);
    let pax = |records: &[u8]| {
        let mut tar = raw_member("first", b'0', b"", |_| {});
        tar.extend(raw_member("pax", b'x', records, |_| {}));
        tar.extend(raw_member("f", b'0', b"", |_| {}));
        tar.extend([0; 1024]);
        tar
    };
    expect_error_line(
        &pax(b"99 path=x\n"),
        " (layer 1): at byte 1024: bad pax header: record of 99 bytes runs past the header data",
    );
    expect_error_line(
        &pax(b"0 path=x\n"),
        " (layer 1): at byte 1024: bad pax header: record length is zero",
    );
    expect_error_line(
        &pax(b"32 size=99999999999999999999999\n"),
        " (layer 1): at byte 1024: bad pax header: bad size \"99999999999999999999999\"",
    );
    // Within u64, but past the 2^62 bytes any offset sum stays clear of
    // overflow with.
    expect_error_line(
        &pax(b"29 size=18446744073709551615\n"),
        " (layer 1): at byte 1024: bad pax header: bad size \"18446744073709551615\"",
    );
}

#[test]
fn exact_errors_for_oversized_and_endless_extension_headers() {
    require!(Fuse);
    // A GNU long name claiming 1 GiB: refused before any of it is read.
    let mut tar = raw_member("././@LongLink", b'L', b"", |h| {
        h[124..136].copy_from_slice(b"10000000000\0")
    });
    tar.extend([0; 1024]);
    expect_error_line(
        &tar,
        " (layer 1): at byte 0: limit exceeded: extension header of 1073741824 bytes (at most 1048576)",
    );
    // 10,000 long names in a row, each 1024 bytes with its data block.
    let long = raw_member("././@LongLink", b'L', b"name\0", |_| {});
    let mut tar = long.repeat(10_000);
    tar.extend(raw_member("f", b'0', b"", |_| {}));
    tar.extend([0; 1024]);
    expect_error_line(
        &tar,
        " (layer 1): at byte 65536: limit exceeded: more than 64 extension headers in a row",
    );
}

#[test]
fn exact_errors_for_absurd_sparse_maps() {
    require!(Fuse);
    // A PAX 1.0 map claiming more segments than any file has.
    let mut tar = raw_member(
        "pax",
        b'x',
        b"22 GNU.sparse.major=1\n22 GNU.sparse.minor=0\n25 GNU.sparse.realsize=1\n",
        |_| {},
    );
    let mut map = b"1048577\n".to_vec();
    map.resize(512, 0);
    tar.extend(raw_member("f", b'0', &map, |_| {}));
    tar.extend([0; 1024]);
    expect_error_line(
        &tar,
        " (layer 1): at byte 1543: limit exceeded: sparse map has 1048577 segments, more than 1048576",
    );
    // An old GNU sparse member whose extension blocks never end.
    let mut tar = raw_member("f", b'S', b"", |h| {
        h[386..398].copy_from_slice(b"00000000000\0");
        h[398..410].copy_from_slice(b"00000000001\0");
        h[482] = 1;
        h[483..495].copy_from_slice(b"00000000001\0");
    });
    let mut ext = [0u8; 512];
    ext[504] = 1;
    tar.extend(ext.repeat(50_000));
    expect_error_line(
        &tar,
        " (layer 1): at byte 25566208: limit exceeded: more than 49933 sparse extension blocks",
    );
}

#[test]
fn exact_errors_for_damaged_compressed_streams() {
    require!(Fuse);
    let tar = sample_tar();
    let gz = Codec::Gzip.encode(&tar);
    let mut bad_crc = gz.clone();
    let n = bad_crc.len();
    bad_crc[n - 8] ^= 1;
    expect_error_line(
        &bad_crc,
        ": at byte 8192 of the decompressed stream, after the archive's end: gzip member fails its CRC check",
    );
    expect_error_line(
        &gz[..gz.len() / 2],
        " (layer 1): at byte 135: read error: gzip stream is truncated",
    );
    let zst = Codec::Zstd.encode(&tar);
    let mut garbage = zst.clone();
    let middle = zst.len() / 2;
    garbage[middle..middle + 8].copy_from_slice(b"garbage!");
    // One zstd block holds the whole archive: the error is where it starts.
    expect_error_line(
        &garbage,
        " (layer 1): at byte 0: read error: Data corruption detected",
    );
    expect_error_line(
        &zst[..zst.len() / 2],
        " (layer 1): at byte 0: read error: compressed stream truncated inside a frame",
    );
}
