//! The rules for every directory and file layerfs keeps in a cache
//! directory, which the README invites users to share (`/var/cache/layerfs`
//! in fstab): what is stored there is nobody else's to read, change or
//! replace, and nothing found there is followed, waited on or trusted
//! unless it is a file layerfs could have made.
//!
//! Directories are created 0700 and files 0600 whatever the umask (a umask
//! only ever removes bits), since chunk files hold raw blob bytes,
//! including those of files that are 0600 in the image. A file is only
//! opened if it is a regular file (checked before opening, so that a FIFO
//! or device planted under an entry's name is never opened, and again on
//! the open descriptor), opened with `O_NOFOLLOW` (a symlinked entry would
//! have root read or truncate whatever it points to) and `O_NONBLOCK` (a
//! FIFO swapped in between the two checks cannot block the open), owned
//! by the effective user and with no permission bits for anyone else.
//!
//! That last rule is also what makes mapping an entry safe (see
//! [`crate::sys::map_readonly`]): a mapped file that shrinks raises SIGBUS
//! in whoever reads the lost pages, and a file of ours that only we may
//! write can only be truncated by us or by root.

use std::fs::{DirBuilder, File, Metadata, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::sys;

/// Permission bits of a directory layerfs creates.
const DIR_MODE: u32 = 0o700;
/// Permission bits of a file layerfs creates.
pub(crate) const FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents, each private to the user.
pub(crate) fn create_dir_all(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Creates `dir` (a directory of layerfs' own inside the cache, such as
/// `chunks/`) private to the user, and makes it private if an older
/// layerfs created it with the umask's bits.
pub(crate) fn own_dir(dir: &Path) -> io::Result<()> {
    create_dir_all(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    check(&meta, true)?;
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// Opens the existing file `path` for reading, if it is one layerfs may
/// trust (see the module docs); a refusal is an error of kind
/// `InvalidData` saying why, a missing file `NotFound`.
pub(crate) fn open_read(path: &Path) -> io::Result<File> {
    check(&std::fs::symlink_metadata(path)?, false)?;
    let file = options().read(true).open(path).map_err(symlink_error)?;
    check(&file.metadata()?, false)?;
    Ok(file)
}

/// Opens `path` for reading and writing, creating it (0600) if missing,
/// under the same rules as [`open_read`], except that an older file of
/// ours is made private rather than refused.
pub(crate) fn open_write(path: &Path) -> io::Result<File> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => check_owner(&meta, false)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let file = options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)
        .map_err(symlink_error)?;
    let meta = file.metadata()?;
    check_owner(&meta, false)?;
    if meta.mode() & 0o077 != 0 {
        file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    }
    Ok(file)
}

/// Open options with the flags every open of a cache file takes.
fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    options
}

/// `O_NOFOLLOW`'s ELOOP, said plainly.
fn symlink_error(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        refused("is a symbolic link".into())
    } else {
        e
    }
}

/// Refuses what is not a private file (or directory, if `dir`) of ours.
fn check(meta: &Metadata, dir: bool) -> io::Result<()> {
    check_owner(meta, dir)?;
    let mode = meta.mode() & 0o7777;
    if !dir && mode & 0o077 != 0 {
        return Err(refused(format!(
            "has mode {mode:04o}: others may read or change it (layerfs writes 0600)"
        )));
    }
    Ok(())
}

/// Refuses what is not a regular file (or directory, if `dir`) owned by
/// the effective user.
fn check_owner(meta: &Metadata, dir: bool) -> io::Result<()> {
    let file_type = meta.file_type();
    let kind = if file_type.is_symlink() {
        Some("a symbolic link")
    } else if file_type.is_dir() {
        (!dir).then_some("a directory")
    } else if file_type.is_file() {
        dir.then_some("a regular file")
    } else {
        Some("a FIFO, socket or device")
    };
    if let Some(kind) = kind {
        let want = if dir { "directory" } else { "regular file" };
        return Err(refused(format!("is {kind}, not a {want}")));
    }
    let me = sys::effective_uid();
    if meta.uid() != me {
        return Err(refused(format!(
            "is owned by uid {}, not by this user (uid {me})",
            meta.uid()
        )));
    }
    Ok(())
}

fn refused(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_private_regular_files_of_ours_are_opened() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, b"x").unwrap();
        std::fs::set_permissions(&good, Permissions::from_mode(0o600)).unwrap();
        open_read(&good).unwrap();

        let loose = dir.path().join("loose");
        std::fs::write(&loose, b"x").unwrap();
        std::fs::set_permissions(&loose, Permissions::from_mode(0o644)).unwrap();
        let err = open_read(&loose).unwrap_err();
        assert!(err.to_string().contains("mode 0644"), "{err}");
        // Ours but loose: made private when opened to be written.
        open_write(&loose).unwrap();
        assert_eq!(std::fs::metadata(&loose).unwrap().mode() & 0o777, 0o600);

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        for err in [
            open_read(&link).unwrap_err(),
            open_write(&link).unwrap_err(),
        ] {
            assert!(err.to_string().contains("symbolic link"), "{err}");
        }

        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        for err in [
            open_read(&fifo).unwrap_err(),
            open_write(&fifo).unwrap_err(),
        ] {
            assert!(err.to_string().contains("FIFO"), "{err}");
        }

        let err = open_read(dir.path()).unwrap_err();
        assert!(err.to_string().contains("a directory"), "{err}");
        assert_eq!(
            open_read(&dir.path().join("missing")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn directories_and_files_are_private_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        create_dir_all(&nested).unwrap();
        let made = open_write(&nested.join("f")).unwrap();
        drop(made);
        // An older layerfs made `chunks` with the umask's bits.
        let chunks = dir.path().join("chunks");
        DirBuilder::new().mode(0o755).create(&chunks).unwrap();
        std::fs::set_permissions(&chunks, Permissions::from_mode(0o755)).unwrap();
        own_dir(&chunks).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&nested), 0o700);
        assert_eq!(mode(&nested.join("f")), 0o600);
        assert_eq!(mode(&chunks), 0o700);
    }
}
