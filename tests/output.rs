//! Where every command's output goes: `-o` onto each kind of file (as
//! `tar -f` treats them), the mode of the files written, a reader that
//! leaves early, and a terminating signal in the middle of a write.

mod common;

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use common::layer::{pseudo_random, Codec};
use common::mount::{bin, layerfs, run_captured, wait_for, Run};
use common::{names, Format, Layer};
use tempfile::TempDir;

/// The inputs every command reads: a directory, a layer file holding an
/// older version of it, and an index cache.
struct Inputs {
    dir: TempDir,
}

impl Inputs {
    fn new() -> Inputs {
        let dir = tempfile::Builder::new()
            .prefix("layerfs-output")
            .tempdir()
            .expect("tempdir");
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("etc")).expect("mkdir");
        fs::write(src.join("etc/hosts"), "127.0.0.1 localhost\n").expect("write");
        fs::write(src.join("data"), pseudo_random(200_000, 7)).expect("write");
        Layer::new(Format::Pax)
            .dir("etc")
            .file("etc/hosts", "old\n")
            .file("etc/gone", "removed by the diff")
            .write(dir.path(), "layer.tar", Codec::Plain);
        Inputs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The commands that take `-o FILE`.
#[derive(Clone, Copy, Debug)]
enum Cmd {
    Create,
    Export,
    Diff,
    IndexExport,
}

const COMMANDS: [Cmd; 4] = [Cmd::Create, Cmd::Export, Cmd::Diff, Cmd::IndexExport];

impl Cmd {
    /// The command's arguments, writing to `out` (`None`: stdout).
    fn args(self, inputs: &Inputs, out: Option<&Path>) -> Vec<OsString> {
        let (src, layer) = (inputs.path("src"), inputs.path("layer.tar"));
        let mut args: Vec<OsString> = match self {
            Cmd::Create => vec!["create".into(), src.into()],
            Cmd::Export => vec!["export".into(), "--no-cache".into(), layer.into()],
            Cmd::Diff => vec!["diff".into(), "--no-cache".into(), layer.into(), src.into()],
            Cmd::IndexExport => vec![
                "index".into(),
                "export".into(),
                "--cache-dir".into(),
                inputs.path("cache").into(),
                layer.into(),
            ],
        };
        if let Some(out) = out {
            args.extend(["-o".into(), out.into()]);
        }
        args
    }

    fn run(self, inputs: &Inputs, out: &Path) -> Run {
        layerfs(self.args(inputs, Some(out)))
    }

    /// What the command writes, from a run into a new file.
    fn reference(self, inputs: &Inputs) -> Vec<u8> {
        let out = inputs.path(&format!("reference-{self:?}"));
        self.run(inputs, &out).expect_success("the reference run");
        let bytes = fs::read(&out).expect("read the reference");
        fs::remove_file(&out).expect("rm");
        bytes
    }
}

/// One `-o` target kind: prepares it in an empty directory, runs the
/// command on it and checks the outcome.
type Case = fn(Cmd, &Inputs, &Path, &[u8]);

/// A character device (a private /dev/null) is written into and stays a
/// device.
fn char_device(cmd: Cmd, inputs: &Inputs, dir: &Path, _expected: &[u8]) {
    let null = dir.join("null");
    run_captured(Command::new("mknod").arg(&null).args(["c", "1", "3"])).expect_success("mknod");
    cmd.run(inputs, &null).expect_success("writing to a device");
    let meta = fs::symlink_metadata(&null).expect("lstat");
    assert!(meta.file_type().is_char_device(), "{cmd:?}: {meta:?}");
    assert_eq!(meta.rdev(), libc::makedev(1, 3), "{cmd:?}");
    assert_eq!(names(dir), ["null"], "{cmd:?}: nothing left beside it");
}

/// A FIFO is written into: a reader gets every byte, the FIFO stays.
fn fifo(cmd: Cmd, inputs: &Inputs, dir: &Path, expected: &[u8]) {
    let path = dir.join("fifo");
    run_captured(Command::new("mkfifo").arg(&path)).expect_success("mkfifo");
    let reader = {
        let path = path.clone();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            fs::File::open(path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .expect("read the fifo");
            bytes
        })
    };
    // A writer of our own holds the FIFO open, so the reader only sees its
    // end once the command is done, whatever the command did with it.
    let keeper = fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open the fifo");
    let run = cmd.run(inputs, &path);
    drop(keeper);
    let got = reader.join().expect("reader thread");
    run.expect_success("writing to a fifo");
    assert!(
        got == expected,
        "{cmd:?}: the reader got {} bytes",
        got.len()
    );
    let meta = fs::symlink_metadata(&path).expect("lstat");
    assert!(meta.file_type().is_fifo(), "{cmd:?}: {meta:?}");
    assert_eq!(names(dir), ["fifo"], "{cmd:?}: nothing left beside it");
}

