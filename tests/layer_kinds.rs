//! Layer encodings, recognised by magic bytes alone: plain tar, gzip
//! (including multi-member streams), zstd (including a leading skippable
//! frame as pzstd writes), bzip2, xz and lz4 (each as one piece and as
//! several independently decodable ones), output of the real CLI
//! compressors, and tall stacks.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::layer::pseudo_random;
use common::{assert_tree, Codec, Expected, Layer, Layers, Mount};

/// Two layers exercising content, metadata and a whiteout, big enough
/// (~300 KiB) that multi-frame/multi-member splits land mid-member.
fn sample_stack() -> (Vec<Layer>, Expected) {
    let blob = pseudo_random(300_000, 42);
    let lower = Layer::default()
        .dir("etc")
        .file("etc/os-release", "ID=test\n")
        .file("blob", &blob)
        .mode(0o600)
        .owner(1, 2)
        .file("gone", "removed above")
        .symlink("lnk", "etc/os-release");
    let upper = Layer::default()
        .whiteout("gone")
        .file("etc/added", "upper")
        .mtime(1_700_000_000);
    let expected = Expected::new()
        .dir("etc")
        .file("etc/os-release", "ID=test\n")
        .file("etc/added", "upper")
        .mtime(1_700_000_000)
        .file("blob", &blob)
        .mode(0o600)
        .owner(1, 2)
        .symlink("lnk", "etc/os-release");
    (vec![lower, upper], expected)
}

/// Mounts the sample stack with every layer encoded by `codec`.
fn check_codec(codec: Codec) {
    let (layers, expected) = sample_stack();
    let mut stack = Layers::new();
    for layer in &layers {
        stack.add_encoded(layer, codec);
    }
    let mount = stack.mount();
    assert_tree(mount.path(), &expected);
}

#[test]
fn plain_tar_layers() {
    check_codec(Codec::Plain);
}

#[test]
fn gzip_layers() {
    check_codec(Codec::Gzip);
}

#[test]
fn gzip_multi_member_layers() {
    check_codec(Codec::GzipMultiMember);
}

#[test]
fn zstd_layers() {
    check_codec(Codec::Zstd);
}

#[test]
fn zstd_layers_with_leading_skippable_frame() {
    check_codec(Codec::ZstdSkippableFirst);
}

#[test]
fn bzip2_layers() {
    check_codec(Codec::Bzip2);
}

#[test]
fn bzip2_multi_stream_layers() {
    check_codec(Codec::Bzip2MultiStream);
}

#[test]
fn xz_layers() {
    check_codec(Codec::Xz);
}

#[test]
fn xz_multi_block_layers() {
    check_codec(Codec::XzMultiBlock);
}

#[test]
fn lz4_layers() {
    check_codec(Codec::Lz4);
}

#[test]
fn lz4_multi_frame_layers() {
    check_codec(Codec::Lz4MultiFrame);
}

#[test]
fn mixed_codecs_in_one_stack_and_misleading_file_names() {
    let (layers, expected) = sample_stack();
    let mut stack = Layers::new();
    // Names promise one codec, bytes hold another: only magic may count.
    let lower = common::layer::write_file(
        stack.dir(),
        "lower.tar.gz",
        &Codec::Zstd.encode(&layers[0].to_tar()),
    );
    let upper = common::layer::write_file(
        stack.dir(),
        "upper.tar.zst",
        &Codec::Gzip.encode(&layers[1].to_tar()),
    );
    stack.paths = vec![lower, upper];
    let mount = stack.mount();
    assert_tree(mount.path(), &expected);
}

/// Compresses `input` with a CLI tool writing to stdout.
fn compress_with(tool: &str, args: &[&str], input: &Path, output: &Path) -> PathBuf {
    let out = std::fs::File::create(output).unwrap();
    let status = Command::new(tool)
        .args(args)
        .arg(input)
        .stdout(out)
        .status()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(status.success(), "{tool} {args:?} failed");
    output.to_path_buf()
}

#[test]
fn layers_compressed_by_the_cli_compressors() {
    let (layers, expected) = sample_stack();
    let stack = Layers::new();
    let dir = stack.dir();
    let lower_tar = layers[0].write(dir, "lower.tar", Codec::Plain);
    let upper_tar = layers[1].write(dir, "upper.tar", Codec::Plain);
    // gzip -N records the file name and mtime in the gzip header (FNAME).
    // xz -T with a small block size writes several blocks and an index.
    let variants: [(&str, &[&str]); 7] = [
        ("gzip", &["-c", "-N", "-9"]),
        ("zstd", &["-c", "-q", "-19"]),
        ("pzstd", &["-c", "-q", "-p", "2"]),
        ("bzip2", &["-c", "-9"]),
        ("xz", &["-c", "-6"]),
        ("xz", &["-c", "-T2", "--block-size=65536"]),
        ("lz4", &["-c", "-q", "-9"]),
    ];
    for (n, (tool, args)) in variants.into_iter().enumerate() {
        let lower = compress_with(
            tool,
            args,
            &lower_tar,
            &dir.join(format!("{n}-{tool}-lower")),
        );
        let upper = compress_with(
            tool,
            args,
            &upper_tar,
            &dir.join(format!("{n}-{tool}-upper")),
        );
        let mount = Mount::new(&[lower, upper]);
        assert_tree(mount.path(), &expected);
    }
}

#[test]
fn hundred_layers_stacked() {
    const N: usize = 100;
    let mut stack = Layers::new();
    let mut expected = Expected::new().dir("added").dir("o");
    for i in 0..N {
        let mut layer = Layer::default()
            .dir("added")
            .dir("o")
            .file("top", format!("layer {i}"))
            .file(format!("added/{i:03}"), format!("{i}"))
            .file(format!("o/{i:03}"), format!("{i}"));
        if i % 2 == 1 {
            layer = layer.whiteout(format!("added/{:03}", i - 1));
            expected = expected.file(format!("added/{i:03}"), format!("{i}"));
        }
        if i % 10 == 0 {
            layer = layer.opaque("o");
        }
        if i >= 90 {
            expected = expected.file(format!("o/{i:03}"), format!("{i}"));
        }
        stack.add_encoded(&layer, Codec::ALL[i % Codec::ALL.len()]);
    }
    expected = expected.file("top", format!("layer {}", N - 1));
    let mount = stack.mount();
    assert_tree(mount.path(), &expected);
}

/// An empty layer (just the end-of-archive blocks, as Docker writes for
/// metadata-only steps) contributes nothing, in any encoding.
#[test]
fn empty_layers_contribute_nothing() {
    let (layers, expected) = sample_stack();
    let empty_tar = Layer::default().to_tar();
    let mut stack = Layers::new();
    stack.add(&layers[0]);
    for codec in Codec::ALL {
        stack.add_bytes(&codec.encode(&empty_tar));
    }
    stack.add(&layers[1]);
    let mount = stack.mount();
    assert_tree(mount.path(), &expected);
}
