//! `layerfs export`: the merged tree as one tar. Each export is read back by
//! independent tools (GNU tar, bsdtar, our own mount) and compared with the
//! mounted stack, which is the reference: an export and a mount must agree.

mod common;

use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::layer::{pseudo_random, Codec, Format};
use common::mount::{layerfs, run_captured, Run};
use common::tree::{populate_sparse, snapshot, write_sparse, Fields, Snapshot};
use common::{assert_tree, Expected, Layer, Layers, Mount};
use layerfs::source::LayerSource;

/// A non-UTF-8 name too long for ustar: needs pax `hdrcharset=BINARY`.
fn long_latin1_name() -> Vec<u8> {
    let mut name = b"names/".to_vec();
    name.extend_from_slice(&[b'n'; 120]);
    name.extend_from_slice(b"-caf\xe9");
    name
}

/// Three layers covering the merge cases and what ustar cannot hold: file
/// and directory whiteouts, an opaque marker, an overlayfs tombstone and
/// opaque xattr, a hardlink across layers, a member placed through a lower
/// symlink, long and non-UTF-8 names, a long link target, big ids,
/// sub-second and pre-1970 times, xattrs, devices, a fifo, empty dirs.
fn rich_stack() -> Layers {
    let long_dir = "d".repeat(120);
    let long_name = format!("{long_dir}/{}", "f".repeat(150));
    let base = Layer::new(Format::Pax)
        .dir("etc")
        .file("etc/passwd", "root:x:0:0::/root:/bin/sh\n")
        .hardlink("etc/passwd.link", "etc/passwd")
        .dir("etc/conf.d")
        .file("etc/conf.d/old.conf", "old")
        .dir("usr")
        .dir("usr/bin")
        .file("usr/bin/tool", "#!/bin/sh\n")
        .mode(0o755)
        .symlink("bin", "usr/bin")
        .dir("var")
        .dir("var/log")
        .file("var/log/messages", "log")
        .dir("srv")
        .file("srv/old", "gone")
        .dir("names")
        .file(b"names/caf\xe9", "latin-1 name")
        .file(long_latin1_name(), "long latin-1 name")
        .symlink(b"names/l\xe9", [0xe9; 120])
        .dir(&long_dir)
        .file(&long_name, "deep")
        .symlink("names/far", "t/".repeat(80))
        .file("names/owned", "big ids")
        .owner(3_000_000, 4_000_000)
        .file("names/precise", "ns")
        .pax("mtime", "1700000000.123456789")
        // Whole seconds: libarchive reads `-86400.5` as -86400 + 0.5 s.
        .file("names/ancient", "before 1970")
        .pax("mtime", "-86400")
        .file("names/attrs", "with xattrs")
        .xattr("user.one", "1")
        .xattr("user.bin", b"\x00\xff\n")
        .dir("dev")
        .char_dev("dev/null", 1, 3)
        .block_dev("dev/sda", 8, 0)
        .fifo("dev/fifo")
        .dir("empty")
        .dir("usr/share")
        .dir("usr/share/doc")
        .file("usr/share/doc/README", "doc");
    let middle = Layer::new(Format::Gnu)
        .whiteout("var/log")
        .whiteout("srv/old")
        .opaque("etc/conf.d")
        .dir("etc/conf.d")
        .file("etc/conf.d/new.conf", "new")
        .hardlink("usr/bin/tool2", "usr/bin/tool")
        .file("etc/passwd", "root:x:0:0::/root:/bin/bash\n");
    let top = Layer::new(Format::Pax)
        .tombstone("usr/share/doc")
        .overlay_opaque_dir("srv")
        .file("srv/fresh", "after opaque")
        .file("bin/new", "through the symlink")
        .mode(0o700);
    let mut layers = Layers::new();
    layers
        .add_encoded(&base, Codec::Gzip)
        .add_encoded(&middle, Codec::Zstd)
        .add(&top);
    layers
}

