//! `layerfs create` and `layerfs diff` against real mounts: a created layer
//! mounts as exactly its directory, and lower layers plus a diff mount as
//! exactly the changed directory (kinds, modes, owners, sizes, contents,
//! link targets, link counts, xattrs, nanosecond mtimes). Other tools
//! (GNU tar, bsdtar, gzip, zstd, sha256sum) must accept what is written.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::layer::pseudo_random;
use common::mount::{layerfs, run_captured, Run};
use common::tree::{snapshot, tree_diff, Fields, Kind};
use common::{Expected, Format, Layer, Layers, Mount};

/// Size of the file whose bytes change but not its size.
const BIG: usize = 300_000;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Two layers with files, directories, a symlink, a hardlink pair, user
/// xattrs, a fifo, a nanosecond mtime and (as root) a character device.
fn base_stack() -> Layers {
    let mut lower = Layer::new(Format::Pax)
        .dir("etc")
        .file("etc/hosts", "127.0.0.1 localhost\n")
        .xattr("user.note", "n1")
        .file("etc/passwd", "root:x:0:0\n")
        .dir("usr")
        .dir("usr/bin")
        .file("usr/bin/tool", "#!/bin/sh\n")
        .mode(0o755)
        .hardlink("usr/bin/tool2", "usr/bin/tool")
        .symlink("usr/bin/sh", "tool")
        .dir("data")
        .file("data/a", "aaaa")
        .file("data/b", "bbbb")
        .dir("data/sub")
        .file("data/sub/c", "c")
        .file("data/big", pseudo_random(BIG, 7))
        .dir("replace")
        .file("replace/1", "1")
        .file("replace/2", "2")
        .file("swap-file", "becomes a directory")
        .dir("swap-dir")
        .file("swap-dir/inner", "i")
        .dir("run")
        .fifo("run/fifo")
        .owner(12, 34);
    if is_root() {
        lower = lower.dir("dev").char_dev("dev/null", 1, 3).mode(0o666);
    }
    let upper = Layer::new(Format::Pax)
        .file("etc/passwd", "root:x:0:0:new\n")
        .whiteout("data/b")
        .file("data/new", "n")
        .owner(1000, 1000)
        .pax("mtime", "1600000000.123456789");
    let mut layers = Layers::new();
    layers.add(&lower).add(&upper);
    layers
}

/// A scratch directory holding a copy of what `layers` mount as.
fn copy_of(layers: &[PathBuf], scratch: &Path) -> PathBuf {
    let dir = scratch.join("dir");
    fs::create_dir(&dir).expect("mkdir");
    let mount = Mount::new(layers);
    let mut cp = Command::new("cp");
    cp.arg("-a").arg(mount.path().join(".")).arg(&dir);
    run_captured(&mut cp).expect_success("cp -a");
    dir
}

/// Asserts the tree mounted from `layers` is exactly `dir`.
fn assert_mounts_as(layers: &[PathBuf], dir: &Path) {
    let expected = Expected::from_snapshot(&snapshot(dir), Fields::ALL);
    let mount = Mount::new(layers);
    let diffs = tree_diff(&expected, &snapshot(mount.path()));
    assert!(
        diffs.is_empty(),
        "mount of {layers:?} differs from {}:\n  {}",
        dir.display(),
        diffs.join("\n  ")
    );
}

/// `layerfs create DIR -o OUT`.
fn create(dir: &Path, out: &Path) -> Run {
    layerfs([
        "create".as_ref(),
        dir.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ])
}

