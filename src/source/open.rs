//! Opening a local layer file, and how much of it is read at a time.

use std::fs::File;
use std::path::Path;

use super::SourceError;

/// Read size from the compressed file.
pub(super) const INPUT_BUFFER: usize = 256 * 1024;

/// Opens a layer file, refusing directories; returns it with its metadata.
pub(super) fn open_file(path: &Path) -> Result<(File, std::fs::Metadata), SourceError> {
    let io_err = |source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if meta.is_dir() {
        return Err(SourceError::NotALayer {
            path: path.to_path_buf(),
            reason: "is a directory".into(),
        });
    }
    Ok((file, meta))
}
