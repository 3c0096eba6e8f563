//! What fuzzing found, kept: every input a fuzz target (fuzz/, run by
//! scripts/fuzz.sh) crashed on, replayed through the same library calls
//! with the clean error each must now give. Also writes the fuzz targets'
//! seed corpora from this suite's layer builder, on request.

mod common;

use std::io::Cursor;
use std::path::{Path, PathBuf};

use common::layer::{pseudo_random, write_file};
use common::{Codec, Format, Layer};
use layerfs::source::LayerSource;
use layerfs::stack::{Stack, StackOptions};
use layerfs::tar::index_layer;
use layerfs::tree::Tree;

/// A committed crasher: `tests/fuzz-regressions/TARGET/NAME`.
fn crasher(target: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-regressions")
        .join(target)
        .join(name)
}

/// A zstd frame with a bad checksum, where the tar ends before the frame
/// does (found by the layer_source target). It used to index (the pass
/// stopped at the tar's end, before the checksum) and then fail every read.
/// The index pass now reads a compressed layer to its end, as containerd
/// does, so the layer is refused before anything is mounted, naming the
/// damage. Damage that only a read finds (a layer changed in place) fails
/// only the reads that reach it: `spill::tests::
/// bytes_before_damage_read_and_the_damage_fails_every_time` and
/// tests/hostile_streams.rs.
#[test]
fn zstd_checksum_damage_past_the_tar_refuses_the_layer() {
    let path = crasher("layer_source", "zstd-checksum-after-tar-end");
    let err = Stack::open(std::slice::from_ref(&path), &StackOptions::default())
        .expect_err("the layer is refused");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: at byte 224768 of the decompressed stream, after the archive's end: Restored data doesn't match checksum",
            path.display()
        )
    );
}

/// Layers in every dialect the builder writes, with every member kind and
/// OCI whiteout form the merge knows.
fn sample_layers() -> Vec<Layer> {
    let base = |format| {
        Layer::new(format)
            .dir("etc")
            .file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n")
            .mode(0o600)
            .owner(0, 42)
            .symlink("etc/localtime", "/usr/share/zoneinfo/UTC")
            .hardlink("etc/passwd-", "etc/passwd")
            .dir("dev")
            .char_dev("dev/null", 1, 3)
            .block_dev("dev/sda", 8, 0)
            .fifo("run.fifo")
            .file(
                format!("deep/{}/f", "d".repeat(150)),
                pseudo_random(2000, 7),
            )
    };
    vec![
        base(Format::Gnu),
        base(Format::Ustar),
        base(Format::Pax)
            .file("xattr", b"x")
            .xattr("user.a", b"1")
            .pax("mtime", "1700000000.25"),
        Layer::new(Format::Pax)
            .global_header(&[("uid", "7")])
            .whiteout("etc/passwd")
            .opaque("dev")
            .tombstone("run.fifo")
            .overlay_opaque_dir("deep")
            .file("etc/new", b"new"),
    ]
}

/// The merge target's input: a flags byte (layer count - 1 in its low
/// bits), then each layer but the last after its u16 LE length, then the
/// last (fuzz/src/lib.rs `split_layers` reads it).
fn merge_input(layers: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![(layers.len() - 1) as u8];
    for (i, layer) in layers.iter().enumerate() {
        if i + 1 < layers.len() {
            let len = u16::try_from(layer.len()).expect("seed layers under 64 KiB");
            out.extend_from_slice(&len.to_le_bytes());
        }
        out.extend_from_slice(layer);
    }
    out
}

/// Writes seeds for every fuzz target under `$LAYERFS_FUZZ_SEEDS/TARGET/`
/// (scripts/fuzz.sh seed runs this).
#[test]
#[ignore = "writes fuzz seeds; run by scripts/fuzz.sh seed"]
fn write_fuzz_seeds() {
    let root = std::env::var_os("LAYERFS_FUZZ_SEEDS").expect("LAYERFS_FUZZ_SEEDS is set");
    let root = Path::new(&root);
    let dir = |target: &str| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("seed directory");
        dir
    };
    let tars: Vec<Vec<u8>> = sample_layers().iter().map(Layer::to_tar).collect();
    // The layers on which tar readers disagree (tests/go_reading.rs).
    for (name, tar) in common::raw::disagreements() {
        index_layer(&mut Cursor::new(&tar)).expect("a seed layer indexes");
        write_file(&dir("tar_index"), &format!("go-reading-{name}"), &tar);
    }
    for (i, tar) in tars.iter().enumerate() {
        write_file(&dir("tar_index"), &format!("builder-{i}"), tar);
        for codec in Codec::ALL {
            let name = format!("builder-{i}-{codec:?}");
            let layer = write_file(&dir("layer_source"), &name, &codec.encode(tar));
            // The seek index each codec's pass leaves, as the cache stores it.
            let source = LayerSource::open(&layer).expect("a seed layer opens");
            let mut pass = source.index_pass();
            index_layer(&mut pass).expect("a seed layer indexes");
            let mut seek = Vec::new();
            pass.finish().expect("a seek index").encode(&mut seek);
            write_file(&dir("tree_decode"), &format!("seek-{name}"), &seek);
        }
    }
    for (name, stack) in [
        ("gnu-whiteouts", vec![0, 3]),
        ("all", vec![0, 1, 2, 3]),
        ("pax-ustar", vec![2, 1]),
        ("one", vec![2]),
    ] {
        let layers: Vec<Vec<u8>> = stack.iter().map(|&i| tars[i].clone()).collect();
        write_file(&dir("merge"), name, &merge_input(&layers));
        let indexes = layers
            .iter()
            .map(|tar| index_layer(&mut Cursor::new(tar)).expect("a seed layer indexes"));
        let (tree, _) = Tree::build(indexes);
        let mut stored = Vec::new();
        tree.encode(&mut stored);
        write_file(&dir("tree_decode"), &format!("tree-{name}"), &stored);
    }
}

/// Found by the merge target: a pax `path` with NUL bytes made a tree
/// name the kernel would cut short, and an export that read back as
/// another tree. Such a layer is refused, as Go's archive/tar (containerd,
/// Docker) refuses it, naming the layer and the record's offset.
#[test]
fn a_pax_path_with_a_nul_byte_refuses_the_layer() {
    let dir = tempfile::tempdir().expect("dir");
    let good = Layer::new(Format::Pax).file("ok", b"1");
    let bad = Layer::new(Format::Pax)
        .file("x", b"2")
        .pax("path", b"deep/a\0\0b");
    let paths = [
        good.write(dir.path(), "good.tar", Codec::Plain),
        bad.write(dir.path(), "bad.tar", Codec::Plain),
    ];
    let err = Stack::open(&paths, &StackOptions::default()).expect_err("refused");
    assert_eq!(
        err.to_string(),
        format!(
            "{} (layer 2): at byte 512: bad pax header: path has a NUL byte",
            paths[1].display()
        )
    );
}
