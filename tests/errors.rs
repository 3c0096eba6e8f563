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
/// the mountpoint as it was.
fn expect_failure(layers: &[PathBuf], mountpoint: &Path, offender: &Path, innocent: &[PathBuf]) {
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

fn sample_tar() -> Vec<u8> {
    Layer::default()
        .file("first", "1".repeat(3000))
        .file("second", "2".repeat(3000))
        .to_tar()
}

#[test]
fn layer_that_is_not_a_tar() {
    expect_bad_layer(&b"this is plain text, not a tar archive\n".repeat(40));
}

#[test]
fn xz_magic_then_garbage() {
    let mut bytes = vec![0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];
    bytes.extend(std::iter::repeat_n(0x11, 2000));
    expect_bad_layer(&bytes);
}

#[test]
fn bzip2_magic_then_garbage() {
    let mut bytes = b"BZh91AY&SY".to_vec();
    bytes.extend(std::iter::repeat_n(0x22, 2000));
    expect_bad_layer(&bytes);
}

#[test]
fn lz4_magic_then_garbage() {
    let mut bytes = vec![0x04, 0x22, 0x4d, 0x18, 0x64, 0x40];
    bytes.extend(std::iter::repeat_n(0x33, 2000));
    expect_bad_layer(&bytes);
}

#[test]
fn lzma_layer_is_unsupported() {
    let mut bytes = vec![0x5d, 0x00, 0x00, 0x80, 0x00];
    bytes.extend(std::iter::repeat_n(0x44, 2000));
    expect_bad_layer(&bytes);
}

#[test]
fn bzip2_xz_and_lz4_streams_truncated() {
    for codec in [Codec::XzMultiBlock, Codec::Lz4, Codec::Bzip2] {
        let bytes = codec.encode(&sample_tar());
        expect_bad_layer(&bytes[..bytes.len() / 2]);
    }
}

#[test]
fn tar_truncated_inside_member_data() {
    let tar = sample_tar();
    expect_bad_layer(&tar[..512 + 1000]);
}

#[test]
fn tar_truncated_inside_a_header() {
    let tar = sample_tar();
    // first header + 3000 bytes padded to 3072, then half of the next header
    expect_bad_layer(&tar[..512 + 3072 + 200]);
}

#[test]
fn gzip_stream_truncated() {
    let gz = Codec::Gzip.encode(&sample_tar());
    expect_bad_layer(&gz[..gz.len() / 2]);
}

#[test]
fn zstd_stream_truncated() {
    let zst = Codec::Zstd.encode(&sample_tar());
    expect_bad_layer(&zst[..zst.len() / 2]);
}

#[test]
fn gzip_header_with_corrupt_deflate_data() {
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
    expect_bad_layer(&corrupt_header_at(0));
}

#[test]
fn bad_checksum_in_a_later_header() {
    expect_bad_layer(&corrupt_header_at(512 + 3072));
}

#[test]
fn missing_layer_file() {
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

#[test]
fn layer_that_is_a_directory() {
    let mut stack = Layers::new();
    let good = good_layer(&mut stack);
    let dir = stack.dir().join("a-directory");
    std::fs::create_dir(&dir).unwrap();
    let mount = Mount::fresh();
    expect_failure(&[dir.clone(), good.clone()], mount.path(), &dir, &[good]);
}

#[test]
fn bad_middle_layer_is_the_one_named() {
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
    let mut stack = Layers::new();
    good_layer(&mut stack);
    let mountpoint = stack.dir().join("plain-file");
    std::fs::write(&mountpoint, "not a dir").unwrap();
    expect_failure(&stack.paths, &mountpoint, &mountpoint, &stack.paths);
}

#[test]
fn mountpoint_already_mounted() {
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
