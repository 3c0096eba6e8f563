//! Opening `-o FILE` the way `tar -f FILE` does, for every command that
//! writes one (`export`, `create`, `diff`, `index export`).
//!
//! What is at FILE decides:
//!
//! - nothing, or a regular file: the output is written under a temporary
//!   name in the same directory (`.NAME.XXXXXX.part`) and renamed over
//!   FILE once complete, so a failed or interrupted write never leaves a
//!   partial output where one was expected, nor clobbers what was there;
//! - a character or block device or a FIFO: it is opened and written into
//!   (a rename would replace `/dev/null` with a regular file, and a reader
//!   waiting on the FIFO would never get a byte);
//! - a symlink: followed, as tar does; the file it leads to is treated as
//!   above, the temporary name going beside it, so the link itself is
//!   never replaced. A dangling one is refused: writing through it would
//!   create a file wherever it points;
//! - a directory or a socket: refused.
//!
//! A new file gets mode 0666 less the umask, as tar and cp create files,
//! whatever the command; a replaced file gets the same, not its old mode.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::OutputError;
use crate::sys::RemovedOnSignal;

/// An output file being written; [`OutputFile::commit`] puts it in place.
pub struct OutputFile {
    /// FILE as given, for messages.
    target: PathBuf,
    way: Way,
}

enum Way {
    /// Written under a temporary name, renamed over `dest` when complete.
    Replace {
        temp: tempfile::NamedTempFile,
        /// Where the rename goes: FILE, or where its symlink leads.
        dest: PathBuf,
        /// Removes `temp` if a signal ends the process first. Declared after
        /// `temp`, so it is dropped (and the path forgotten) after the file
        /// is removed.
        _on_signal: RemovedOnSignal,
    },
    /// A device or FIFO, written into.
    Stream(File),
}

impl OutputFile {
    /// Opens `path` as the rules above say. A FIFO's open waits for a
    /// reader, as a shell's redirection does.
    pub fn open(path: &Path) -> Result<OutputFile, OutputError> {
        let io_error = |source| OutputError::Io {
            target: path.display().to_string(),
            source,
        };
        let way = match classify(path)? {
            Kind::Replace(dest) => {
                let temp = temporary_beside(&dest).map_err(io_error)?;
                let absolute = std::path::absolute(temp.path()).map_err(io_error)?;
                let on_signal = RemovedOnSignal::register(&absolute);
                log::debug!(
                    "{}: writing {} until complete",
                    path.display(),
                    absolute.display()
                );
                Way::Replace {
                    temp,
                    dest,
                    _on_signal: on_signal,
                }
            }
            Kind::Stream => Way::Stream(open_stream(path)?),
        };
        Ok(OutputFile {
            target: path.to_path_buf(),
            way,
        })
    }

    /// Puts a complete output in place: syncs and renames a temporary
    /// file; a device or FIFO has nothing left to do (every byte was
    /// written, and neither can be synced or renamed).
    pub fn commit(self) -> Result<(), OutputError> {
        let io_error = |source| OutputError::Io {
            target: self.target.display().to_string(),
            source,
        };
        match self.way {
            Way::Replace {
                temp,
                dest,
                _on_signal,
            } => {
                temp.as_file().sync_all().map_err(io_error)?;
                temp.persist(&dest).map_err(|e| io_error(e.error))?;
                Ok(())
            }
            Way::Stream(_) => Ok(()),
        }
    }
}

impl Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.way {
            Way::Replace { temp, .. } => temp.write(buf),
            Way::Stream(file) => file.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.way {
            Way::Replace { temp, .. } => temp.flush(),
            Way::Stream(file) => file.flush(),
        }
    }
}

/// How an output path is written.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    /// Through a temporary file renamed over this path.
    Replace(PathBuf),
    /// Opened and written into.
    Stream,
}