/// A symlink to a file is followed: the file gets the output, the link
/// stays as it was.
fn symlink_to_file(cmd: Cmd, inputs: &Inputs, dir: &Path, expected: &[u8]) {
    fs::create_dir(dir.join("real")).expect("mkdir");
    fs::write(dir.join("real/file"), b"old").expect("write");
    symlink("real/file", dir.join("link")).expect("symlink");
    cmd.run(inputs, &dir.join("link"))
        .expect_success("writing through a symlink");
    let link = fs::symlink_metadata(dir.join("link")).expect("lstat");
    assert!(
        link.file_type().is_symlink(),
        "{cmd:?}: the link was replaced"
    );
    assert_eq!(
        fs::read_link(dir.join("link")).expect("readlink"),
        Path::new("real/file")
    );
    assert!(fs::read(dir.join("real/file")).expect("read") == expected);
    assert_eq!(names(dir), ["link", "real"], "{cmd:?}");
    assert_eq!(names(&dir.join("real")), ["file"], "{cmd:?}");
}

/// A dangling symlink is refused in one line; nothing is created.
fn dangling_symlink(cmd: Cmd, inputs: &Inputs, dir: &Path, _expected: &[u8]) {
    symlink("missing", dir.join("link")).expect("symlink");
    let run = cmd.run(inputs, &dir.join("link"));
    assert_eq!(run.status.code(), Some(1), "{cmd:?}: {run:?}");
    let line = format!(
        "layerfs: {}: a symlink to missing, which does not exist; not writing through it\n",
        dir.join("link").display()
    );
    assert!(run.stderr.ends_with(&line), "{cmd:?}: {}", run.stderr);
    assert_eq!(names(dir), ["link"], "{cmd:?}");
}

/// A directory is refused in one line and left as it was.
fn directory(cmd: Cmd, inputs: &Inputs, dir: &Path, _expected: &[u8]) {
    let target = dir.join("d");
    fs::create_dir(&target).expect("mkdir");
    let run = cmd.run(inputs, &target);
    assert_eq!(run.status.code(), Some(1), "{cmd:?}: {run:?}");
    let line = format!(
        "layerfs: {}: is a directory; -o takes a file name, a device or a FIFO\n",
        target.display()
    );
    assert!(run.stderr.ends_with(&line), "{cmd:?}: {}", run.stderr);
    assert_eq!(names(dir), ["d"], "{cmd:?}");
    assert!(names(&target).is_empty(), "{cmd:?}");
}

#[test]
fn every_output_treats_devices_fifos_symlinks_and_directories_as_tar_does() {
    require!(Root);
    let inputs = Inputs::new();
    let cases: [(&str, Case); 5] = [
        ("char device", char_device),
        ("fifo", fifo),
        ("symlink to a file", symlink_to_file),
        ("dangling symlink", dangling_symlink),
        ("directory", directory),
    ];
    for cmd in COMMANDS {
        let expected = cmd.reference(&inputs);
        assert!(
            expected.len() > 1024,
            "{cmd:?} wrote {} bytes",
            expected.len()
        );
        for (name, case) in cases {
            let dir = tempfile::tempdir_in(inputs.dir.path()).expect("case dir");
            eprintln!("{cmd:?}: {name}");
            case(cmd, &inputs, dir.path(), &expected);
        }
    }
}

