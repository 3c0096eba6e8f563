//! `layerfs mount --upper`: a writable view of a stack. The stack is
//! mounted read-only by layerfs (FUSE, its usual background daemon) at a
//! private lower mountpoint, and the kernel's overlayfs is mounted over it
//! with the user's upper directory: writes, copy-up, whiteouts and renames
//! are the kernel's, as on any overlay mount, and the upper holds exactly
//! the changes, in overlayfs' forms (what `layerfs create --whiteouts`
//! reads).
//!
//! The private directories live beside the upper directory, hidden:
//! `.NAME.layerfs-lower` (the lower mountpoint, removed on unmount) and
//! `.NAME.layerfs-work` (the default work directory, kept: overlayfs needs
//! one on the upper's filesystem, and reuses it on the next mount). Being
//! derived from the upper, the lower is found again by the background
//! daemon, and one upper cannot be mounted twice at once (its lower would
//! already be a mountpoint).

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::fuse::mountinfo;
use crate::sys;

/// overlayfs' features that would put changes in forms that are not a
/// plain OCI layer (redirects, metadata-only copies, inode index): all off,
/// so that the upper can be committed as a layer.
pub const FEATURES_OFF: &str = "index=off,nfs_export=off,redirect_dir=off,metacopy=off";

/// What can go wrong setting up or taking down a writable mount.
#[derive(Debug, thiserror::Error)]
pub enum UpperError {
    /// The upper or work directory cannot be used.
    #[error("{what} {}: {reason}", path.display())]
    BadDir {
        /// `--upper` or `--work`.
        what: &'static str,
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The upper is already the upper of a writable mount.
    #[error("--upper {}: already in use by a writable mount (its lower {} is mounted)", upper.display(), lower.display())]
    InUse {
        /// The upper directory.
        upper: PathBuf,
        /// Its private lower mountpoint.
        lower: PathBuf,
    },
    /// Not root: the kernel overlay mount cannot be made.
    #[error("{}: mount --upper needs root (CAP_SYS_ADMIN) for the kernel overlay mount; in a user namespace overlayfs also needs the `userxattr` option, which layerfs does not set", mountpoint.display())]
    NotRoot {
        /// The mountpoint.
        mountpoint: PathBuf,
    },
    /// A mount or unmount step failed.
    #[error("{}: {what}: {source}", path.display())]
    Io {
        /// The path the step was about.
        path: PathBuf,
        /// The step.
        what: &'static str,
        /// What the OS said.
        source: io::Error,
    },
}

/// The directories of one writable mount, all absolute.
#[derive(Debug, Clone)]
pub struct Writable {
    /// The user's upper directory.
    pub upper: PathBuf,
    /// overlayfs' work directory.
    pub work: PathBuf,
    /// Where the stack is mounted read-only.
    pub lower: PathBuf,
    /// The directories [`prepare`] created, newest last: a mount that
    /// fails removes them again (see [`Writable::discard`]).
    created: Vec<PathBuf>,
}

impl Writable {
    /// After a failed mount: removes the directories [`prepare`] created,
    /// as long as they are empty (a failed mount wrote nothing to them), so
    /// that a mistyped command leaves no litter.
    pub fn discard(&self) {
        for dir in self.created.iter().rev() {
            if mountinfo::is_mountpoint(dir).unwrap_or(true) {
                continue;
            }
            if let Err(e) = std::fs::remove_dir(dir) {
                log::warn!("{}: cannot remove it: {e}", dir.display());
            }
        }
    }
}

/// A hidden sibling of `upper` (canonical): `.NAME.layerfs-SUFFIX`.
fn sibling(upper: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(upper.file_name().unwrap_or(upper.as_os_str()));
    name.push(".layerfs-");
    name.push(suffix);
    upper.with_file_name(name)
}

/// The private lower mountpoint of `upper` (canonical).
pub fn lower_of_upper(upper: &Path) -> PathBuf {
    sibling(upper, "lower")
}

/// Checks before anything is mounted that the writable mount can be made:
/// root, upper a directory (created if missing), work a directory on the
/// same filesystem (created beside the upper if not given), the lower
/// mountpoint free (created).
pub fn prepare(
    upper: &Path,
    work: Option<&Path>,
    mountpoint: &Path,
) -> Result<Writable, UpperError> {
    if !sys::is_root() {
        return Err(UpperError::NotRoot {
            mountpoint: mountpoint.to_path_buf(),
        });
    }
    let mut created = Vec::new();
    let result = prepare_dirs(upper, work, &mut created);
    if result.is_err() {
        for dir in created.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
    result
}

/// [`prepare`]'s checks, each directory it creates pushed on `created`.
fn prepare_dirs(
    upper: &Path,
    work: Option<&Path>,
    created: &mut Vec<PathBuf>,
) -> Result<Writable, UpperError> {
    let upper = directory("--upper", upper, created)?;
    let work = match work {
        Some(work) => directory("--work", work, created)?,
        None => directory("--work", &sibling(&upper, "work"), created)?,
    };
    let device = |what, path: &Path| {
        std::fs::metadata(path)
            .map(|m| m.dev())
            .map_err(|e| bad(what, path, e.to_string()))
    };
    if device("--work", &work)? != device("--upper", &upper)? {
        return Err(bad(
            "--work",
            &work,
            format!(
                "not on the filesystem of the upper {} (overlayfs needs both on one)",
                upper.display()
            ),
        ));
    }
    if work.starts_with(&upper) || upper.starts_with(&work) {
        return Err(bad(
            "--work",
            &work,
            format!("overlaps the upper {}", upper.display()),
        ));
    }
    let lower = lower_of_upper(&upper);
    let in_table = mountinfo::is_mountpoint(&lower).map_err(|source| UpperError::Io {
        path: lower.clone(),
        what: "reading the mount table",
        source,
    })?;
    if in_table {
        return Err(UpperError::InUse { upper, lower });
    }
    match std::fs::create_dir(&lower) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && lower.is_dir() => {}
        Err(source) => {
            return Err(UpperError::Io {
                path: lower,
                what: "creating the lower mountpoint",
                source,
            })
        }
    }
    Ok(Writable {
        upper,
        work,
        lower,
        created: std::mem::take(created),
    })
}

fn bad(what: &'static str, path: &Path, reason: String) -> UpperError {
    UpperError::BadDir {
        what,
        path: path.to_path_buf(),
        reason,
    }
}

/// `path` as an existing directory, canonical; created (one level) if
/// missing, and then pushed on `created`.
fn directory(
    what: &'static str,
    path: &Path,
    created: &mut Vec<PathBuf>,
) -> Result<PathBuf, UpperError> {
    let made = match std::fs::create_dir(path) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(bad(what, path, e.to_string())),
    };
    let canonical = path
        .canonicalize()
        .map_err(|e| bad(what, path, e.to_string()))?;
    if made {
        created.push(canonical.clone());
    }
    let meta = std::fs::metadata(&canonical).map_err(|e| bad(what, path, e.to_string()))?;
    if !meta.is_dir() {
        return Err(bad(what, path, "not a directory".into()));
    }
    Ok(canonical)
}

