//! What layerfs says while it works: the progress bar while indexing
//! (only on a terminal, erased at the end) and where a background daemon's
//! warnings go when no `--log-file` is given (syslog).

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::Digest;

use common::mount::{layerfs, mount_args, run_captured, Run};
use common::{Format, Layer, Layers, Mount};

/// Bytes of the one file of [`slow_layer`].
const BIG: u64 = 512 << 20;

/// A plain tar holding one file of [`BIG`] zero bytes, written sparse, and
/// the `--digest` that makes indexing read all of it: long enough (a
/// fraction of a second) for a bar shown at once to be drawn.
fn slow_layer(dir: &Path) -> (PathBuf, String) {
    let mut header = tar::Header::new_ustar();
    header.set_path("big").expect("name");
    header.set_size(BIG);
    header.set_mode(0o644);
    header.set_cksum();
    let path = dir.join("big.tar");
    let mut file = fs::File::create(&path).expect("create layer");
    file.write_all(header.as_bytes()).expect("write header");
    file.set_len(512 + BIG + 1024).expect("extend layer");
    drop(file);
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut fs::File::open(&path).expect("open layer"), &mut hasher).expect("hash");
    let digest = format!("1=sha256:{:x}", hasher.finalize());
    (path, digest)
}

/// `layerfs ARGS` with the bar allowed at once (`LAYERFS_PROGRESS_AFTER=0`)
/// and stderr captured in a file: not a terminal.
fn layerfs_at_once(args: &[&std::ffi::OsStr]) -> Run {
    run_captured(
        Command::new(common::mount::bin())
            .args(args)
            .env("LAYERFS_PROGRESS_AFTER", "0"),
    )
}

#[test]
fn no_progress_bar_when_stderr_is_not_a_terminal() {
    require!(Fuse);
    let layers = Layers::new();
    let (layer, digest) = slow_layer(layers.dir());
    let run = layerfs_at_once(&[
        "ls".as_ref(),
        "--no-cache".as_ref(),
        "--digest".as_ref(),
        digest.as_ref(),
        layer.as_os_str(),
    ]);
    run.expect_success("ls");
    assert_eq!(run.stdout, "1\tbig\n");
    assert_eq!(run.stderr, "", "something was drawn on a file");

    let mount = Mount::fresh();
    let args = mount_args(&["--no-cache", "--digest", &digest], &[layer], mount.path());
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let run = layerfs_at_once(&refs);
    run.expect_success("mount");
    assert_eq!(run.stderr, "", "something was drawn on a file");
}

/// Runs `layerfs ARGS` on a pseudo-terminal through util-linux `script`
/// and returns what the terminal received.
fn on_a_terminal(args: &[&str]) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut line = format!("LAYERFS_PROGRESS_AFTER=0 {}", quote(common::mount::bin()));
    for arg in args {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    line.push_str(" >/dev/null");
    let run = run_captured(Command::new("script").args(["-qec", &line, "/dev/null"]));
    run.expect_success("script -c layerfs");
    run.stdout
}

#[test]
fn on_a_terminal_the_bar_shows_while_indexing_and_is_erased() {
    require!(Tool("script"));
    let layers = Layers::new();
    let (layer, digest) = slow_layer(layers.dir());
    let layer = layer.to_str().expect("utf-8 temp path");
    let screen = on_a_terminal(&["ls", "--no-cache", "--digest", &digest, layer]);
    let last = screen
        .rfind("index big.tar [")
        .unwrap_or_else(|| panic!("no progress bar on the terminal: {screen:?}"));
    // Two reads of the layer: the digest check and the indexing pass.
    assert!(screen.contains(" MiB/1.00 GiB "), "{screen:?}");
    assert!(
        screen[last..].contains("\x1b[2K"),
        "the bar was not erased: {:?}",
        &screen[last..]
    );

    let quiet = on_a_terminal(&["-q", "ls", "--no-cache", "--digest", &digest, layer]);
    assert!(
        !quiet.contains("index big.tar ["),
        "-q drew a bar: {quiet:?}"
    );
}