/// Runs `layerfs ARGS` under `umask MASK` (set in the child only: the
/// umask is process-wide and tests run in parallel).
fn with_umask(mask: u32, args: Vec<OsString>) -> Run {
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(format!("umask {mask:03o} && exec \"$0\" \"$@\""))
        .arg(bin())
        .args(args);
    run_captured(&mut sh)
}

#[test]
fn every_output_gets_0666_less_the_umask_new_or_replaced() {
    let inputs = Inputs::new();
    for cmd in COMMANDS {
        for mask in [0o022, 0o027, 0o002] {
            let new = inputs.path(&format!("new-{cmd:?}-{mask:o}"));
            with_umask(mask, cmd.args(&inputs, Some(&new))).expect_success("new file");
            let replaced = inputs.path(&format!("old-{cmd:?}-{mask:o}"));
            fs::write(&replaced, b"old").expect("write");
            fs::set_permissions(&replaced, fs::Permissions::from_mode(0o600)).expect("chmod");
            with_umask(mask, cmd.args(&inputs, Some(&replaced))).expect_success("replaced file");
            for path in [new, replaced] {
                let mode = fs::metadata(&path).expect("stat").mode() & 0o7777;
                assert_eq!(mode, 0o666 & !mask, "{cmd:?} {}", path.display());
            }
        }
    }
}

/// The write end of a pipe whose read end is already closed.
fn pipe_without_reader() -> OwnedFd {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills the two-element array it is given.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    write
}

/// Runs `layerfs ARGS` with stdout a pipe whose reader leaves after the
/// first `first` bytes (before the command starts if 0); returns the
/// status, how much was read and stderr.
fn reader_leaves_early(args: &[OsString], first: usize) -> (ExitStatus, usize, String) {
    let stderr = tempfile::tempfile().expect("stderr file");
    let stdout = match first {
        0 => Stdio::from(pipe_without_reader()),
        _ => Stdio::piped(),
    };
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr.try_clone().expect("dup"))
        .spawn()
        .expect("spawn layerfs");
    let mut head = vec![0u8; first];
    if let Some(mut out) = child.stdout.take() {
        out.read_exact(&mut head).expect("read");
    }
    let status = child.wait().expect("wait");
    let mut message = String::new();
    let mut stderr = stderr;
    std::io::Seek::rewind(&mut stderr).expect("rewind");
    stderr.read_to_string(&mut message).expect("read stderr");
    (status, head.len(), message)
}

#[test]
fn a_reader_that_leaves_early_ends_every_command_as_sigpipe_does() {
    let inputs = Inputs::new();
    // Far more than a pipe holds (64 KiB): the writer must meet EPIPE.
    fs::write(inputs.path("src/big"), pseudo_random(4 << 20, 3)).expect("write");
    let mut many = Layer::new(Format::Pax);
    for n in 0..20_000 {
        many = many.file(format!("file-with-a-longish-name-{n:06}"), "");
    }
    let listed = many.write(inputs.dir.path(), "many.tar", Codec::Plain);
    let big = Layer::new(Format::Pax)
        .file("big", pseudo_random(4 << 20, 5))
        .write(inputs.dir.path(), "big.tar", Codec::Plain);
    let commands: Vec<(&str, Vec<OsString>, usize)> = vec![
        ("create", Cmd::Create.args(&inputs, None), 512),
        (
            "export",
            vec!["export".into(), "--no-cache".into(), big.into()],
            512,
        ),
        (
            "ls",
            vec!["ls".into(), "--no-cache".into(), listed.into()],
            16,
        ),
        // Shorter than a pipe holds: the reader is gone before it starts.
        ("completions", vec!["completions".into(), "bash".into()], 0),
    ];
    for (name, args, first) in commands {
        let (status, read, stderr) = reader_leaves_early(&args, first);
        assert_eq!(read, first, "{name}");
        assert_eq!(status.signal(), Some(libc::SIGPIPE), "{name}: {status}");
        assert_eq!(stderr, "", "{name}");
    }
}

