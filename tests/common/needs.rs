//! What a test needs of the machine, checked at its start: a contributor
//! without root, `/dev/fuse` or one of the tools still runs every other
//! test, and is told in one line on stderr which tests were skipped and why.
//! CI sets `LAYERFS_TEST_REQUIRE_ALL=1`, which turns each such skip into a
//! failure, so nothing is silently left out there.
//!
//! The helpers that mount or run a tool check that their test declared the
//! need ([`declared`]), so a test that forgets fails on every machine
//! rather than only on the contributor's.

use std::cell::RefCell;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// The variable that turns a skip into a failure.
pub const REQUIRE_ALL: &str = "LAYERFS_TEST_REQUIRE_ALL";

/// One thing a test cannot run without.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Root: chown, mknod, mount(8), files under /sbin or /dev.
    Root,
    /// Mounting layerfs: root and a `/dev/fuse` that opens.
    Fuse,
    /// An external program, by name on `PATH` or by absolute path.
    Tool(&'static str),
}

thread_local! {
    /// What the test on this thread declared (the harness runs each test
    /// on a thread of its own).
    static DECLARED: RefCell<Vec<Need>> = const { RefCell::new(Vec::new()) };
}

/// Returns from the calling test, after one line on stderr, unless the
/// machine has everything listed: `require!(Fuse)`,
/// `require!(Fuse, Tool("umoci"))`.
#[macro_export]
macro_rules! require {
    ($($need:expr),+ $(,)?) => {
        #[allow(unused_imports)]
        use $crate::common::needs::Need::*;
        if !$crate::common::needs::met(&[$($need),+]) {
            return;
        }
    };
}

/// Whether the machine has every need in `needs`; if not, prints why the
/// test is skipped, or panics when [`REQUIRE_ALL`] is set.
pub fn met(needs: &[Need]) -> bool {
    DECLARED.with_borrow_mut(|declared| declared.extend_from_slice(needs));
    let Some(why) = needs.iter().find_map(|&need| missing(need)) else {
        return true;
    };
    skip(&why);
    false
}

/// Says that the running test is skipped, and why; panics instead when
/// [`REQUIRE_ALL`] is set. For a condition no [`Need`] describes: the
/// caller returns from the test after it.
pub fn skip(why: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string();
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|stem| match stem.rsplit_once('-') {
            Some((name, _hash)) => name.to_string(),
            None => stem,
        })
        .unwrap_or_default();
    if std::env::var_os(REQUIRE_ALL).is_some_and(|v| !v.is_empty() && v != "0") {
        panic!("tests/{binary}.rs {test}: {why}, and {REQUIRE_ALL} is set: nothing may be skipped");
    }
    // Straight to the process's stderr: the harness captures `eprintln!`
    // and shows it only for failures.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED tests/{binary}.rs {test}: {why}; {REQUIRE_ALL}=1 makes this a failure"
    );
}

/// Why the machine lacks `need`, if it does.
fn missing(need: Need) -> Option<String> {
    match need {
        Need::Root => {
            // SAFETY: geteuid(2) cannot fail and touches no memory.
            let uid = unsafe { libc::geteuid() };
            (uid != 0).then(|| format!("needs root (runs as uid {uid})"))
        }
        Need::Fuse => missing(Need::Root).or_else(fuse_device_missing),
        Need::Tool(name) => (!on_path(name)).then(|| format!("needs `{name}`, not found")),
    }
}

/// Why `/dev/fuse` is not the FUSE device (char 10:229) or does not open,
/// if so: a container may have something else there, such as `/dev/null`.
fn fuse_device_missing() -> Option<String> {
    let device = match OpenOptions::new().read(true).write(true).open("/dev/fuse") {
        Ok(file) => file.metadata().ok().map(|m| m.rdev()),
        Err(e) => return Some(format!("needs /dev/fuse to mount (open: {e})")),
    };
    let fuse = device.is_some_and(|rdev| libc::major(rdev) == 10 && libc::minor(rdev) == 229);
    (!fuse).then(|| "needs /dev/fuse to mount (it is not the FUSE device, 10:229)".to_string())
}

/// Whether `name` is an executable file, by absolute path or on `PATH`.
fn on_path(name: &str) -> bool {
    let executable = |path: &Path| {
        path.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        return executable(Path::new(name));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(name))))
}

/// Panics unless the running test declared `need` with `require!`: called
/// by the helpers that mount or run a tool.
///
/// Threads a test starts itself are unnamed and declare nothing: only the
/// test's own thread (named after it) is checked.
pub fn declared(need: Need) {
    if std::thread::current().name().is_none() {
        return;
    }
    let ok = DECLARED.with_borrow(|declared| {
        declared.contains(&need) || (need == Need::Root && declared.contains(&Need::Fuse))
    });
    assert!(
        ok,
        "this test needs {need:?} but does not say so: start it with require!({need:?})"
    );
}