/// Mounts the kernel overlay at `mountpoint` over `writable`'s lower.
pub fn mount_overlay(writable: &Writable, mountpoint: &Path) -> Result<(), UpperError> {
    let data = overlay_data(writable);
    sys::mount("overlay", mountpoint, "overlay", 0, &data).map_err(|source| {
        let what = match source.raw_os_error() {
            Some(libc::EPERM) => "overlay mount not permitted (in a user namespace overlayfs needs `userxattr`, which layerfs does not set)",
            _ => "overlay mount refused (the kernel log, `dmesg`, says why)",
        };
        UpperError::Io {
            path: mountpoint.to_path_buf(),
            what,
            source,
        }
    })
}

/// The overlay's mount data: the three directories, escaped as overlayfs
/// splits its options (`,` between options, `:` between lower layers,
/// `\` escaping either), then [`FEATURES_OFF`].
fn overlay_data(writable: &Writable) -> String {
    let escaped = |path: &Path| {
        let mut out = String::new();
        for c in path.to_string_lossy().chars() {
            if matches!(c, ',' | ':' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out
    };
    format!(
        "lowerdir={},upperdir={},workdir={},{FEATURES_OFF}",
        escaped(&writable.lower),
        escaped(&writable.upper),
        escaped(&writable.work)
    )
}

/// If the mount at `target` (as the mount table spells it) is the overlay
/// of a writable mount, its lower mountpoint: the first `lowerdir=` of its
/// super options, when that is named as ours and is a FUSE mount. Read from the mount
/// table only, so a dead or stopped daemon below is never asked anything.
pub fn writable_lower(target: &Path) -> Result<Option<PathBuf>, UpperError> {
    let table_error = |source| UpperError::Io {
        path: target.to_path_buf(),
        what: "reading the mount table",
        source,
    };
    let Some(entry) = mountinfo::entry(target).map_err(table_error)? else {
        return Ok(None);
    };
    if entry.fs_type != "overlay" {
        return Ok(None);
    }
    let Some(lower) = first_lowerdir(&entry.super_options) else {
        return Ok(None);
    };
    // Another overlay over a layerfs mount is the user's own: its lower
    // is not taken down with it.
    let ours = is_private_lower(&lower)
        && mountinfo::entry(&lower)
            .map_err(table_error)?
            .is_some_and(|e| e.fs_type == "fuse" || e.fs_type.starts_with("fuse."));
    Ok(ours.then_some(lower))
}

/// The first lower directory named by an overlay's (escaped) super
/// options.
fn first_lowerdir(options: &[u8]) -> Option<PathBuf> {
    let value = options
        .split(|&b| b == b',')
        .find_map(|option| option.strip_prefix(b"lowerdir="))?;
    let value = mountinfo::unescape(value);
    let mut first = Vec::new();
    let mut bytes = value.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => first.extend(bytes.next()),
            b':' => break,
            _ => first.push(b),
        }
    }
    (!first.is_empty()).then(|| PathBuf::from(OsString::from_vec(first)))
}