/// A stack that takes seconds to export: zstd level 19 spends more than
/// a second on each 1 MiB frame of this text.
fn slow_export(inputs: &Inputs) -> Vec<OsString> {
    let layer = inputs.path("slow.tar");
    let text: Vec<u8> = pseudo_random(8 << 20, 11)
        .iter()
        .map(|b| b'a' + b % 8)
        .collect();
    Layer::new(Format::Pax)
        .file("text", text)
        .write(inputs.dir.path(), "slow.tar", Codec::Plain);
    vec![
        "-vv".into(),
        "export".into(),
        "--no-cache".into(),
        "--compress".into(),
        "zstd:19".into(),
        layer.into(),
        "-o".into(),
        inputs.path("out.tar.zst").into(),
    ]
}

/// The output's temporary files in `dir`.
fn parts(dir: &Path) -> Vec<PathBuf> {
    names(dir)
        .into_iter()
        .filter(|n| n.ends_with(".part"))
        .map(|n| dir.join(n))
        .collect()
}

/// Starts `layerfs ARGS` with `ignored` ignored (as `nohup` or a
/// background job would have it) and the other terminating signals at
/// their default, whatever the test runner inherited.
fn spawn_with_ignored(args: &[OsString], ignored: Option<i32>) -> std::process::Child {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: signal(2) is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(move || {
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                let action = match Some(sig) == ignored {
                    true => libc::SIG_IGN,
                    false => libc::SIG_DFL,
                };
                libc::signal(sig, action);
            }
            Ok(())
        });
    }
    cmd.spawn().expect("spawn layerfs export")
}

/// Waits until the export says (at debug level) that it writes its
/// temporary file, which it says once the file is registered for removal,
/// then sends `sig`; returns the file.
fn signal_once_writing(child: &mut std::process::Child, sig: i32) -> PathBuf {
    let stderr = child.stderr.take().expect("piped stderr");
    let (found, said) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let part = line
                .strip_suffix(" until complete")
                .and_then(|l| l.rsplit_once(": writing "))
                .map(|(_, part)| PathBuf::from(part));
            if let Some(part) = part {
                let _ = found.send(part);
            }
        }
    });
    let Ok(part) = said.recv_timeout(Duration::from_secs(60)) else {
        let _ = child.kill();
        panic!("the export never said it writes: {:?}", child.wait());
    };
    assert!(part.exists(), "{} is not there", part.display());
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
    part
}

fn wait_bounded(child: &mut std::process::Child) -> ExitStatus {
    let exited = wait_for(Duration::from_secs(60), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
    }
    child.wait().expect("wait")
}

#[test]
fn a_terminating_signal_removes_the_temporary_file_of_an_export() {
    let inputs = Inputs::new();
    let args = slow_export(&inputs);
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        let mut child = spawn_with_ignored(&args, None);
        let part = signal_once_writing(&mut child, sig);
        let status = wait_bounded(&mut child);
        assert_eq!(status.signal(), Some(sig), "{status}");
        assert!(!part.exists(), "signal {sig} left {}", part.display());
        assert!(parts(inputs.dir.path()).is_empty());
        assert!(!inputs.path("out.tar.zst").exists());
    }
}

#[test]
fn an_ignored_signal_stays_ignored_during_an_export() {
    let inputs = Inputs::new();
    let args = slow_export(&inputs);
    let mut child = spawn_with_ignored(&args, Some(libc::SIGHUP));
    let part = signal_once_writing(&mut child, libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "an ignored SIGHUP ended the export"
    );
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let status = wait_bounded(&mut child);
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status}");
    assert!(!part.exists(), "{} left behind", part.display());
}