fn export(layers: &[PathBuf], extra: &[&str], out: &Path) -> Run {
    let mut args: Vec<std::ffi::OsString> = vec!["export".into(), "--no-cache".into()];
    args.extend(extra.iter().map(Into::into));
    args.extend(layers.iter().map(Into::into));
    args.push("-o".into());
    args.push(out.into());
    layerfs(args)
}

/// Extracts `archive` into a new directory `dir` with `tar` (GNU or bsd)
/// and asserts the tool printed nothing on stderr.
fn extract(tool: &str, flags: &[&str], archive: &Path, dir: &Path) {
    std::fs::create_dir(dir).unwrap();
    let run = run_captured(
        Command::new(tool)
            .args(flags)
            .arg("-xpf")
            .arg(archive)
            .arg("-C")
            .arg(dir),
    );
    run.expect_success(tool);
    let warnings = common::tar_warnings(&run.stderr);
    assert!(warnings.is_empty(), "{tool} warned: {warnings:?}");
}

/// One line of `ls --json`; undecodable name bytes (`\udcXX`, which JSON
/// parsers refuse as lone surrogates) are kept as the literal escape.
fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(&line.replace("\\udc", "\\\\udc")).unwrap()
}

fn mounted_snapshot(layers: &[PathBuf]) -> Snapshot {
    let mount = Mount::new(layers);
    snapshot(mount.path())
}

#[test]
fn gnu_tar_and_bsdtar_extract_the_export_to_the_mounted_tree() {
    require!(Fuse, Tool("bsdtar"));
    let layers = rich_stack();
    let reference = mounted_snapshot(&layers.paths);
    let archive = layers.dir().join("flat.tar");
    export(&layers.paths, &[], &archive).expect_success("export");
    let expected = Expected::from_snapshot(&reference, Fields::ALL);

    let gnu = layers.dir().join("gnu");
    let gnu_flags = ["--xattrs", "--xattrs-include=*", "--numeric-owner"];
    extract("tar", &gnu_flags, &archive, &gnu);
    assert_tree(&gnu, &expected);

    let bsd = layers.dir().join("bsd");
    extract("bsdtar", &["--xattrs", "--numeric-owner"], &archive, &bsd);
    assert_tree(&bsd, &expected);
}

#[test]
fn the_export_mounts_back_as_the_same_tree_in_every_compression() {
    require!(Fuse, Tool("zstd"));
    let layers = rich_stack();
    let reference = mounted_snapshot(&layers.paths);
    let expected = Expected::from_snapshot(&reference, Fields::ALL);
    for (name, extra) in [
        ("flat.tar", &[][..]),
        ("flat.tar.gz", &[][..]),
        ("flat.tar.zst", &[][..]),
        ("flat.zstd", &["--compress", "zstd:19"][..]),
        ("flat.gzip", &["--compress", "gzip:1"][..]),
    ] {
        let archive = layers.dir().join(name);
        export(&layers.paths, extra, &archive).expect_success(name);
        let mount = Mount::new(std::slice::from_ref(&archive));
        assert_tree(mount.path(), &expected);
    }
    let gz = layers.dir().join("flat.tar.gz");
    let zst = layers.dir().join("flat.tar.zst");
    let plain = std::fs::read(layers.dir().join("flat.tar")).unwrap();
    for (tool, file) in [("gzip", &gz), ("zstd", &zst)] {
        let out = Command::new(tool).arg("-dc").arg(file).output().unwrap();
        assert!(out.status.success(), "{tool} -dc");
        assert!(out.stdout == plain, "{tool} decodes to the plain export");
    }
}

