//! Hostile names are contained (issue 6, part 2): whatever a layer's member
//! names, link targets and parents say, the tree layerfs shows, exports and
//! writes stays inside itself, symlink targets read back exactly as stored,
//! and nothing of the host is read or written.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::mount::{bin, layerfs, mount_args};
use common::{assert_tree, Codec, Expected, Format, Layer, Layers, Mount};

/// A name no host path has, for members that try to land outside.
const PROBE: &str = "layerfs-escape-probe";
/// The contents of the layer's own `etc/passwd`.
const LAYER_PASSWD: &str = "root:x:0:0:from the layer:/root:/bin/sh\n";

/// A component of exactly 255 bytes, the longest a name can be.
fn name255(c: char) -> String {
    c.to_string().repeat(255)
}

/// A path of 3839 bytes, 15 components of 255: about the longest whose
/// full path below a mountpoint still fits `PATH_MAX` (4096), so that
/// every name in the tree can be looked at with one system call.
fn deep_path() -> String {
    vec![name255('d'); 15].join("/")
}

/// The lower layer's symlinks: out of the tree, in loops, absolute.
const LINKS: [(&str, &str); 6] = [
    ("up", "../../.."),
    ("loop1", "loop2"),
    ("loop2", "loop1"),
    ("self", "self"),
    ("host-passwd", "/etc/passwd"),
    ("climb", "../../../../../etc/shadow"),
];

fn lower() -> Layer {
    let layer = Layer::default().dir("etc").file("etc/passwd", LAYER_PASSWD);
    LINKS
        .iter()
        .fold(layer, |layer, (link, target)| layer.symlink(link, target))
}

fn upper() -> Layer {
    Layer::default()
        .file("../x", "dotdot x")
        .file("/abs/x", "absolute x")
        .file("a/../../y", "y")
        .file("./././z", "z")
        .file("a//b", "a b")
        .file(format!("up/{PROBE}"), "through up")
        .hardlink("hl-passwd", "../../etc/passwd")
        .hardlink("hl-hostname", "/etc/hostname")
        .hardlink("hl-nothing", "nothing/here")
        .file("loop1/in", "never placed")
        .file("self/in", "never placed")
        .file(format!("n255/{}", name255('a')), "255")
        .file(format!("n256/{}", "b".repeat(256)), "256")
        .file(format!("n300/{}/f", "c".repeat(300)), "300")
        .file(deep_path(), "deep")
}

/// The tree the two layers give, every name checked.
fn expected() -> Expected {
    let mut want = Expected::new()
        .dir("etc")
        .file("etc/passwd", LAYER_PASSWD)
        .hardlink("hl-passwd", "etc/passwd")
        .file("x", "dotdot x")
        .implied_dir("abs")
        .file("abs/x", "absolute x")
        .implied_dir("a")
        .file("y", "y")
        .file("z", "z")
        .file("a/b", "a b")
        .file(PROBE, "through up")
        .implied_dir("n255")
        .file(format!("n255/{}", name255('a')), "255")
        // Made on the way before its child's name was found too long, as
        // `mkdir -p` would.
        .implied_dir("n300");
    let mut dir = String::new();
    for _ in 0..14 {
        dir = if dir.is_empty() {
            name255('d')
        } else {
            format!("{dir}/{}", name255('d'))
        };
        want = want.implied_dir(&dir);
    }
    want = want.file(deep_path(), "deep");
    LINKS
        .iter()
        .fold(want, |want, (link, target)| want.symlink(link, target))
}

/// The warnings the mount must print, one per member left out.
fn expected_warnings(upper: &Path) -> Vec<String> {
    let layer = format!("{} (layer 2)", upper.display());
    [
        "hl-hostname: skipped: hardlink target does not exist".to_string(),
        "hl-nothing: skipped: hardlink target does not exist".into(),
        "loop1/in: skipped: too many levels of symbolic links in the parent path".into(),
        "self/in: skipped: too many levels of symbolic links in the parent path".into(),
        format!(
            "n256/{}: skipped: the name is longer than 255 bytes",
            "b".repeat(256)
        ),
        format!(
            "n300/{}/f: skipped: a parent's name is longer than 255 bytes",
            "c".repeat(300)
        ),
    ]
    .iter()
    .map(|w| format!("[WARN ] {layer}: {w}"))
    .collect()
}