/// `diff_id` and `blob` with its size, as printed with `-o`.
fn digests(run: &Run) -> (String, String, u64) {
    let lines: Vec<&str> = run.stdout.lines().collect();
    let field = |line: Option<&&str>, key: &str| -> Vec<String> {
        let line = line.unwrap_or_else(|| panic!("no {key} line in {:?}", run.stdout));
        let words: Vec<String> = line.split(' ').map(str::to_string).collect();
        assert_eq!(words[0], key, "{:?}", run.stdout);
        words
    };
    assert_eq!(lines.len(), 2, "{:?}", run.stdout);
    let diff_id = field(lines.first(), "diff_id");
    let blob = field(lines.get(1), "blob");
    let size = blob[2].parse().expect("blob size");
    (diff_id[1].clone(), blob[1].clone(), size)
}

/// `sha256:` and the sha256sum of `bytes`.
fn sha256(bytes: &[u8]) -> String {
    let tmp = tempfile::NamedTempFile::new().expect("tempfile");
    fs::write(tmp.path(), bytes).expect("write");
    let run = run_captured(Command::new("sha256sum").arg(tmp.path()));
    run.expect_success("sha256sum");
    format!("sha256:{}", &run.stdout[..64])
}

/// Runs `program ARGS` and returns its stdout bytes, insisting it
/// succeeds without a word on stderr.
fn quiet_success(program: &str, args: &[&Path]) -> Vec<u8> {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{program} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A directory with every kind `create` stores, including sub-second
/// times and a hardlink pair.
fn sample_dir(scratch: &Path) -> PathBuf {
    let dir = copy_of(&base_stack().paths, scratch);
    fs::write(dir.join("data/late"), "from the future").expect("write");
    let late = SystemTime::UNIX_EPOCH + Duration::new(4_000_000_000, 987_654_321);
    let file = fs::File::options()
        .write(true)
        .open(dir.join("data/late"))
        .expect("open");
    file.set_modified(late).expect("set mtime");
    fs::create_dir(dir.join("empty")).expect("mkdir");
    dir
}

#[test]
fn create_mounts_as_the_directory_in_every_compression() {
    require!(Fuse, Tool("bsdtar"), Tool("zstd"));
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = sample_dir(scratch.path());
    for name in ["layer.tar", "layer.tar.gz", "layer.tar.zst"] {
        let out = scratch.path().join(name);
        let run = create(&dir, &out);
        run.expect_success("layerfs create");
        assert!(run.stderr.is_empty(), "{}", run.stderr);
        let (diff_id, blob, size) = digests(&run);
        let bytes = fs::read(&out).expect("read layer");
        assert_eq!(blob, sha256(&bytes), "{name}");
        assert_eq!(size, bytes.len() as u64, "{name}");
        let tar = match name {
            "layer.tar.gz" => quiet_success("gzip", &[Path::new("-dc"), &out]),
            "layer.tar.zst" => quiet_success("zstd", &[Path::new("-dcq"), &out]),
            _ => bytes.clone(),
        };
        assert_eq!(diff_id, sha256(&tar), "{name}");
        match name {
            "layer.tar.gz" => drop(quiet_success("gzip", &[Path::new("-t"), &out])),
            "layer.tar.zst" => drop(quiet_success("zstd", &[Path::new("-tq"), &out])),
            _ => assert_eq!(diff_id, blob),
        }
        let gnu = quiet_success("tar", &[Path::new("-tvf"), &out]);
        let bsd = quiet_success("bsdtar", &[Path::new("-tvf"), &out]);
        let gnu = String::from_utf8_lossy(&gnu);
        assert!(gnu.contains("usr/bin/tool2 link to usr/bin/tool"), "{gnu}");
        assert_eq!(
            gnu.lines().count(),
            String::from_utf8_lossy(&bsd).lines().count()
        );
        assert_mounts_as(&[out], &dir);
    }
}

#[test]
fn create_is_reproducible_and_to_stdout_reports_on_stderr() {
    require!(Fuse);
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = sample_dir(scratch.path());
    let mut outputs = Vec::new();
    for name in ["one.tar.zst", "two.tar.zst"] {
        let out = scratch.path().join(name);
        let run = create(&dir, &out);
        run.expect_success("layerfs create");
        outputs.push((fs::read(&out).expect("read"), run.stdout));
    }
    assert!(
        outputs[0].0 == outputs[1].0,
        "two runs wrote different bytes"
    );
    assert_eq!(outputs[0].1, outputs[1].1);

    let piped = Command::new(common::mount::bin())
        .arg("create")
        .arg(&dir)
        .output()
        .expect("run layerfs create");
    assert!(piped.status.success());
    let stderr = String::from_utf8_lossy(&piped.stderr);
    let want = format!(
        "diff_id {0}\nblob {0} {1}\n",
        sha256(&piped.stdout),
        piped.stdout.len()
    );
    assert_eq!(stderr, want);
}

#[test]
fn create_mtime_clamps_every_later_time() {
    require!(Fuse);
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = sample_dir(scratch.path());
    let limit: i64 = 1_600_000_000;
    let out = scratch.path().join("clamped.tar");
    layerfs([
        "create".as_ref(),
        "--mtime".as_ref(),
        limit.to_string().as_ref(),
        dir.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ])
    .expect_success("layerfs create --mtime");
    let original = snapshot(&dir);
    let mount = Mount::new(&[out]);
    let clamped = snapshot(mount.path());
    assert_eq!(
        original.keys().collect::<Vec<_>>(),
        clamped.keys().collect::<Vec<_>>()
    );
    let mut changed = 0;
    for (path, before) in &original {
        let after = clamped[path].mtime;
        if before.mtime > (limit, 0) {
            assert_eq!(after, (limit, 0), "{path:?}");
            changed += 1;
        } else {
            assert_eq!(after, before.mtime, "{path:?}");
        }
    }
    assert!(changed > 0 && changed < original.len(), "{changed} clamped");
    assert_eq!(clamped[&b"data/late"[..]].mtime, (limit, 0));
    // Later by a fraction of a second only: clamped too.
    assert_eq!(original[&b"data/new"[..]].mtime, (limit, 123_456_789));
    assert_eq!(clamped[&b"data/new"[..]].mtime, (limit, 0));
}

/// Changes `dir` in every way a diff must carry; returns nothing, the
/// directory is the expectation.
fn change(dir: &Path) {
    let file = |p: &str| dir.join(p);
    // Added: a file, and a directory with contents.
    fs::write(file("etc/added"), "new file").expect("write");
    fs::create_dir(file("newdir")).expect("mkdir");
    fs::write(file("newdir/f"), "f").expect("write");
    // Same size and time, other bytes.
    let big = file("data/big");
    let mtime = fs::metadata(&big)
        .and_then(|m| m.modified())
        .expect("mtime");
    let mut bytes = fs::read(&big).expect("read");
    bytes[BIG / 2] ^= 0xff;
    fs::write(&big, &bytes).expect("write");
    let handle = fs::File::options().write(true).open(&big).expect("open");
    handle.set_modified(mtime).expect("set mtime");
    // Mode, xattr.
    fs::set_permissions(file("etc/hosts"), fs::Permissions::from_mode(0o600)).expect("chmod");
    xattr::set(file("etc/hosts"), "user.note", b"n2").expect("xattr");
    xattr::set(file("run"), "user.added", b"x").expect("xattr");
    // Deleted: a file and a directory.
    fs::remove_file(file("data/a")).expect("rm");
    fs::remove_dir_all(file("data/sub")).expect("rm -r");
    // A directory whose contents are all replaced.
    fs::remove_file(file("replace/1")).expect("rm");
    fs::remove_file(file("replace/2")).expect("rm");
    fs::write(file("replace/3"), "3").expect("write");
    // Kind changes: file to directory, directory to symlink.
    fs::remove_file(file("swap-file")).expect("rm");
    fs::create_dir(file("swap-file")).expect("mkdir");
    fs::write(file("swap-file/inside"), "in").expect("write");
    fs::remove_dir_all(file("swap-dir")).expect("rm -r");
    symlink("etc", file("swap-dir")).expect("symlink");
    // A hardlink added, and one broken (a copy with the same everything).
    fs::hard_link(file("etc/passwd"), file("etc/passwd.bak")).expect("link");
    fs::remove_file(file("usr/bin/tool2")).expect("rm");
    let mut cp = Command::new("cp");
    cp.arg("-a")
        .arg(file("usr/bin/tool"))
        .arg(file("usr/bin/tool2"));
    run_captured(&mut cp).expect_success("cp -a");
}

/// The paths `layerfs ls --layer 1` lists for one layer file.
fn layer_paths(layer: &Path) -> Vec<String> {
    let run = layerfs([
        "ls".as_ref(),
        "--no-cache".as_ref(),
        "--layer".as_ref(),
        "1".as_ref(),
        layer.as_os_str(),
    ]);
    run.expect_success("layerfs ls --layer");
    run.stdout
        .lines()
        .map(|l| l.rsplit('\t').next().unwrap_or(l).to_string())
        .collect()
}

fn diff_args(layers: &[PathBuf], dir: &Path, out: &Path) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec!["diff".into(), "--no-cache".into()];
    args.extend(layers.iter().map(|l| l.clone().into_os_string()));
    args.push(dir.into());
    args.push("-o".into());
    args.push(out.into());
    args
}