#[test]
fn exports_are_deterministic_and_carry_no_whiteouts() {
    let layers = rich_stack();
    let first = layers.dir().join("a.tar");
    let second = layers.dir().join("b.tar");
    export(&layers.paths, &[], &first).expect_success("export");
    // Through the index cache the second time: same bytes.
    let cache = layers.dir().join("cache");
    let cache_arg = format!("--cache-dir={}", cache.display());
    let mut args: Vec<std::ffi::OsString> = vec!["export".into(), cache_arg.clone().into()];
    args.extend(layers.paths.iter().map(Into::into));
    args.extend(["-o".into(), second.clone().into()]);
    layerfs(&args).expect_success("export with cache");
    layerfs(&args).expect_success("export from cache");
    assert!(std::fs::read(&first).unwrap() == std::fs::read(&second).unwrap());

    let listing = layerfs([
        "ls".as_ref(),
        "--no-cache".as_ref(),
        "--layer=1".as_ref(),
        "--json".as_ref(),
        first.as_os_str(),
    ]);
    listing.expect_success("ls --layer");
    let mut paths = Vec::new();
    for line in listing.stdout.lines() {
        let v = json(line);
        let path = v["path"].as_str().unwrap().to_string();
        assert!(!path.contains(".wh."), "whiteout exported: {path}");
        let is_tombstone = v["type"] == "char" && path.starts_with("usr/share");
        assert!(!is_tombstone, "tombstone exported: {path}");
        paths.push(path.trim_end_matches('/').to_string());
    }
    // Parents before children, names in byte order: the order of the
    // merged listing, root first.
    let merged = layerfs(
        ["ls", "--no-cache", "--json"]
            .iter()
            .map(std::ffi::OsString::from)
            .chain(layers.paths.iter().map(Into::into)),
    );
    merged.expect_success("ls");
    let mut expected_order = vec![".".to_string()];
    for line in merged.stdout.lines() {
        let v = json(line);
        expected_order.push(v["path"].as_str().unwrap().to_string());
    }
    assert_eq!(paths, expected_order);
    // Hardlinks name a path already in the archive. etc/passwd.link is no
    // longer one: the middle layer replaced etc/passwd, leaving the old
    // contents under the link's name alone.
    let hardlinks: Vec<_> = listing
        .stdout
        .lines()
        .filter(|l| l.contains("\"type\":\"hardlink\""))
        .collect();
    assert_eq!(hardlinks.len(), 1, "{hardlinks:?}");
    assert!(hardlinks[0].contains("\"link\":\"usr/bin/tool\""));
}

#[test]
fn export_to_stdout_equals_the_file_and_stays_silent() {
    let layers = rich_stack();
    let file = layers.dir().join("flat.tar");
    let run = export(&layers.paths, &[], &file);
    run.expect_success("export");
    assert_eq!(run.stderr, "");
    let mut args: Vec<std::ffi::OsString> = vec!["export".into(), "--no-cache".into()];
    args.extend(layers.paths.iter().map(Into::into));
    let out = Command::new(common::mount::bin())
        .args(&args)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "no progress or noise when not a terminal"
    );
    assert!(out.stdout == std::fs::read(&file).unwrap());
}

/// A big file in a zstd or gzip export is read back from near its end
/// while decoding a few frames, not the stream from its start.
#[test]
fn compressed_exports_are_read_back_with_random_access() {
    let data = pseudo_random(24 << 20, 7);
    let layer = Layer::new(Format::Pax)
        .dir("big")
        .file("big/blob", &data)
        .file("big/after", "tail");
    let mut layers = Layers::new();
    layers.add(&layer);
    for name in ["flat.tar.zst", "flat.tar.gz"] {
        let archive = layers.dir().join(name);
        export(&layers.paths, &[], &archive).expect_success(name);
        let source = LayerSource::open(&archive).unwrap();
        let mut pass = source.index_pass();
        let index = layerfs::tar::index_layer(&mut pass).unwrap();
        source.attach(pass.finish().unwrap()).unwrap();
        let blob = index
            .members
            .iter()
            .find(|m| m.path == b"big/blob")
            .unwrap();
        let mut buf = vec![0; 4096];
        let at = data.len() - 10_000;
        source
            .read_exact_at(blob.data.offset + at as u64, &mut buf)
            .unwrap();
        assert!(buf == data[at..at + 4096], "{name}: bytes near the end");
        let decoded = source.decoded_bytes();
        assert!(
            decoded <= 4 << 20,
            "{name}: decoded {decoded} bytes for one 4 KiB read"
        );
    }
}