/// Whether `path` is named as [`lower_of_upper`] names a lower mountpoint.
fn is_private_lower(path: &Path) -> bool {
    path.file_name().is_some_and(|name| {
        let name = name.as_bytes();
        name.starts_with(b".") && name.ends_with(b".layerfs-lower")
    })
}

/// Unmounts the overlay at `target`.
pub fn unmount_overlay(target: &Path, lazy: bool) -> Result<(), UpperError> {
    sys::umount(target, lazy).map_err(|source| UpperError::Io {
        path: target.to_path_buf(),
        what: if source.raw_os_error() == Some(libc::EBUSY) {
            "unmount failed (in use; `layerfs umount -l` detaches it lazily)"
        } else {
            "unmount failed"
        },
        source,
    })
}

/// Removes the private lower mountpoint once nothing is mounted there;
/// only an empty directory named as ours is ever removed.
pub fn remove_lower(lower: &Path) {
    if !is_private_lower(lower) || mountinfo::is_mountpoint(lower).unwrap_or(true) {
        return;
    }
    if let Err(e) = std::fs::remove_dir(lower) {
        log::warn!(
            "{}: cannot remove the lower mountpoint: {e}",
            lower.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_directories_are_hidden_siblings_of_the_upper() {
        let upper = Path::new("/srv/changes");
        assert_eq!(
            lower_of_upper(upper),
            Path::new("/srv/.changes.layerfs-lower")
        );
        assert_eq!(
            sibling(upper, "work"),
            Path::new("/srv/.changes.layerfs-work")
        );
        assert!(is_private_lower(&lower_of_upper(upper)));
        assert!(!is_private_lower(Path::new("/srv/lower")));
    }

    #[test]
    fn overlay_data_escapes_separators_and_turns_features_off() {
        let writable = Writable {
            upper: "/u,p".into(),
            work: "/w".into(),
            lower: "/a:b\\c".into(),
            created: Vec::new(),
        };
        assert_eq!(
            overlay_data(&writable),
            r"lowerdir=/a\:b\\c,upperdir=/u\,p,workdir=/w,index=off,nfs_export=off,redirect_dir=off,metacopy=off"
        );
    }

    #[test]
    fn first_lowerdir_unescapes_and_stops_at_the_next_layer() {
        assert_eq!(
            first_lowerdir(br"rw,lowerdir=/x\054y\:z:/second,upperdir=/u"),
            Some(PathBuf::from("/x,y:z"))
        );
        assert_eq!(first_lowerdir(b"rw,upperdir=/u"), None);
    }
}