#[test]
fn lower_layers_plus_a_diff_mount_as_the_changed_directory() {
    require!(Fuse);
    let stack = base_stack();
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = copy_of(&stack.paths, scratch.path());
    change(&dir);
    let out = scratch.path().join("new.tar.gz");
    let run = layerfs(diff_args(&stack.paths, &dir, &out));
    run.expect_success("layerfs diff");
    let (_, blob, size) = digests(&run);
    let bytes = fs::read(&out).expect("read");
    assert_eq!((blob, size), (sha256(&bytes), bytes.len() as u64));

    let paths = layer_paths(&out);
    for want in [
        "data/.wh.a",
        "data/.wh.sub",
        "replace/.wh..wh..opq",
        "replace/3",
        "run/",
    ] {
        assert!(paths.iter().any(|p| p == want), "{want} not in {paths:?}");
    }
    for unwanted in ["data/new", "replace/.wh.1", "run/fifo", "usr/bin/sh"] {
        assert!(
            !paths.iter().any(|p| p == unwanted),
            "{unwanted} in {paths:?}"
        );
    }
    let mut layers = stack.paths.clone();
    layers.push(out);
    assert_mounts_as(&layers, &dir);
    let merged = snapshot(&dir);
    assert_eq!(merged[&b"swap-dir"[..]].kind, Kind::Symlink);
    assert_eq!(merged[&b"etc/passwd.bak"[..]].nlink, 2);
}