#[test]
fn a_failed_export_leaves_no_file_and_says_why() {
    let layers = rich_stack();
    let missing = layers.dir().join("no/such/dir/flat.tar");
    let run = export(&layers.paths, &[], &missing);
    assert!(!run.status.success());
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("no/such/dir/flat.tar"),
        "{}",
        run.stderr
    );

    // A bad layer: nothing written, the existing target kept.
    let target = layers.dir().join("kept.tar");
    std::fs::write(&target, b"previous").unwrap();
    let not_a_layer = common::layer::write_file(layers.dir(), "junk", &[b'x'; 4096]);
    let mut bad = layers.paths.clone();
    bad.push(not_a_layer);
    let run = export(&bad, &[], &target);
    assert!(!run.status.success());
    assert!(run.stderr.contains("junk"), "{}", run.stderr);
    assert_eq!(std::fs::read(&target).unwrap(), b"previous");
    let leftovers: Vec<_> = std::fs::read_dir(layers.dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    let run = layerfs(["export", "--compress", "lzma", "x.tar"]);
    assert!(!run.status.success());
    assert!(run.stderr.contains("--compress"), "{}", run.stderr);
}

// ---- sparse files ----------------------------------------------------------

/// A layer GNU tar wrote from sparse files, in the old GNU format so that
/// the export's PAX 1.0 members are a translation, not a copy: the
/// dialects tests' sparse files, plus `aligned`, whose regions are whole
/// 4 KiB blocks so that every way of finding holes gives the same map of
/// 12 KiB, and a plain file.
fn gnu_sparse_stack() -> Layers {
    let layers = Layers::new();
    let source = layers.dir().join("source");
    std::fs::create_dir(&source).unwrap();
    populate_sparse(&source);
    write_sparse(
        &source.join("aligned"),
        64 << 20,
        &[
            (0, pseudo_random(8192, 5)),
            (32 << 20, pseudo_random(4096, 6)),
        ],
    );
    std::fs::write(source.join("plain"), pseudo_random(3000, 7)).unwrap();
    let layer = layers.dir().join("gnu-sparse.tar");
    run_captured(
        Command::new("tar")
            .args(["--format=gnu", "--sparse", "-cf"])
            .arg(&layer)
            .arg("-C")
            .arg(&source)
            .arg("."),
    )
    .expect_success("tar -S");
    let mut layers = layers;
    layers.paths.push(layer);
    layers
}

/// Bytes of every regular file's contents, holes included.
fn apparent_bytes(tree: &Snapshot) -> u64 {
    tree.values()
        .filter(|n| n.content.is_some())
        .map(|n| n.size)
        .sum()
}

/// `st_blocks`, in 512-byte units, as `stat -c %b` prints it.
fn blocks(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).unwrap().blocks()
}

#[test]
fn sparse_files_export_as_their_data_and_extract_to_the_same_files() {
    require!(Fuse, Tool("bsdtar"));
    let layers = gnu_sparse_stack();
    let reference = mounted_snapshot(&layers.paths);
    let expected = Expected::from_snapshot(&reference, Fields::ALL);
    let archive = layers.dir().join("flat.tar");
    export(&layers.paths, &[], &archive).expect_success("export");

    // Only the data (the filesystem's blocks of it, as GNU tar found
    // them): under 512 KiB for 80 MiB of files.
    let bytes = std::fs::read(&archive).unwrap();
    assert!(apparent_bytes(&reference) > 80 << 20);
    assert!(bytes.len() < 512 << 10, "export of {} bytes", bytes.len());
    let members = bytes
        .windows(18)
        .filter(|w| w == b"GNU.sparse.major=1")
        .count();
    assert_eq!(
        members, 5,
        "every file with holes is a PAX 1.0 sparse member"
    );

    for (tool, flags) in [("tar", &["-S"][..]), ("bsdtar", &[][..])] {
        let dir = layers.dir().join(tool);
        extract(tool, flags, &archive, &dir);
        assert_tree(&dir, &expected);
        assert!(blocks(&dir.join("all-hole")) < 64, "{tool} wrote zeros");
    }
    let mount = Mount::new(std::slice::from_ref(&archive));
    assert_tree(mount.path(), &expected);
}

