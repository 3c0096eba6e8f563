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
    require!(Fuse);
    check_codec(Codec::Plain);
}

#[test]
fn gzip_layers() {
    require!(Fuse);
    check_codec(Codec::Gzip);
}

#[test]
fn gzip_multi_member_layers() {
    require!(Fuse);
    check_codec(Codec::GzipMultiMember);
}

#[test]
fn zstd_layers() {
    require!(Fuse);
    check_codec(Codec::Zstd);
}

#[test]
fn zstd_layers_with_leading_skippable_frame() {
    require!(Fuse);
    check_codec(Codec::ZstdSkippableFirst);
}

#[test]
fn bzip2_layers() {
    require!(Fuse);
    check_codec(Codec::Bzip2);
}

#[test]
fn bzip2_multi_stream_layers() {
    require!(Fuse);
    check_codec(Codec::Bzip2MultiStream);
}

#[test]
fn xz_layers() {
    require!(Fuse);
    check_codec(Codec::Xz);
}

#[test]
fn xz_multi_block_layers() {
    require!(Fuse);
    check_codec(Codec::XzMultiBlock);
}

#[test]
fn lz4_layers() {
    require!(Fuse);
    check_codec(Codec::Lz4);
}

#[test]
fn lz4_multi_frame_layers() {
    require!(Fuse);
    check_codec(Codec::Lz4MultiFrame);
}

#[test]
fn mixed_codecs_in_one_stack_and_misleading_file_names() {
    require!(Fuse);
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
    require!(Fuse);
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
    require!(Fuse);
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
    require!(Fuse);
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

/// Text-like bytes (words from a small vocabulary): what deflate writes
/// blocks with their own codes for, as it does for real layers.
fn text(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: &[&[u8]] = &[
        b"usr", b"lib", b"share", b"x86_64", b"linux", b"gnu", b"python3", b"README", b"LICENSE",
        b"config", b"json", b"/", b"\n", b"0", b"42", b"layer",
    ];
    let noise = pseudo_random(len / 8 + 8, seed);
    let mut out = Vec::with_capacity(len + 16);
    let mut i = 0;
    while out.len() < len {
        let r = noise[i % noise.len()] as usize;
        out.extend_from_slice(WORDS[r % WORDS.len()]);
        if r % 7 == 0 {
            let at = (i * 3) % (noise.len() - 3);
            out.extend_from_slice(&noise[at..at + 3]);
        }
        out.push(b' ');
        i += 1;
    }
    out.truncate(len);
    out
}

/// A gzip layer of more than two 16 MiB chunks, written by GNU gzip, is
/// inflated on every core while it is indexed: its tree and every byte
/// are what was packed, and the pass did not fall back to one core.
#[test]
fn a_big_gzip_layer_inflated_on_every_core() {
    require!(Fuse);
    let mut layer = Layer::default().dir("d");
    let mut expected = Expected::new().dir("d");
    for i in 0..60u64 {
        // Incompressible and text-like files in turn, 0.5-2.5 MB each.
        let len = 500_000 + (i as usize % 5) * 500_000;
        let body = if i % 2 == 0 {
            pseudo_random(len, i)
        } else {
            text(len, i)
        };
        let name = format!("d/f{i:02}");
        layer = layer.file(&name, &body);
        expected = expected.file(&name, &body);
    }
    let stack = Layers::new();
    let tar = layer.write(stack.dir(), "big.tar", Codec::Plain);
    let gz = compress_with("gzip", &["-c", "-6"], &tar, &stack.dir().join("big.tar.gz"));
    let size = std::fs::metadata(&gz).expect("gzip layer").len();
    assert!(
        size > 40 << 20,
        "the layer is {size} bytes: too small to split"
    );

    let log = debug_listing(&gz);
    assert!(
        log.contains("gzip: chunk "),
        "no chunk inflated by a worker:\n{log}"
    );
    assert!(
        !log.contains("on one core"),
        "fell back to one core:\n{log}"
    );

    let mount = Mount::new(&[gz]);
    assert_tree(mount.path(), &expected);
}

/// Lists `layer` with the debug log on; returns the log.
fn debug_listing(layer: &Path) -> String {
    let listed = Command::new(common::mount::bin())
        .args(["ls", "--no-cache"])
        .arg(layer)
        .env("RUST_LOG", "debug")
        .output()
        .expect("layerfs ls");
    assert!(listed.status.success());
    String::from_utf8_lossy(&listed.stderr).into_owned()
}

/// A plain layer of 70 MB of small files is read by the pass and a second
/// reader at once; the tree and every byte are still what was packed.
#[test]
fn a_big_plain_layer_of_small_files_is_read_by_two_readers() {
    require!(Fuse);
    let mut layer = Layer::default().dir("d");
    let mut expected = Expected::new().dir("d");
    for i in 0..8_000u64 {
        let body = text((i as usize * 7919) % 16_384, i);
        let name = format!("d/f{i:04}");
        layer = layer.file(&name, &body);
        expected = expected.file(&name, &body);
    }
    let stack = Layers::new();
    let tar = layer.write(stack.dir(), "small-files.tar", Codec::Plain);
    let size = std::fs::metadata(&tar).expect("plain layer").len();
    assert!(size > 64 << 20, "the layer is {size} bytes: too small");
    let log = debug_listing(&tar);
    assert!(
        log.contains("read-ahead helper read "),
        "no second reader:\n{log}"
    );
    let mount = Mount::new(&[tar]);
    assert_tree(mount.path(), &expected);
}

/// A plain layer of a few big files is indexed by seeking past their data:
/// the second reader reads none of it.
#[test]
fn a_plain_layer_of_big_files_gets_no_second_reader() {
    require!(Fuse);
    let mut layer = Layer::default().dir("d");
    let mut expected = Expected::new().dir("d");
    for i in 0..2u64 {
        let body = pseudo_random(40 << 20, i);
        let name = format!("d/blob{i}");
        layer = layer.file(&name, &body);
        expected = expected.file(&name, &body);
    }
    let stack = Layers::new();
    let tar = layer.write(stack.dir(), "big-files.tar", Codec::Plain);
    let log = debug_listing(&tar);
    assert!(
        log.contains("read-ahead helper read 0 MiB"),
        "the second reader read a sparse pass's data:\n{log}"
    );
    let mount = Mount::new(&[tar]);
    assert_tree(mount.path(), &expected);
}