#[test]
fn a_diff_against_an_unchanged_copy_is_empty() {
    require!(Fuse);
    let stack = base_stack();
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = copy_of(&stack.paths, scratch.path());
    let out = scratch.path().join("same.tar");
    layerfs(diff_args(&stack.paths, &dir, &out)).expect_success("layerfs diff");
    let paths = layer_paths(&out);
    assert!(paths.is_empty() || paths == ["./"], "{paths:?}");
    let mut layers = stack.paths.clone();
    layers.push(out);
    assert_mounts_as(&layers, &dir);
}

#[test]
fn whiteout_names_in_the_directory_are_refused_by_name() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = scratch.path().join("dir");
    fs::create_dir_all(dir.join("sub")).expect("mkdir");
    fs::write(dir.join("sub/.wh.gone"), "").expect("write");
    let out = scratch.path().join("x.tar");
    let run = create(&dir, &out);
    assert!(!run.status.success());
    assert!(run.stderr.contains("sub/.wh.gone"), "{}", run.stderr);
    assert!(!out.exists(), "a failed create left {}", out.display());
}

/// A layer directory made by hand, as one is extracted or kept as an
/// overlayfs upper directory: `.wh.` files, an opaque marker, a whiteout
/// directory with something in it, AUFS metadata and, as root, a 0/0
/// tombstone and a `trusted.overlay.opaque=y` directory.
fn hand_made_layer_dir(scratch: &Path) -> PathBuf {
    let dir = scratch.join("upper");
    for sub in ["etc", "data", "srv", ".wh.gone"] {
        fs::create_dir_all(dir.join(sub)).expect("mkdir");
    }
    for (path, content) in [
        ("etc/.wh.hosts", ""),
        ("etc/motd", "hello\n"),
        ("data/.wh..wh..opq", ""),
        ("data/new", "n"),
        (".wh.gone/inside", "never shown"),
        (".wh..wh.plnk", ""),
        ("srv/new", "s"),
    ] {
        fs::write(dir.join(path), content).expect("write");
    }
    if is_root() {
        let run = run_captured(
            Command::new("mknod")
                .arg(dir.join("etc/passwd"))
                .args(["c", "0", "0"]),
        );
        run.expect_success("mknod");
        xattr::set(dir.join("srv"), "trusted.overlay.opaque", b"y").expect("setfattr");
    }
    dir
}