/// Every file name in `dir` and below, as paths relative to it, without
/// following symlinks.
fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).unwrap_or_else(|e| panic!("list {}: {e}", d.display())) {
            let path = entry.expect("dir entry").path();
            if fs::symlink_metadata(&path).expect("lstat").is_dir() {
                todo.push(path.clone());
            }
            out.push(path.strip_prefix(dir).expect("below dir").to_path_buf());
        }
    }
    out.sort();
    out
}

/// Asserts that no regular file under `root` holds the host's
/// /etc/passwd or /etc/hostname.
fn assert_no_host_content(root: &Path) {
    let host: Vec<Vec<u8>> = ["/etc/passwd", "/etc/hostname"]
        .iter()
        .filter_map(|p| fs::read(p).ok())
        .filter(|c| !c.is_empty())
        .collect();
    for rel in listing(root) {
        let path = root.join(&rel);
        if !fs::symlink_metadata(&path).expect("lstat").is_file() {
            continue;
        }
        let data = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        assert!(
            !host.contains(&data),
            "{} holds a host file's contents",
            rel.display()
        );
    }
}

/// Asserts that nothing named [`PROBE`] exists on the host where an escape
/// would have put it.
fn assert_no_probe_on_host(places: &[&Path]) {
    for place in places {
        for dir in place.ancestors() {
            let probe = dir.join(PROBE);
            assert!(
                fs::symlink_metadata(&probe).is_err(),
                "{} exists",
                probe.display()
            );
        }
    }
}

#[test]
fn escaping_members_stay_inside_the_mounted_tree() {
    require!(Fuse);
    let mut stack = Layers::new();
    stack.add(&lower()).add(&upper());
    let layers_before = listing(stack.dir());
    let mount = Mount::fresh();
    let run = layerfs(mount_args(&[], &stack.paths, mount.path()));
    run.expect_success("mount");
    let warnings: Vec<String> = run.stderr.lines().map(str::to_string).collect();
    assert_eq!(warnings, expected_warnings(&stack.paths[1]));

    assert_tree(mount.path(), &expected());
    // Targets read back byte for byte, whatever they point at.
    for (link, target) in LINKS {
        assert_eq!(
            fs::read_link(mount.join(link)).expect("readlink"),
            Path::new(target)
        );
    }
    assert_eq!(
        fs::read_to_string(mount.join("hl-passwd")).expect("read hl-passwd"),
        LAYER_PASSWD
    );
    assert_no_host_content(mount.path());
    let beside: Vec<_> = listing(mount.path().parent().expect("mount parent"))
        .into_iter()
        .filter(|p| !p.starts_with("mnt"))
        .collect();
    assert!(beside.is_empty(), "appeared beside the mount: {beside:?}");
    assert_eq!(
        listing(stack.dir()),
        layers_before,
        "the layers dir changed"
    );
    // The tree has one at its root, where `up/` put it.
    assert_no_probe_on_host(&[mount.path().parent().expect("mount parent"), stack.dir()]);
}

/// `layerfs export` of the same stack holds the same tree: GNU tar
/// extracts it inside its directory, without a warning.
#[test]
fn export_of_escaping_members_extracts_inside_its_directory() {
    require!(Root);
    let mut stack = Layers::new();
    stack.add(&lower()).add(&upper());
    let out = tempfile::tempdir().expect("out dir");
    let flat = out.path().join("flat.tar");
    let mut args: Vec<&OsStr> = vec![OsStr::new("export")];
    args.extend(stack.paths.iter().map(|p| p.as_os_str()));
    args.extend([OsStr::new("-o"), flat.as_os_str()]);
    layerfs(&args).expect_success("export");
    let mut archive = tar::Archive::new(fs::File::open(&flat).expect("open export"));
    for entry in archive.entries().expect("entries") {
        let entry = entry.expect("entry");
        let path = entry.path_bytes().into_owned();
        assert!(
            !path.starts_with(b"/") && !path.split(|&b| b == b'/').any(|c| c == b".."),
            "exported name {:?} climbs out",
            String::from_utf8_lossy(&path)
        );
    }
    let extracted = out.path().join("x");
    fs::create_dir(&extracted).expect("mkdir");
    let run = common::mount::run_captured(
        std::process::Command::new("tar")
            .arg("-xpf")
            .arg(&flat)
            .arg("-C")
            .arg(&extracted),
    );
    run.expect_success("tar -x of the export");
    assert_eq!(common::tar_warnings(&run.stderr), Vec::<&str>::new());
    assert_tree(&extracted, &expected());
    assert_no_host_content(&extracted);
    assert_eq!(
        listing(out.path())
            .iter()
            .filter(|p| !p.starts_with("x"))
            .collect::<Vec<_>>(),
        [Path::new("flat.tar")]
    );
    assert_no_probe_on_host(&[out.path()]);
}

