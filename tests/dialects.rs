//! Tar dialects and archive oddities layerfs must read: ustar, GNU and PAX
//! extensions, sparse files, archives from real tar tools, truncated
//! trailers, path normalisation and raw byte names.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::layer::{pseudo_random, set_raw_name};
use common::mount::{layerfs, mount_args};
use common::tree::{populate_sparse, snapshot, Fields, Mtime};
use common::{assert_merge, assert_tree, Codec, Expected, Format, Layer, Layers};

/// A path of three components, long enough to need a ustar prefix
/// (over 100 bytes) yet splittable (dir part ≤ 155, name ≤ 100).
fn ustar_long_path() -> String {
    format!("{}/{}/{}", "p".repeat(60), "q".repeat(60), "n".repeat(90))
}

#[test]
fn ustar_members_including_prefix_split_names() {
    require!(Fuse);
    let long = ustar_long_path();
    let layer = Layer::new(Format::Ustar)
        .dir("etc")
        .mode(0o750)
        .owner(10, 20)
        .file("etc/hosts", "127.0.0.1 localhost\n")
        .mode(0o600)
        .mtime(1_234_567_890)
        .symlink("hosts", "etc/hosts")
        .file(&long, "deep");
    let expected = Expected::new()
        .dir("etc")
        .mode(0o750)
        .owner(10, 20)
        .file("etc/hosts", "127.0.0.1 localhost\n")
        .mode(0o600)
        .mtime(1_234_567_890)
        .symlink("hosts", "etc/hosts")
        .implied_dir("p".repeat(60))
        .implied_dir(format!("{}/{}", "p".repeat(60), "q".repeat(60)))
        .file(&long, "deep");
    assert_merge(&[layer], &expected);
}

/// Components of a 300+ byte path (each component under NAME_MAX).
fn long_components() -> [String; 3] {
    [
        "a".repeat(120),
        "b".repeat(120),
        format!("{}.txt", "c".repeat(100)),
    ]
}

/// A layer with a long file name, a long symlink target and a hardlink whose
/// (long) link name only fits through the dialect's extension.
fn long_names_layer(format: Format) -> (Layer, Expected) {
    let [a, b, c] = long_components();
    let file = format!("{a}/{b}/{c}");
    let target = format!("../{}/{}", "t".repeat(150), "u".repeat(100));
    let layer = Layer::new(format)
        .dir(&a)
        .dir(format!("{a}/{b}"))
        .file(&file, "long")
        .symlink("short-link", &target)
        .hardlink(format!("{a}/{}", "h".repeat(110)), &file);
    let expected = Expected::new()
        .dir(&a)
        .dir(format!("{a}/{b}"))
        .file(&file, "long")
        .symlink("short-link", &target)
        .hardlink(format!("{a}/{}", "h".repeat(110)), &file);
    (layer, expected)
}

#[test]
fn gnu_long_names_and_long_link_names() {
    require!(Fuse);
    let (layer, expected) = long_names_layer(Format::Gnu);
    assert_merge(&[layer], &expected);
}

#[test]
fn pax_path_and_linkpath_records_for_long_names() {
    require!(Fuse);
    let (layer, expected) = long_names_layer(Format::Pax);
    assert_merge(&[layer], &expected);
}

#[test]
fn gnu_base256_uid_gid_and_mtime() {
    require!(Fuse);
    const BIG_MTIME: u64 = 10_000_000_000; // beyond 11 octal digits
    let layer = Layer::new(Format::Gnu)
        .file("big", "ids")
        .owner(0x7fff_ffff, 0x7fff_fffe)
        .mtime(BIG_MTIME);
    let tar = layer.to_tar();
    // Fixture sanity: uid (offset 108) and mtime (offset 136) are base-256.
    assert!(tar[108] & 0x80 != 0 && tar[136] & 0x80 != 0, "not base-256");
    let expected = Expected::new()
        .file("big", "ids")
        .owner(0x7fff_ffff, 0x7fff_fffe)
        .mtime(BIG_MTIME as i64);
    assert_merge(&[layer], &expected);
}