/// Decides from what is at `path` (following a symlink) how to write it.
fn classify(path: &Path) -> Result<Kind, OutputError> {
    let io_error = |source| OutputError::Io {
        target: path.display().to_string(),
        source,
    };
    let here = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Kind::Replace(path.to_path_buf()))
        }
        other => other.map_err(io_error)?,
    };
    let is_link = here.file_type().is_symlink();
    let meta = if is_link {
        match fs::metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(OutputError::DanglingSymlink {
                    path: path.to_path_buf(),
                    points_to: fs::read_link(path).unwrap_or_default(),
                })
            }
            other => other.map_err(io_error)?,
        }
    } else {
        here
    };
    let kind = meta.file_type();
    let refuse = |what| OutputError::NotAFile {
        path: path.to_path_buf(),
        what,
    };
    if kind.is_file() {
        // The rename must replace the file the link leads to, not the link.
        let dest = match is_link {
            true => fs::canonicalize(path).map_err(io_error)?,
            false => path.to_path_buf(),
        };
        Ok(Kind::Replace(dest))
    } else if kind.is_char_device() || kind.is_block_device() || kind.is_fifo() {
        Ok(Kind::Stream)
    } else if kind.is_dir() {
        Err(refuse("a directory"))
    } else {
        Err(refuse("a socket"))
    }
}

/// A new temporary file in `dest`'s directory, named after it.
fn temporary_beside(dest: &Path) -> io::Result<tempfile::NamedTempFile> {
    let dir = match dest.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".part")
        // Masked by the umask at creation, as any new file: 0644 under 022.
        .permissions(fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
}

/// Opens a device or FIFO for writing, checking that it still is one once
/// open (a regular file put there meanwhile would be written in place).
fn open_stream(path: &Path) -> Result<File, OutputError> {
    let io_error = |source| OutputError::Io {
        target: path.display().to_string(),
        source,
    };
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
        .map_err(io_error)?;
    let kind = file.metadata().map_err(io_error)?.file_type();
    if !(kind.is_char_device() || kind.is_block_device() || kind.is_fifo()) {
        return Err(io_error(io::Error::other(
            "replaced by another kind of file while being opened",
        )));
    }
    if file.is_terminal() {
        return Err(OutputError::Terminal);
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn what_is_at_the_path_decides_how_it_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let at = |name: &str| dir.path().join(name);
        fs::write(at("file"), b"old").expect("write");
        fs::create_dir(at("dir")).expect("mkdir");
        symlink("file", at("to-file")).expect("symlink");
        symlink("missing", at("dangling")).expect("symlink");
        symlink("dir", at("to-dir")).expect("symlink");
        symlink("/dev/null", at("to-null")).expect("symlink");
        let real = fs::canonicalize(at("file")).expect("canonicalize");

        assert_eq!(classify(&at("new")).ok(), Some(Kind::Replace(at("new"))));
        assert_eq!(classify(&at("file")).ok(), Some(Kind::Replace(at("file"))));
        assert_eq!(classify(&at("to-file")).ok(), Some(Kind::Replace(real)));
        assert_eq!(classify(Path::new("/dev/null")).ok(), Some(Kind::Stream));
        assert_eq!(classify(&at("to-null")).ok(), Some(Kind::Stream));
        for (name, message) in [
            ("dir", "is a directory"),
            ("to-dir", "is a directory"),
            ("dangling", "a symlink to missing, which does not exist"),
        ] {
            let error = classify(&at(name)).map(|_| ()).expect_err(name);
            assert!(error.to_string().contains(message), "{name}: {error}");
        }
    }

    #[test]
    fn writing_through_a_symlink_replaces_its_target_and_keeps_the_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let link = dir.path().join("link");
        fs::write(dir.path().join("file"), b"old").expect("write");
        symlink("file", &link).expect("symlink");
        let mut out = OutputFile::open(&link).expect("open");
        out.write_all(b"new").expect("write");
        out.commit().expect("commit");
        assert!(fs::symlink_metadata(&link)
            .expect("lstat")
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(dir.path().join("file")).expect("read"), b"new");
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 2);
    }
}