/// A datagram socket at /dev/log, where syslog(3) sends, removed when
/// dropped; `None` if something else (a syslog daemon) is there already.
struct FakeSyslog {
    socket: UnixDatagram,
}

impl FakeSyslog {
    const PATH: &'static str = "/dev/log";

    fn bind() -> Option<FakeSyslog> {
        if fs::symlink_metadata(Self::PATH).is_ok() {
            return None;
        }
        let socket = UnixDatagram::bind(Self::PATH).expect("bind /dev/log");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        Some(FakeSyslog { socket })
    }

    /// The messages received until one contains `needle` (bounded wait:
    /// the daemon logs when the failing read reaches it).
    fn until(&self, needle: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let started = Instant::now();
        let mut buf = vec![0u8; 8192];
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(n) = self.socket.recv(&mut buf) {
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                if seen.last().is_some_and(|m| m.contains(needle)) {
                    break;
                }
            }
        }
        seen
    }
}

impl Drop for FakeSyslog {
    fn drop(&mut self) {
        let _ = fs::remove_file(Self::PATH);
    }
}

#[test]
fn a_background_daemon_without_a_log_file_logs_to_syslog() {
    require!(Fuse);
    let Some(syslog) = FakeSyslog::bind() else {
        common::needs::skip("/dev/log exists; its daemon, not this test, would get the messages");
        return;
    };
    let mut layers = Layers::new();
    layers.add(
        &Layer::new(Format::Ustar)
            .file("a", vec![7u8; 4096])
            .file("z", vec![9u8; 256 * 1024]),
    );
    let mount = Mount::fresh();
    layerfs(mount_args(&["--no-cache"], &layers.paths, mount.path())).expect_success("mount");
    fs::OpenOptions::new()
        .write(true)
        .open(&layers.paths[0])
        .expect("open layer")
        .set_len(4096)
        .expect("truncate the layer");
    let err = fs::read(mount.path().join("z")).expect_err("read past the cut");
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    let needle = "truncated after it was indexed";
    let seen = syslog.until(needle);
    let message = seen
        .iter()
        .find(|m| m.contains(needle))
        .unwrap_or_else(|| panic!("no warning in syslog; got {seen:?}"));
    // Facility daemon (3 << 3) + error (3): the failed read is logged as
    // an error; ident layerfs with the pid.
    assert!(message.starts_with("<27>"), "{message}");
    assert!(message.contains(" layerfs["), "{message}");
    assert!(
        message.contains(&*layers.paths[0].to_string_lossy()),
        "the warning does not name the layer: {message}"
    );
}

/// `layerfs index` exists to fill or read the index cache: it offers no
/// `--no-cache`, and a cache it cannot open is one error line saying why.
#[test]
fn index_commands_say_why_there_is_no_cache() {
    let layers = Layers::new();
    let bundle = layers.dir().join("bundle.tar");
    let run = run_captured(
        Command::new(common::mount::bin())
            .args(["index".as_ref(), "import".as_ref(), bundle.as_os_str()])
            .env_remove("HOME")
            .env_remove("XDG_CACHE_HOME"),
    );
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert_eq!(
        run.stderr,
        "layerfs: index import needs an index cache: neither XDG_CACHE_HOME nor HOME is set (give --cache-dir DIR)\n"
    );
    let file = layers.dir().join("file");
    fs::write(&file, "not a directory").expect("write file");
    let run = layerfs([
        "index".as_ref(),
        "import".as_ref(),
        "--cache-dir".as_ref(),
        file.as_os_str(),
        bundle.as_os_str(),
    ]);
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    let line = run.stderr.strip_suffix('\n').unwrap_or(&run.stderr);
    assert!(
        line.starts_with("layerfs: index import needs an index cache: ") && !line.contains('\n'),
        "{:?}",
        run.stderr
    );
    assert!(line.contains(&*file.to_string_lossy()), "{line}");
}