#[test]
fn gnu_base256_negative_mtime() {
    require!(Fuse);
    let layer = Layer::new(Format::Gnu).file("old", "1969").tweak(|h| {
        // Two's complement base-256: the sign bit doubles as the marker.
        let field = &mut h.as_old_mut().mtime;
        field[..4].fill(0xff);
        field[4..].copy_from_slice(&(-86_400i64).to_be_bytes());
    });
    let expected = Expected::new().file("old", "1969").mtime(-86_400);
    assert_merge(&[layer], &expected);
}

#[test]
fn old_and_contiguous_typeflags_are_regular_files() {
    require!(Fuse);
    let layer = Layer::default()
        .file("nul-typeflag", "v7 regular")
        .tweak(|h| h.as_old_mut().linkflag = [0])
        .file("contiguous", "typeflag 7")
        .tweak(|h| h.as_old_mut().linkflag = [b'7']);
    let expected = Expected::new()
        .file("nul-typeflag", "v7 regular")
        .file("contiguous", "typeflag 7");
    assert_merge(&[layer], &expected);
}

#[test]
fn pax_records_override_header_fields() {
    require!(Fuse);
    let layer = Layer::new(Format::Pax)
        .file("decoy-name", "12345")
        .pax("path", "real/name.txt")
        .pax("size", "5")
        .pax("uid", "3000000000")
        .pax("gid", "3000000001")
        .pax("uname", "someone")
        .pax("gname", "somegroup")
        .pax("mtime", "1234567890.123456789")
        .pax("atime", "1234567891.5")
        .pax("LIBARCHIVE.creationtime", "1234567800")
        .pax("comment", "ignored")
        .tweak(|h| h.set_size(0))
        .file("half-second", "x")
        .pax("mtime", "1500000000.5")
        .symlink("link", "decoy-target")
        .pax("linkpath", "real/name.txt")
        .tweak(|h| set_raw_name(h, b"decoy-link-name"))
        .pax("path", "link");
    let expected = Expected::new()
        .implied_dir("real")
        .file("real/name.txt", "12345")
        .owner(3_000_000_000, 3_000_000_001)
        .mtime_ns(1_234_567_890, 123_456_789)
        .file("half-second", "x")
        .mtime_ns(1_500_000_000, 500_000_000)
        .symlink("link", "real/name.txt");
    assert_merge(&[layer], &expected);
}

/// A value longer than the first buffer most getxattr callers try.
fn big_xattr() -> Vec<u8> {
    pseudo_random(3000, 77)
}