#[test]
fn stat_through_the_mount_counts_the_stored_blocks() {
    require!(Fuse);
    let layers = gnu_sparse_stack();
    let archive = layers.dir().join("flat.tar");
    export(&layers.paths, &[], &archive).expect_success("export");
    for stack in [&layers.paths, &vec![archive]] {
        let mount = Mount::new(stack);
        let count = |name: &str| blocks(&mount.join(name));
        assert_eq!(count("aligned"), 12 << 10 >> 9);
        assert_eq!(count("all-hole"), 0);
        assert_eq!(count("plain"), 3000u64.div_ceil(512));
        for name in ["few", "many", "tail-hole"] {
            let apparent = std::fs::metadata(mount.join(name)).unwrap().len();
            assert!(count(name) * 512 < apparent / 16, "{name}: {}", count(name));
        }
    }
}

/// GNU tar's PAX 1.0 spelling of a sparse file, built by hand: the map of
/// `(offset, bytes)` regions in the data, then the regions' bytes.
fn pax1_sparse_layer(path: &str, size: u64, regions: &[(u64, Vec<u8>)]) -> Layer {
    let mut map = format!("{}\n", regions.len());
    for (offset, data) in regions {
        map.push_str(&format!("{offset}\n{}\n", data.len()));
    }
    let mut stored = map.into_bytes();
    stored.resize(stored.len().next_multiple_of(512), 0);
    for (_, data) in regions {
        stored.extend_from_slice(data);
    }
    let (dir, name) = path.rsplit_once('/').unwrap_or((".", path));
    Layer::new(Format::Pax)
        .file(format!("{dir}/GNUSparseFile.77/{name}"), stored)
        .pax("GNU.sparse.major", "1")
        .pax("GNU.sparse.minor", "0")
        .pax("GNU.sparse.name", path)
        .pax("GNU.sparse.realsize", size.to_string())
}

/// `layerfs export LAYER...` to a pipe, failing (and killing it) if it
/// writes more than `limit` bytes: a sparse file written out in full must
/// fail the test, not fill the disk.
fn export_capped(layers: &[PathBuf], extra: &[&str], limit: u64) -> Vec<u8> {
    let mut child = Command::new(common::mount::bin())
        .arg("export")
        .arg("--no-cache")
        .args(extra)
        .args(layers)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = Vec::new();
    let stdout = child.stdout.take().unwrap();
    stdout.take(limit + 1).read_to_end(&mut out).unwrap();
    if out.len() as u64 > limit {
        child.kill().unwrap();
        child.wait().unwrap();
        panic!("export wrote more than {limit} bytes");
    }
    assert!(child.wait().unwrap().success(), "export failed");
    out
}