#[test]
fn create_whiteouts_writes_a_layer_dir_as_the_mount_reads_it() {
    require!(Fuse);
    let scratch = tempfile::tempdir().expect("tempdir");
    let lower = Layer::new(Format::Pax)
        .dir("etc")
        .file("etc/hosts", "127.0.0.1 localhost\n")
        .file("etc/passwd", "root:x:0:0\n")
        .dir("data")
        .file("data/old", "o")
        .dir("data/sub")
        .file("data/sub/x", "x")
        .dir("srv")
        .file("srv/www", "w")
        .file("gone", "g");
    let mut layers = Layers::new();
    layers.add(&lower);
    let dir = hand_made_layer_dir(scratch.path());
    let out = scratch.path().join("upper.tar");

    let refused = create(&dir, &out);
    assert!(!refused.status.success());
    assert!(refused.stderr.contains("--whiteouts"), "{}", refused.stderr);

    let run = layerfs([
        "create".as_ref(),
        "--whiteouts".as_ref(),
        dir.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    run.expect_success("create --whiteouts");
    let warnings: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(warnings.len(), 1, "{}", run.stderr);
    assert!(
        warnings[0].ends_with("upper/.wh..wh.plnk: left out: the mount ignores it too"),
        "{}",
        run.stderr
    );
    let mut markers = vec![".wh.gone", "data/.wh..wh..opq", "etc/.wh.hosts"];
    if is_root() {
        markers.extend(["etc/.wh.passwd", "srv/.wh..wh..opq"]);
    }
    let written = layer_paths(&out);
    for marker in &markers {
        assert!(
            written.iter().any(|p| p == marker),
            "{marker} not in {written:?}"
        );
    }
    assert!(
        !written
            .iter()
            .any(|p| p.contains("inside") || p.contains("plnk")),
        "{written:?}"
    );

    // The stack with the written layer is the stack with the directory.
    let with_dir = [layers.paths.clone(), vec![dir.clone()]].concat();
    let with_tar = [layers.paths.clone(), vec![out.clone()]].concat();
    let from_dir = Mount::new(&with_dir);
    let expected = Expected::from_snapshot(&snapshot(from_dir.path()), Fields::ALL);
    drop(from_dir);
    let from_tar = Mount::new(&with_tar);
    let seen = snapshot(from_tar.path());
    let diffs = tree_diff(&expected, &seen);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    let mut names: Vec<String> = seen
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    names.sort();
    let mut wanted = vec!["data", "data/new", "etc", "etc/motd", "srv", "srv/new"];
    if !is_root() {
        wanted.extend(["etc/passwd", "srv/www"]);
        wanted.sort();
    }
    assert_eq!(names, wanted);
}
