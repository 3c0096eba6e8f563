//! The directory-relative system calls `get` writes with: every name is
//! created or opened relative to a directory descriptor, and nothing below
//! the destination is ever reached through a symlink (`O_NOFOLLOW`,
//! `AT_SYMLINK_NOFOLLOW`), so a tree cannot steer a write out of it.
//! Every `unsafe` block of `get` is in this file.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

/// `name` as the C string the calls take (tree names hold no NUL).
fn c_name(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by open(2)/openat(2) and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the destination directory the user named (symlinks followed:
/// the user chose it).
pub fn open_root(dir: &Path) -> io::Result<OwnedFd> {
    let path = c_name(std::os::unix::ffi::OsStrExt::as_bytes(dir.as_os_str()))?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    // SAFETY: `path` is a valid C string.
    owned(unsafe { libc::open(path.as_ptr(), flags) })
}

/// Opens the directory `name` in `dir`; a symlink there is refused (ELOOP).
pub fn open_dir(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<OwnedFd> {
    let name = c_name(name)?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `dir` is an open descriptor and `name` a valid C string.
    owned(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) })
}

/// Makes the directory `name` in `dir`; one already there is no error.
pub fn mkdir(dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> io::Result<()> {
    let name = c_name(name)?;
    // SAFETY: as in `open_dir`.
    match check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        done => done,
    }
}

/// Creates the new regular file `name` in `dir` (never through a symlink:
/// `O_EXCL` refuses any name already there).
pub fn create_file(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<File> {
    let name = c_name(name)?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: as in `open_dir`.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, 0o600 as libc::c_uint) };
    owned(fd).map(File::from)
}

/// Removes what is at `name` in `dir` unless it is a directory, so that
/// an extracted entry replaces it as tar's would; nothing there is no error.
pub fn remove(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let name = c_name(name)?;
    // SAFETY: as in `open_dir`.
    match check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) }) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        done => done,
    }
}

/// Makes `name` in `dir` a symlink to `target`.
pub fn symlink(target: &[u8], dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let (target, name) = (c_name(target)?, c_name(name)?);
    // SAFETY: as in `open_dir`.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
}

/// Gives the node at `from` (relative to `from_dir`, its last component
/// not followed) the second name `name` in `dir`.
pub fn link(
    from_dir: BorrowedFd<'_>,
    from: &[u8],
    dir: BorrowedFd<'_>,
    name: &[u8],
) -> io::Result<()> {
    let (from, name) = (c_name(from)?, c_name(name)?);
    // SAFETY: as in `open_dir`.
    check(unsafe {
        libc::linkat(
            from_dir.as_raw_fd(),
            from.as_ptr(),
            dir.as_raw_fd(),
            name.as_ptr(),
            0,
        )
    })
}

/// Makes the device or fifo `name` in `dir`; `mode` holds its type.
pub fn mknod(dir: BorrowedFd<'_>, name: &[u8], mode: u32, rdev: (u32, u32)) -> io::Result<()> {
    let name = c_name(name)?;
    let dev = libc::makedev(rdev.0, rdev.1);
    // SAFETY: as in `open_dir`.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, dev) })
}

/// The owner of `name` in `dir`, a symlink itself rather than its target.
pub fn chown(dir: BorrowedFd<'_>, name: &[u8], uid: u32, gid: u32) -> io::Result<()> {
    let name = c_name(name)?;
    let flags = libc::AT_SYMLINK_NOFOLLOW;
    // SAFETY: as in `open_dir`.
    check(unsafe { libc::fchownat(dir.as_raw_fd(), name.as_ptr(), uid, gid, flags) })
}

/// The permission bits of `name` in `dir`, which the caller just made as
/// a device or fifo (fchmodat cannot refuse to follow a symlink).
pub fn chmod(dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> io::Result<()> {
    let name = c_name(name)?;
    // SAFETY: as in `open_dir`.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) })
}

fn timespecs(sec: i64, nsec: u32) -> [libc::timespec; 2] {
    let time = libc::timespec {
        tv_sec: sec as libc::time_t,
        tv_nsec: libc::c_long::from(nsec.min(999_999_999)),
    };
    [time, time]
}

/// The modification (and access) time of `name` in `dir`, a symlink
/// itself rather than its target.
pub fn set_mtime(dir: BorrowedFd<'_>, name: &[u8], sec: i64, nsec: u32) -> io::Result<()> {
    let name = c_name(name)?;
    let times = timespecs(sec, nsec);
    let flags = libc::AT_SYMLINK_NOFOLLOW;
    // SAFETY: as in `open_dir`; `times` holds two timespecs.
    check(unsafe { libc::utimensat(dir.as_raw_fd(), name.as_ptr(), times.as_ptr(), flags) })
}

/// The modification (and access) time of an open file or directory.
pub fn set_fd_mtime(fd: BorrowedFd<'_>, sec: i64, nsec: u32) -> io::Result<()> {
    let times = timespecs(sec, nsec);
    // SAFETY: `fd` is an open descriptor; `times` holds two timespecs.
    check(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) })
}

/// The permission bits of an open file or directory.
pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: `fd` is an open descriptor.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) })
}

/// Sets one extended attribute of an open file or directory.
pub fn set_xattr(fd: BorrowedFd<'_>, name: &[u8], value: &[u8]) -> io::Result<()> {
    let name = c_name(name)?;
    // SAFETY: `fd` is open, `name` a C string, `value` valid for its length.
    check(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// Sets one extended attribute of `name` in `dir`, a symlink itself rather
/// than its target (through `/proc/self/fd`: there is no `lsetxattrat`).
pub fn set_xattr_at(
    dir: BorrowedFd<'_>,
    name: &[u8],
    xattr: &[u8],
    value: &[u8],
) -> io::Result<()> {
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name);
    let (path, xattr) = (c_name(&path)?, c_name(xattr)?);
    // SAFETY: `path` and `xattr` are C strings, `value` valid for its length.
    check(unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            xattr.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}
