//! Who may see and read a mount (issue 6, part 3): only the mounting user
//! unless `allow_other`; each file's mode and owner enforced by the kernel
//! (`default_permissions`) unless `no_default_permissions`; `nosuid,nodev`
//! unless `suid`/`dev`. Other users are played by uid/gid 65534 through
//! `setpriv`, so these tests run as root.

mod common;

use std::path::Path;
use std::process::Command;

use common::mount::{mountinfo_lines, run_captured};
use common::{Layer, Layers, Mount};

/// The uid and gid of the other user (`nobody` on most systems).
const OTHER: u32 = 65534;

/// A root-owned tree with one file of each access class.
fn stack() -> Layers {
    let mut stack = Layers::new();
    stack.add(
        &Layer::default()
            .file("public", "public\n")
            .mode(0o644)
            .file("secret", "secret\n")
            .mode(0o600)
            .dir("private")
            .mode(0o700)
            .file("private/inside", "inside\n")
            .mode(0o644)
            .file("theirs", "theirs\n")
            .mode(0o600)
            .owner(u64::from(OTHER), u64::from(OTHER))
            .file("suid-tool", "#!/bin/sh\n")
            .mode(0o4755),
    );
    stack
}

/// What the other user gets from `COMMAND... PATH`: the output, or the
/// error the command printed, less its prefix naming the command and file.
fn as_other(command: &[&str], path: &Path) -> Result<String, String> {
    let ids = OTHER.to_string();
    let run = run_captured(
        Command::new("setpriv")
            .args(["--reuid", &ids, "--regid", &ids, "--clear-groups", "--"])
            .args(command)
            .arg(path),
    );
    if run.status.success() {
        return Ok(run.stdout);
    }
    let reason = run
        .stderr
        .trim_end()
        .rsplit(": ")
        .next()
        .unwrap_or_default();
    Err(reason.to_string())
}

/// One check: the command, the path in the mount, what the other user gets.
type Case<'a> = (&'a [&'a str], &'a str, Result<&'a str, &'a str>);

/// Runs each case as the other user in `mount`.
fn expect_as_other(mount: &Mount, cases: &[Case<'_>]) {
    for (command, path, want) in cases {
        let got = as_other(command, &mount.join(path));
        let want = want.map(str::to_string).map_err(str::to_string);
        assert_eq!(got, want, "{command:?} {path}");
    }
}

const DENIED: &str = "Permission denied";

/// Makes the directory holding the mountpoint (a 0700 temporary
/// directory) passable for everyone, so that what the other user meets is
/// the mount's own answer.
fn open_parent(mount: &Mount) -> &Mount {
    use std::os::unix::fs::PermissionsExt;
    let parent = mount.path().parent().expect("mountpoint parent");
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755))
        .expect("chmod mountpoint parent");
    mount
}

#[test]
fn by_default_no_other_user_sees_the_tree() {
    require!(Fuse);
    let stack = stack();
    let mount = stack.mount();
    open_parent(&mount);
    expect_as_other(
        &mount,
        &[
            (&["cat"], "public", Err(DENIED)),
            (&["ls"], "", Err(DENIED)),
        ],
    );
    // The mounting user (root) reads everything.
    assert_eq!(
        std::fs::read_to_string(mount.join("secret")).expect("root reads secret"),
        "secret\n"
    );
}

#[test]
fn allow_other_lets_each_files_mode_decide() {
    require!(Fuse);
    let stack = stack();
    let mount = Mount::with_args(&["-o", "allow_other"], &stack.paths);
    open_parent(&mount);
    expect_as_other(
        &mount,
        &[
            (&["cat"], "public", Ok("public\n")),
            (&["cat"], "theirs", Ok("theirs\n")),
            (&["cat"], "secret", Err(DENIED)),
            (&["ls"], "private", Err(DENIED)),
            (&["cat"], "private/inside", Err(DENIED)),
            (&["test", "-r"], "secret", Err("")),
            (&["test", "-r"], "public", Ok("")),
        ],
    );
}

#[test]
fn no_default_permissions_opens_every_file_to_whoever_sees_the_tree() {
    require!(Fuse);
    let stack = stack();
    let mount = Mount::with_args(&["-o", "allow_other,no_default_permissions"], &stack.paths);
    open_parent(&mount);
    expect_as_other(
        &mount,
        &[
            (&["cat"], "secret", Ok("secret\n")),
            (&["cat"], "private/inside", Ok("inside\n")),
            // access(2) agrees with open(2); a directory can be entered.
            (&["test", "-r"], "secret", Ok("")),
            (&["test", "-x"], "private", Ok("")),
            (&["test", "-x"], "secret", Err("")),
        ],
    );
    let lines = mountinfo_lines(mount.path());
    assert!(
        !lines.concat().contains("default_permissions"),
        "default_permissions still set: {lines:?}"
    );
}

/// The per-mount options (field 6) and the super options (last field) of
/// the mount at `path`.
fn mount_options(path: &Path) -> (Vec<String>, Vec<String>) {
    let lines = mountinfo_lines(path);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let fields: Vec<&str> = lines[0].split(' ').collect();
    let split = |f: &str| f.split(',').map(str::to_string).collect();
    (split(fields[5]), split(fields[fields.len() - 1]))
}

#[test]
fn nosuid_nodev_and_permission_checks_by_default_and_changed_by_options() {
    require!(Fuse);
    let stack = stack();
    let has = |list: &[String], o: &str| list.iter().any(|x| x == o);
    let mount = stack.mount();
    let (per_mount, sb) = mount_options(mount.path());
    for wanted in ["ro", "nosuid", "nodev"] {
        assert!(has(&per_mount, wanted), "{wanted} missing: {per_mount:?}");
    }
    assert!(has(&sb, "default_permissions"), "{sb:?}");
    assert!(!has(&sb, "allow_other"), "{sb:?}");
    drop(mount);

    let mount = Mount::with_args(&["-o", "suid,dev,allow_other"], &stack.paths);
    let (per_mount, sb) = mount_options(mount.path());
    for unwanted in ["nosuid", "nodev"] {
        assert!(!has(&per_mount, unwanted), "{unwanted} set: {per_mount:?}");
    }
    assert!(has(&sb, "allow_other"), "{sb:?}");
    assert!(has(&sb, "default_permissions"), "{sb:?}");
}