#[test]
fn a_huge_sparse_file_exports_in_a_moment_to_a_small_archive() {
    require!(Fuse, Tool("bsdtar"));
    const SIZE: u64 = 1 << 40;
    let head = pseudo_random(700, 1);
    let tail = pseudo_random(1000, 2);
    let regions = [(4096, head.clone()), (SIZE - 1000, tail.clone())];
    let mut layers = Layers::new();
    layers.add(&pax1_sparse_layer("big/huge", SIZE, &regions));

    let started = Instant::now();
    let bytes = export_capped(&layers.paths, &[], 64 << 10);
    let took = started.elapsed();
    assert!(took < Duration::from_millis(500), "export took {took:?}");
    // `./` and `big/`; the extended header and its records, the header,
    // the map, 1700 bytes of data; the end.
    assert_eq!(bytes.len(), (2 + 4 + 4 + 2) * 512);
    let archive = common::layer::write_file(layers.dir(), "flat.tar", &bytes);
    let zst = export_capped(&layers.paths, &["--compress", "zstd"], 64 << 10);
    let zst = common::layer::write_file(layers.dir(), "flat.tar.zst", &zst);

    // The layer, its export and the compressed export all show the file;
    // its blocks are its 1700 stored bytes.
    for stack in [&layers.paths[0], &archive, &zst] {
        let mount = Mount::new(std::slice::from_ref(stack));
        let file = std::fs::File::open(mount.join("big/huge")).unwrap();
        let meta = file.metadata().unwrap();
        assert_eq!(
            (meta.len(), meta.blocks()),
            (SIZE, 4),
            "{}",
            stack.display()
        );
        let mut buf = vec![0xaa; 1200];
        file.read_exact_at(&mut buf, SIZE - 1200).unwrap();
        assert!(buf[..200].iter().all(|&b| b == 0));
        assert!(buf[200..] == tail[..]);
        file.read_exact_at(&mut buf[..702], 4095).unwrap();
        assert!(buf[0] == 0 && buf[1..701] == head[..] && buf[701] == 0);
    }

    // Both tars make the same 1 TiB file, in a few blocks of disk.
    for (tool, flags) in [("tar", &["-S"][..]), ("bsdtar", &[][..])] {
        let dir = layers.dir().join(tool);
        extract(tool, flags, &archive, &dir);
        let file = std::fs::File::open(dir.join("big/huge")).unwrap();
        let meta = file.metadata().unwrap();
        assert_eq!(meta.len(), SIZE, "{tool}");
        assert!(
            meta.blocks() < 1024,
            "{tool} wrote {} blocks",
            meta.blocks()
        );
        let mut buf = vec![0; 1000];
        file.read_exact_at(&mut buf, SIZE - 1000).unwrap();
        assert!(buf == tail, "{tool}: the last region");
        file.read_exact_at(&mut buf[..700], 4096).unwrap();
        assert!(buf[..700] == head[..], "{tool}: the first region");
    }
}

/// umoci reads tars with Go's `archive/tar`, as the runtimes do: it must
/// unpack an exported sparse file, regions widened to whole blocks, to the
/// bytes the mount shows.
#[test]
fn umoci_unpacks_an_exported_sparse_file_to_the_same_bytes() {
    require!(Fuse, Tool("umoci"));
    let regions = [
        (100, pseudo_random(700, 1)),
        (5_000, pseudo_random(3, 2)),
        ((4 << 20) - 10, pseudo_random(10, 3)),
    ];
    let mut layers = Layers::new();
    layers.add(&pax1_sparse_layer("d/f", 4 << 20, &regions));
    let reference = mounted_snapshot(&layers.paths);
    let archive = layers.dir().join("flat.tar");
    export(&layers.paths, &[], &archive).expect_success("export");

    let oci = layers.dir().join("oci");
    let image = format!("{}:t", oci.display());
    let bundle = layers.dir().join("bundle");
    let umoci = |args: &[&std::ffi::OsStr]| {
        run_captured(Command::new("umoci").args(args)).expect_success("umoci");
    };
    umoci(&["init".as_ref(), "--layout".as_ref(), oci.as_os_str()]);
    umoci(&["new".as_ref(), "--image".as_ref(), image.as_ref()]);
    umoci(&[
        "raw".as_ref(),
        "add-layer".as_ref(),
        "--image".as_ref(),
        image.as_ref(),
        archive.as_os_str(),
    ]);
    umoci(&[
        "unpack".as_ref(),
        "--image".as_ref(),
        image.as_ref(),
        bundle.as_os_str(),
    ]);
    let unpacked = std::fs::read(bundle.join("rootfs/d/f")).unwrap();
    let mounted = reference[&b"d/f"[..]].content.as_ref().unwrap();
    assert_eq!(unpacked.len(), 4 << 20);
    assert!(unpacked == *mounted, "umoci unpacked other bytes");
}
