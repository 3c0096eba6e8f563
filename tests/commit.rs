//! `layerfs commit`: a kernel overlayfs upper directory, after every kind
//! of change made through the overlay, written as one OCI layer; the lower
//! layer plus that layer then mount as exactly the tree the overlay showed.
//! The upper is made by the kernel itself (lowerdir, upperdir, workdir on
//! plain directories), so its whiteouts and opaque directories are
//! overlayfs' own, not the test's idea of them.

mod common;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::mount::{layerfs, Run};
use common::oci::umoci_rootfs;
use common::tree::{snapshot, Fields, Mtime, Snapshot};
use common::{assert_tree, Expected, Mount};

/// A kernel overlay mount, taken down on drop.
struct Overlay {
    mountpoint: PathBuf,
}

impl Overlay {
    /// Mounts an overlay of `lower` with `upper` and `work` at `mountpoint`,
    /// with the features that store entries by reference kept off.
    fn mount(lower: &Path, upper: &Path, work: &Path, mountpoint: &Path) -> Overlay {
        let data = format!(
            "lowerdir={},upperdir={},workdir={},redirect_dir=off,index=off,metacopy=off",
            lower.display(),
            upper.display(),
            work.display()
        );
        let c = |s: &str| CString::new(s).expect("no NUL");
        let target = CString::new(mountpoint.as_os_str().as_bytes()).expect("no NUL");
        let (source, fstype, data) = (c("overlay"), c("overlay"), c(&data));
        // SAFETY: every pointer is a NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        assert_eq!(rc, 0, "mount overlay: {}", std::io::Error::last_os_error());
        Overlay {
            mountpoint: mountpoint.to_path_buf(),
        }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if let Ok(target) = CString::new(self.mountpoint.as_os_str().as_bytes()) {
            // SAFETY: a NUL-terminated path; MNT_DETACH never blocks.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

fn sh(script: &str, dir: &Path) {
    let out = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The lower tree: files, a directory of files, a hardlink pair, a
/// symlink, a directory to be replaced by a file and one made opaque.
fn make_lower(dir: &Path) {
    sh(
        "mkdir -p etc srv/data gone keep/sub opaque/old
         printf 'base\\n' > etc/config
         printf 'x' > etc/remove-me
         printf '1' > srv/data/one; printf '2' > srv/data/two
         printf 'g' > gone/file
         printf 'file then dir' > becomes-dir
         printf 'k' > keep/sub/k
         printf 'o' > opaque/old/inside
         printf 'linked' > etc/shared; ln etc/shared etc/shared-2
         ln -s etc/config link
         chmod 0640 etc/config",
        dir,
    );
}

/// Every kind of change, made through the overlay.
fn change(root: &Path) {
    sh(
        "printf 'edited\\n' >> etc/config
         rm etc/remove-me
         rm -r gone
         rm becomes-dir; mkdir becomes-dir; printf 'now a dir' > becomes-dir/f
         rm -r keep/sub; printf 'was a dir' > keep/sub
         mv srv/data srv/renamed
         rm -r opaque; mkdir -p opaque/new; printf 'n' > opaque/new/f
         chmod 0600 etc/config
         chown 12:34 srv/renamed/one
         ln srv/renamed/two two-again
         setfattr -n user.note -v hello etc/shared
         mkfifo fifo
         mkdir many; i=0; while [ $i -lt 2000 ]; do printf $i > many/f$i; i=$((i+1)); done",
        root,
    );
}

fn commit(upper: &Path, out: &Path) -> Run {
    layerfs([
        "commit".as_ref(),
        upper.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ])
}

/// What the overlay shows, to compare with the committed stack. One
/// figure is overlayfs' and not the tree's: without `index=on`, a copy-up
/// breaks a hardlink, and the lower name left behind still reports the
/// lower file's link count. Unpacking the two layers (as a runtime would)
/// gives it a count of 1, as the committed stack does.
fn view(root: &Path) -> Snapshot {
    let mut shown = snapshot(root);
    if let Some(node) = shown.get_mut(&b"etc/shared-2"[..]) {
        assert_eq!(node.nlink, 2, "overlayfs' count of a broken hardlink");
        node.nlink = 1;
    }
    shown
}

#[test]
fn a_committed_upper_mounts_as_the_overlay_showed_it() {
    require!(Fuse, Tool("umoci"), Tool("setfattr"));
    let work = tempfile::tempdir().expect("tempdir");
    let at = |name: &str| work.path().join(name);
    for dir in ["lower", "upper", "work", "merged"] {
        fs::create_dir(at(dir)).expect("mkdir");
    }
    make_lower(&at("lower"));
    layerfs([
        "create".as_ref(),
        at("lower").as_os_str(),
        "-o".as_ref(),
        at("lower.tar").as_os_str(),
    ])
    .expect_success("layerfs create lower");

    let shown = {
        let overlay = Overlay::mount(&at("lower"), &at("upper"), &at("work"), &at("merged"));
        change(&overlay.mountpoint);
        view(&overlay.mountpoint)
    };
    // overlayfs' own forms are in the upper: a 0/0 whiteout and an opaque
    // directory.
    let removed = fs::symlink_metadata(at("upper/etc/remove-me")).expect("whiteout");
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &removed.file_type()
    ));

    commit(&at("upper"), &at("changes.tar")).expect_success("layerfs commit");
    let mount = Mount::new(&[at("lower.tar"), at("changes.tar")]);
    let fields = Fields {
        xattrs: true,
        mtime: Mtime::Nanoseconds,
    };
    assert_tree(mount.path(), &Expected::from_snapshot(&shown, fields));

    // umoci (Go's archive/tar, as the runtimes) unpacks the two layers to
    // the same tree; it does not promise xattrs or sub-second times.
    let lower = fs::read(at("lower.tar")).expect("read lower");
    let changes = fs::read(at("changes.tar")).expect("read changes");
    let unpacked = umoci_rootfs(&at("umoci"), &[&lower, &changes]);
    let coarse = Fields {
        xattrs: false,
        mtime: Mtime::Seconds,
    };
    assert_tree(&unpacked, &Expected::from_snapshot(&shown, coarse));

    // GNU tar reads the layer without a word, markers and all.
    let out = Command::new("tar")
        .arg("-tvf")
        .arg(at("changes.tar"))
        .output()
        .expect("run tar");
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    let listing = String::from_utf8_lossy(&out.stdout);
    for marker in ["etc/.wh.remove-me", "./.wh.gone", "opaque/.wh..wh..opq"] {
        let marker = marker.trim_start_matches("./");
        assert!(
            listing.contains(marker),
            "{marker} missing from:\n{listing}"
        );
    }
}

#[test]
fn entries_no_layer_can_hold_are_refused_by_name() {
    require!(Root, Tool("setfattr"));
    let work = tempfile::tempdir().expect("tempdir");
    let upper = work.path().join("upper");
    fs::create_dir_all(upper.join("d")).expect("mkdir");
    // A file named like a whiteout, made through the mount.
    fs::write(upper.join("d/.wh.made-by-hand"), b"").expect("write");
    let run = commit(&upper, &work.path().join("out.tar"));
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains(".wh.made-by-hand") && run.stderr.contains("cannot be committed"),
        "{}",
        run.stderr
    );
    fs::remove_file(upper.join("d/.wh.made-by-hand")).expect("rm");
    // A directory renamed with redirect_dir=on.
    sh("setfattr -n trusted.overlay.redirect -v /old d", &upper);
    let run = commit(&upper, &work.path().join("out.tar"));
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("redirect"), "{}", run.stderr);
    assert!(!work.path().join("out.tar").exists(), "nothing is written");
}