/// A directory whose symlinks point outside it: `create` and `diff` store
/// them as links and never read or descend through them.
fn source_with_outward_links(root: &Path) {
    use std::os::unix::fs::symlink;
    fs::create_dir_all(root.join("d")).expect("mkdir d");
    fs::write(root.join("d/own"), "own\n").expect("write own");
    symlink("/etc/passwd", root.join("passwd-link")).expect("symlink");
    symlink("/etc", root.join("etc")).expect("symlink");
    symlink("../../../../../../etc/passwd", root.join("d/climb")).expect("symlink");
}

/// What `create` of [`source_with_outward_links`] holds, as (path, type
/// flag, link target): the links as links, nothing below them.
fn source_members() -> Vec<(String, u8, String)> {
    [
        ("./", b'5', ""),
        ("d/", b'5', ""),
        ("d/climb", b'2', "../../../../../../etc/passwd"),
        ("d/own", b'0', ""),
        ("etc", b'2', "/etc"),
        ("passwd-link", b'2', "/etc/passwd"),
    ]
    .iter()
    .map(|&(path, kind, target)| (path.to_string(), kind, target.to_string()))
    .collect()
}

/// Every member of a tar file: (path, type flag, link target, data).
fn members(tar_file: &Path) -> Vec<(String, u8, String, Vec<u8>)> {
    use std::io::Read;
    let mut archive = tar::Archive::new(fs::File::open(tar_file).expect("open tar"));
    let mut out = Vec::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type().as_byte();
        let target = entry
            .link_name_bytes()
            .map(|t| String::from_utf8_lossy(&t).into_owned())
            .unwrap_or_default();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("member data");
        out.push((path, kind, target, data));
    }
    out
}

/// The (path, type flag, target) of every member, and that none holds a
/// host file's bytes.
fn names_without_host_content(tar_file: &Path) -> Vec<(String, u8, String)> {
    let host = fs::read("/etc/passwd").expect("read host /etc/passwd");
    members(tar_file)
        .into_iter()
        .map(|(path, kind, target, data)| {
            assert!(data != host, "{path} holds the host's /etc/passwd");
            (path, kind, target)
        })
        .collect()
}

#[test]
fn create_and_diff_never_follow_outward_symlinks() {
    let work = tempfile::tempdir().expect("work dir");
    let source = work.path().join("src");
    source_with_outward_links(&source);
    let created = work.path().join("created.tar");
    layerfs([
        OsStr::new("create"),
        source.as_os_str(),
        OsStr::new("-o"),
        created.as_os_str(),
    ])
    .expect_success("create");
    assert_eq!(names_without_host_content(&created), source_members());

    // The base has a real `etc/passwd` where the directory has a link to
    // the host's /etc: following it would compare (and copy) host files.
    let mut stack = Layers::new();
    stack.add(
        &Layer::default()
            .dir("etc")
            .file("etc/passwd", LAYER_PASSWD)
            .dir("d")
            .file("d/own", "own\n"),
    );
    let update = work.path().join("update.tar");
    let mut args: Vec<&OsStr> = vec![OsStr::new("diff")];
    args.extend(stack.paths.iter().map(|p| p.as_os_str()));
    args.extend([source.as_os_str(), OsStr::new("-o"), update.as_os_str()]);
    layerfs(&args).expect_success("diff");
    // Everything, links as links: the root, d and d/own differ from the
    // base in their times, the rest is new or of another kind.
    assert_eq!(names_without_host_content(&update), source_members());
    let mut written = listing(work.path());
    written.retain(|p| !p.starts_with("src"));
    assert_eq!(written, [Path::new("created.tar"), Path::new("update.tar")]);
    assert_no_probe_on_host(&[work.path()]);
}