/// `security.capability` v2 granting cap_net_raw, as on `ping`.
const FILE_CAPS: [u8; 20] = [
    0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

#[test]
fn pax_schily_xattrs_are_extended_attributes() {
    require!(Fuse);
    let layer = Layer::new(Format::Pax)
        .dir("d")
        .xattr("user.dir", "on a dir")
        .file("d/f", "content")
        .xattr("user.foo", "bar")
        .xattr("user.empty", "")
        .xattr("user.binary", [0u8, 255, 1, b'\n'])
        .xattr("user.big", big_xattr())
        .xattr("security.capability", FILE_CAPS)
        .file("plain", "no xattrs");
    let expected = Expected::new()
        .dir("d")
        .xattr("user.dir", "on a dir")
        .file("d/f", "content")
        .xattr("user.foo", "bar")
        .xattr("user.empty", "")
        .xattr("user.binary", [0u8, 255, 1, b'\n'])
        .xattr("user.big", big_xattr())
        .xattr("security.capability", FILE_CAPS)
        .file("plain", "no xattrs");
    let mut stack = Layers::new();
    stack.add(&layer);
    let mount = stack.mount();
    assert_tree(mount.path(), &expected);
    let missing = xattr::get(mount.join("d/f"), "user.missing").expect("getxattr");
    assert_eq!(missing, None, "getxattr of an absent name must be ENODATA");
}

#[test]
fn pax_global_headers_are_not_entries() {
    require!(Fuse);
    let layer = Layer::new(Format::Pax)
        .global_header(&[("comment", "4b825dc642cb6eb9a060e54bf8d69288fbee4904")])
        .file("a", "a")
        .global_header(&[("comment", "second global header")])
        .file("b", "b");
    assert_merge(&[layer], &Expected::new().file("a", "a").file("b", "b"));
}

fn small_layer() -> (Layer, Expected) {
    let content = "x".repeat(700);
    let layer = Layer::default().dir("d").file("d/last", &content);
    let expected = Expected::new().dir("d").file("d/last", &content);
    (layer, expected)
}

fn mount_bytes_and_check(bytes: &[u8], expected: &Expected) {
    let mut stack = Layers::new();
    stack.add_bytes(bytes);
    let mount = stack.mount();
    assert_tree(mount.path(), expected);
}

#[test]
fn layer_without_end_of_archive_blocks() {
    require!(Fuse);
    let (layer, expected) = small_layer();
    mount_bytes_and_check(&layer.to_tar_unterminated(), &expected);
}

#[test]
fn last_member_data_not_padded_to_a_block() {
    require!(Fuse);
    let (layer, expected) = small_layer();
    let mut tar = layer.to_tar_unterminated();
    let padding = 1024 - 700;
    assert!(tar[tar.len() - padding..].iter().all(|&b| b == 0));
    tar.truncate(tar.len() - padding);
    mount_bytes_and_check(&tar, &expected);
}

#[test]
fn dot_slash_prefixes_and_trailing_slashes_are_normalised() {
    require!(Fuse);
    let lower = Layer::default()
        .dir("./")
        .dir("./a/")
        .mode(0o700)
        .file("./a/f", "f")
        .dir("b/")
        .file("b/g", "g")
        .hardlink("./a/link", "./a/f");
    let upper = Layer::default().whiteout("./b/g").file("./b/h", "h");
    let expected = Expected::new()
        .dir("a")
        .mode(0o700)
        .file("a/f", "f")
        .hardlink("a/link", "a/f")
        .dir("b")
        .file("b/h", "h");
    assert_merge(&[lower, upper], &expected);
}

/// `..` in member names must never reach outside the tree: layerfs may
/// refuse the layer (one error line naming it) or clamp the names at the
/// root, but nothing else.
#[test]
fn dotdot_member_names_never_escape() {
    require!(Fuse);
    let layer = Layer::default()
        .file("../escape", "e")
        .file("../../deeper/z", "z");
    let mut stack = Layers::new();
    stack.add(&layer);
    let mount = common::Mount::fresh();
    let run = layerfs(mount_args(&[], &stack.paths, mount.path()));
    if !run.status.success() {
        let layer_name = stack.paths[0].display().to_string();
        assert!(
            run.stderr.starts_with("layerfs: ")
                && run.stderr.trim_end().lines().count() == 1
                && run.stderr.contains(&layer_name),
            "refusal must be one line naming the layer, got: {}",
            run.stderr
        );
        return;
    }
    let expected = Expected::new()
        .file("escape", "e")
        .implied_dir("deeper")
        .file("deeper/z", "z");
    assert_tree(mount.path(), &expected);
}

#[test]
fn duplicate_member_in_one_layer_last_wins() {
    require!(Fuse);
    let layer = Layer::default()
        .file("x", "first")
        .mode(0o600)
        .file("x", "second")
        .dir("z")
        .mode(0o700)
        .file("z/child", "c")
        .dir("z")
        .mode(0o750)
        .file("w", "a file first")
        .symlink("w", "x");
    let expected = Expected::new()
        .file("x", "second")
        .dir("z")
        .mode(0o750)
        .file("z/child", "c")
        .symlink("w", "x");
    assert_merge(&[layer], &expected);
}

#[test]
fn implied_directories_are_0755_root_owned() {
    require!(Fuse);
    let lower = Layer::default()
        .file("deep/a/b/file", "f")
        .dir("x")
        .mode(0o700)
        .owner(1, 1);
    // x exists below, so x/y/z must not reset x's metadata.
    let upper = Layer::default().file("x/y/z", "z");
    let expected = Expected::new()
        .implied_dir("deep")
        .implied_dir("deep/a")
        .implied_dir("deep/a/b")
        .file("deep/a/b/file", "f")
        .dir("x")
        .mode(0o700)
        .owner(1, 1)
        .implied_dir("x/y")
        .file("x/y/z", "z");
    assert_merge(&[lower, upper], &expected);
}

#[test]
fn non_utf8_names_pass_through_exactly() {
    require!(Fuse);
    let long: Vec<u8> = [b"d\xff/".as_slice(), &[0xe9; 150]].concat();
    let layer = Layer::default()
        .file(b"caf\xe9", "latin-1 name")
        .dir(b"d\xff")
        .file(b"d\xff/\x80\x81", "raw")
        .file(&long, "long raw")
        .file("with space", "s")
        .file("new\nline", "n")
        .symlink(b"l\xe9", b"caf\xe9");
    let expected = Expected::new()
        .file(b"caf\xe9", "latin-1 name")
        .dir(b"d\xff")
        .file(b"d\xff/\x80\x81", "raw")
        .file(&long, "long raw")
        .file("with space", "s")
        .file("new\nline", "n")
        .symlink(b"l\xe9", b"caf\xe9");
    assert_merge(&[layer], &expected);
}

// ---- archives written by real tar implementations -------------------------

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn set_owner(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

fn mknod(path: &Path, kind: libc::mode_t, major: u32, minor: u32) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid NUL-terminated path; mknod has no other preconditions.
    let rc = unsafe { libc::mknod(c.as_ptr(), kind | 0o640, libc::makedev(major, minor)) };
    assert_eq!(rc, 0, "mknod {}", path.display());
}

/// A source tree with every kind of entry, for archiving with real tar
/// tools. `beyond_ustar` adds names that only GNU/PAX archives can hold.
fn populate_source(root: &Path, beyond_ustar: bool) {
    let mkdir = |rel: &str, mode: u32| {
        let p = root.join(rel);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let write = |rel: &str, data: &[u8], mode: u32| {
        let p = root.join(rel);
        std::fs::write(&p, data).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    mkdir("bin", 0o755);
    write("bin/prog", b"#!/bin/sh\necho hi\n", 0o4755);
    std::fs::hard_link(root.join("bin/prog"), root.join("bin/prog-again")).unwrap();
    symlink("prog", root.join("bin/link")).unwrap();
    symlink("/etc/passwd", root.join("abs-link")).unwrap();
    mkdir("home/user", 0o700);
    write("home/user/.profile", b"PATH=/bin\n", 0o600);
    set_owner(&root.join("home/user/.profile"), 1000, 1000);
    set_owner(&root.join("home/user"), 1000, 1001);
    write("empty", b"", 0o644);
    write("random.bin", &pseudo_random(100_000, 7), 0o640);
    mkdir("tmp", 0o1777);
    mkdir("dev", 0o755);
    mknod(&root.join("dev/null"), libc::S_IFCHR, 1, 3);
    mknod(&root.join("dev/loop0"), libc::S_IFBLK, 7, 0);
    mknod(&root.join("dev/fifo"), libc::S_IFIFO, 0, 0);
    xattr::set(root.join("random.bin"), "user.comment", b"kept in PAX").unwrap();
    let ustar_dir = format!("u/{}/{}", "a".repeat(70), "b".repeat(70));
    mkdir(&ustar_dir, 0o755);
    write(
        &format!("{ustar_dir}/{}", "c".repeat(60)),
        b"ustar prefix",
        0o644,
    );
    if beyond_ustar {
        let dir = format!("long/{}/{}", "x".repeat(120), "y".repeat(120));
        mkdir(&dir, 0o755);
        write(&format!("{dir}/{}", "z".repeat(100)), b"long", 0o644);
        symlink("t".repeat(200), root.join("long-target")).unwrap();
    }
}

/// Archives the content of `source` with `cmd ARGS -f ARCHIVE -C SOURCE .`
/// and returns the archive bytes.
fn archive_with(cmd: &str, args: &[&str], source: &Path) -> Vec<u8> {
    let scratch = tempfile::tempdir().unwrap();
    let archive = scratch.path().join("layer.tar");
    run(Command::new(cmd)
        .args(args)
        .arg("-f")
        .arg(&archive)
        .arg("-C")
        .arg(source)
        .arg("."));
    std::fs::read(&archive).unwrap()
}

/// Mounts one layer holding `bytes` and expects exactly the `source` tree.
fn assert_layer_matches_source(bytes: &[u8], source: &Path, fields: Fields) {
    let expected = Expected::from_snapshot(&snapshot(source), fields);
    mount_bytes_and_check(bytes, &expected);
}

/// What the pre-PAX formats preserve: no xattrs, whole-second mtimes.
const PRE_PAX: Fields = Fields {
    xattrs: false,
    mtime: Mtime::Seconds,
};

fn check_tool(cmd: &str, args: &[&str], beyond_ustar: bool, fields: Fields) {
    let source = tempfile::tempdir().unwrap();
    populate_source(source.path(), beyond_ustar);
    let tar = archive_with(cmd, args, source.path());
    assert_layer_matches_source(&tar, source.path(), fields);
}

#[test]
fn gnu_tar_gnu_format_matches_source_tree() {
    require!(Fuse);
    check_tool("tar", &["--format=gnu", "-c"], true, PRE_PAX);
}

#[test]
fn gnu_tar_posix_format_with_xattrs_matches_source_tree() {
    require!(Fuse);
    check_tool(
        "tar",
        &["--format=posix", "--xattrs", "-c"],
        true,
        Fields::ALL,
    );
}

#[test]
fn gnu_tar_ustar_format_matches_source_tree() {
    require!(Fuse);
    check_tool("tar", &["--format=ustar", "-c"], false, PRE_PAX);
}

#[test]
fn bsdtar_pax_format_matches_source_tree() {
    require!(Fuse, Tool("bsdtar"));
    check_tool("bsdtar", &["--format=pax", "-c"], true, Fields::ALL);
}

// ---- sparse files ----------------------------------------------------------

/// Archives the sparse files with GNU tar using `args`, checks with
/// `is_sparse` that the archive really uses a sparse encoding (a tar that
/// silently stored plain data would test nothing), and compares the mount.
fn check_sparse(args: &[&str], is_sparse: fn(&[u8]) -> bool, fields: Fields, codec: Codec) {
    let source = tempfile::tempdir().unwrap();
    populate_sparse(source.path());
    let tar = archive_with("tar", &[args, &["-c"]].concat(), source.path());
    assert!(is_sparse(&tar), "fixture is not sparse");
    assert_layer_matches_source(&codec.encode(&tar), source.path(), fields);
}

/// Whether some header block is an old-GNU sparse header (typeflag `S`).
fn has_old_gnu_sparse_header(tar: &[u8]) -> bool {
    tar.chunks(512)
        .any(|block| block.len() == 512 && &block[257..263] == b"ustar " && block[156] == b'S')
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn gnu_sparse_old_format_reads_back_exact_bytes() {
    require!(Fuse);
    check_sparse(
        &["--format=gnu", "--sparse"],
        has_old_gnu_sparse_header,
        PRE_PAX,
        Codec::Plain,
    );
}

#[test]
fn pax_sparse_v0_0_reads_back_exact_bytes() {
    require!(Fuse);
    check_sparse(
        &["--format=pax", "--sparse-version=0.0"],
        |tar| contains(tar, b"GNU.sparse.offset="),
        Fields::ALL,
        Codec::Plain,
    );
}

#[test]
fn pax_sparse_v0_1_reads_back_exact_bytes() {
    require!(Fuse);
    check_sparse(
        &["--format=pax", "--sparse-version=0.1"],
        |tar| contains(tar, b"GNU.sparse.map="),
        Fields::ALL,
        Codec::Plain,
    );
}

#[test]
fn pax_sparse_v1_0_reads_back_exact_bytes() {
    require!(Fuse);
    check_sparse(
        &["--format=pax", "--sparse-version=1.0"],
        |tar| contains(tar, b"GNU.sparse.major=1"),
        Fields::ALL,
        Codec::Plain,
    );
}

#[test]
fn sparse_files_in_compressed_layers() {
    require!(Fuse);
    check_sparse(
        &["--format=gnu", "--sparse"],
        has_old_gnu_sparse_header,
        PRE_PAX,
        Codec::GzipMultiMember,
    );
    check_sparse(
        &["--format=pax", "--sparse-version=1.0"],
        |tar| contains(tar, b"GNU.sparse.major=1"),
        Fields::ALL,
        Codec::ZstdSkippableFirst,
    );
}