/// 100,000 names in one directory: all listed, each found by name.
#[test]
fn a_hundred_thousand_entries_in_one_directory() {
    require!(Fuse);
    const N: usize = 100_000;
    let mut builder = tar::Builder::new(Vec::with_capacity((N + 2) * 512));
    for i in 0..N {
        let mut header = tar::Header::new_gnu();
        header.set_path(format!("big/f{i:06}")).expect("path");
        header.set_mode(0o644);
        header.set_size(0);
        header.set_cksum();
        builder.append(&header, &[][..]).expect("append");
    }
    let mut stack = Layers::new();
    stack.add_bytes(&builder.into_inner().expect("finish tar"));
    let mount = stack.mount();
    let mut names: Vec<String> = fs::read_dir(mount.join("big"))
        .expect("list big")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), N);
    assert!(names
        .iter()
        .enumerate()
        .all(|(i, n)| *n == format!("f{i:06}")));
    for i in [0, 1, N / 2, N - 1] {
        let meta = fs::metadata(mount.join(format!("big/f{i:06}"))).expect("stat");
        assert_eq!(meta.len(), 0);
    }
    assert!(fs::metadata(mount.join(format!("big/f{N:06}"))).is_err());
}

/// How a child process ran.
struct Finished {
    exited_ok: bool,
    peak_rss_kib: u64,
    took: Duration,
}

/// The child's `VmHWM` (peak RSS of the program it runs), while it runs.
/// Not `wait4`'s `ru_maxrss`: a child spawned by vfork counts the peak of
/// the test process it shared memory with until its exec.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
}

/// Runs `cmd` (output to files), sampling its peak RSS until it exits,
/// and waits at most `limit` for it, killing it past that, so that a
/// regression fails the test rather than hangs it.
fn run_measured(cmd: &mut Command, limit: Duration) -> Finished {
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn");
    let mut peak = 0;
    let status = loop {
        // VmHWM only grows, and is gone once the child exits: the last
        // sample is within a millisecond of its end.
        peak = peak_rss_kib(child.id()).unwrap_or(0).max(peak);
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            child.kill().expect("kill");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    Finished {
        exited_ok: status.success(),
        peak_rss_kib: peak,
        took: started.elapsed(),
    }
}

/// 50 members whose PAX paths are 200,000 components deep, in 2.5 KB of
/// zstd: each path is over `PATH_MAX`, so each member is left out with a
/// warning before any of its directories is made. It once took `ls` 4.6 GB
/// and 12 minutes (ten million directories, and paths of quadratic total
/// length printed).
#[test]
fn a_layer_of_absurdly_deep_paths_lists_fast_in_bounded_memory() {
    let deep = "a/".repeat(200_000);
    let layer = (0..50).fold(Layer::new(Format::Pax), |layer, i| {
        layer.file(format!("{deep}{i}"), "x")
    });
    let mut stack = Layers::new();
    stack.add_encoded(&layer.file("kept", "k"), Codec::Zstd);
    let path = &stack.paths[0];
    assert!(fs::metadata(path).expect("stat").len() < 64 << 10);
    let stdout = stack.dir().join("stdout");
    let stderr = stack.dir().join("stderr");
    let run = run_measured(
        Command::new(bin())
            .args(["ls", "--no-cache"])
            .arg(path)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).expect("stdout file"))
            .stderr(fs::File::create(&stderr).expect("stderr file")),
        Duration::from_secs(60),
    );
    let stderr = fs::read_to_string(&stderr).expect("read stderr");
    assert!(
        run.exited_ok,
        "layerfs ls failed after {:?}: {stderr}",
        run.took
    );
    let listed = fs::read_to_string(&stdout).expect("read stdout");
    let names: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.rsplit('\t').next())
        .collect();
    assert_eq!(names, ["kept"], "{listed}");
    let warnings: Vec<&str> = stderr.lines().collect();
    assert_eq!(warnings.len(), 50, "{stderr}");
    let layer = format!("[WARN ] {} (layer 1): a/a/", path.display());
    let problem = "bytes): skipped: the path is longer than 4095 bytes \
        (PATH_MAX) after following symbolic links";
    for warning in warnings {
        assert!(warning.starts_with(&layer), "{warning}");
        assert!(warning.ends_with(problem), "{warning}");
    }
    assert!(
        run.peak_rss_kib <= 64 << 10,
        "peak RSS {} KiB",
        run.peak_rss_kib
    );
    assert!(run.took < Duration::from_secs(20), "took {:?}", run.took);
    eprintln!(
        "deep-path bomb: {} bytes; ls took {:?}, peak RSS {} KiB",
        fs::metadata(path).expect("stat").len(),
        run.took,
        run.peak_rss_kib
    );
}
