//! Where a layer's bytes come from.
//!
//! A layer file is a tar archive, plain or compressed. This module recognises
//! the codec from the file's first bytes (never from its name), gives the tar
//! indexer one sequential pass over the decompressed stream, and serves reads
//! at any offset of that decompressed stream afterwards. Nothing above this
//! module knows whether a layer is compressed.
//!
//! # Layout
//!
//! Three floors, dependencies pointing down:
//!
//! - **Bytes and tools** (know no codec): `cursor.rs` (the one reader of
//!   stored indexes, and [`SeekDecodeError`]), `codec.rs` (magic bytes),
//!   `open.rs`, `meter.rs`, `budget.rs` (the process's decoding passes and
//!   cores), `remote/` (a registry blob read by range or as one hashed
//!   stream: `blob.rs`, `chunk_store.rs`), `region.rs` (a byte range of a
//!   file or blob, what every codec reads through), `positioned.rs`,
//!   `watch.rs`, `drop_behind.rs` and `second_reader.rs` (a plain tar's
//!   pass), `access.rs` (the two interfaces every codec implements),
//!   `spill.rs` (decoded bytes cached on disk) and `frames.rs` (frame
//!   tables and reads through them, for codecs with independent frames).
//! - **Codecs**, one module each, none knowing another: `gzip/`, `zstd/`
//!   (with its multi-frame pass on several cores), `bzip2/`, `xz.rs`,
//!   `lz4.rs`, and `chunk_table.rs` (a layer indexed from its table of
//!   contents). Each has an indexing pass that finishes with its own index
//!   type, random access through that index, and a streaming decoder.
//! - **Dispatch**: `seek.rs` ([`SeekIndex`], the enum over the codecs'
//!   indexes, and its encoding), `dispatch.rs` (the one place that names
//!   every codec), `reader.rs` ([`LayerSource`]) and `head.rs`
//!   ([`LayerHead`]).
//!
//! The rule, for every file: its `super::` and `crate::source::` imports
//! name modules of its own floor or a lower one, never a higher one and
//! never in a circle, and a codec never imports another codec; inside a
//! folder the same holds among its files (`gzip/mod.rs` gives its order). This file's
//! [`Stream`] and [`SourceError`] are for every floor; anything else is
//! imported from the file that defines it, not through the re-exports
//! below. Test modules may also use the module's public API
//! ([`LayerSource`]), as its users do.

mod access;
mod budget;
mod bzip2;
mod chunk_table;
mod codec;
mod cursor;
mod dispatch;
mod drop_behind;
mod frames;
mod gzip;
mod head;
mod lz4;
mod meter;
mod open;
mod positioned;
mod reader;
mod region;
mod remote;
mod second_reader;
mod seek;
mod spill;
#[cfg(test)]
mod test_support;
mod watch;
mod xz;
mod zstd;

pub use access::DecodeCounter;
pub use budget::spare_core;
pub use chunk_table::{ChunkTable, TableChunk};
pub use codec::Codec;
pub(crate) use cursor::ByteCursor;
pub use cursor::SeekDecodeError;
pub use dispatch::sparsen_windows;
pub use gzip::GzipIndex;
pub use gzip::SparseCount;
pub use head::LayerHead;
pub use meter::ReadMeter;
pub use reader::{IndexPass, LayerSource};
pub use remote::BlobFetch;
pub use remote::SpanSums;
pub use seek::SeekIndex;
pub use spill::SpillError;

use std::io::{self, Read};
use std::path::PathBuf;

/// A sequential stream of a layer's decompressed bytes, as the indexer sees it.
///
/// `skip` exists so that a plain tar can jump over member data with a seek
/// instead of reading it; decompressing streams read and discard.
pub trait Stream: Read {
    /// Advances the stream by up to `n` bytes without handing them out, and
    /// returns how many were skipped (fewer only at the end of the stream).
    fn skip(&mut self, n: u64) -> io::Result<u64>;
}

/// A layer stream already in memory: a tar just written, or the fuzz
/// targets' input. Skipping past the end stops at the end, as for files.
impl<T: AsRef<[u8]>> Stream for io::Cursor<T> {
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        let len = self.get_ref().as_ref().len() as u64;
        let pos = self.position().min(len);
        let n = n.min(len - pos);
        self.set_position(pos + n);
        Ok(n)
    }
}

/// What can go wrong while opening or reading a layer file.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The layer file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The layer file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The file is compressed with a codec layerfs cannot read.
    #[error("{path}: {codec} compression is not supported (layerfs reads plain tar, gzip, zstd, bzip2, xz and lz4 layers)")]
    UnsupportedCodec {
        /// The layer file.
        path: PathBuf,
        /// The codec recognised from the magic bytes.
        codec: &'static str,
    },
    /// The file is not a tar archive, compressed or plain.
    #[error("{path}: not a tar layer: {reason}")]
    NotALayer {
        /// The layer file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// The decompressed stream ended before the requested offset.
    #[error("{path}: read of {len} bytes at offset {offset} is past the end of the layer's data")]
    PastEnd {
        /// The layer file.
        path: PathBuf,
        /// Offset in the decompressed stream.
        offset: u64,
        /// Bytes asked for.
        len: usize,
    },
    /// A read came before the layer was indexed (a bug, not bad input).
    #[error("{path}: read before the layer was indexed")]
    NotIndexed {
        /// The layer file.
        path: PathBuf,
    },
    /// The on-disk cache of decompressed data failed (directory not
    /// writable, disk full): the layer itself is fine.
    #[error("{path}: {source}")]
    Cache {
        /// The layer file.
        path: PathBuf,
        /// What failed, naming the cache directory.
        source: io::Error,
    },
    /// The layer file shrank after it was indexed, and the read needs what
    /// was cut off.
    #[error("{path}: the layer file was truncated after it was indexed ({was} bytes, now {now}); the read of {len} bytes at offset {offset} of its data needs bytes past the cut")]
    Truncated {
        /// The layer file.
        path: PathBuf,
        /// Its size when it was opened.
        was: u64,
        /// Its size now.
        now: u64,
        /// Offset of the read in the (decompressed) layer stream.
        offset: u64,
        /// Bytes asked for.
        len: usize,
    },
    /// The layer file was written to in place after it was indexed: none
    /// of its bytes can be trusted to match the index any more.
    #[error("{path}: the layer file was modified after it was indexed ({was} bytes, now {now}, new mtime); nothing more is read from it (read of {len} bytes at offset {offset} refused; remount to see the new contents)")]
    Modified {
        /// The layer file.
        path: PathBuf,
        /// Its size when it was opened.
        was: u64,
        /// Its size now.
        now: u64,
        /// Offset of the read in the (decompressed) layer stream.
        offset: u64,
        /// Bytes asked for.
        len: usize,
    },
    /// A file of a directory layer is no longer what was listed when the
    /// layer was indexed (another inode, size or mtime): nothing more is
    /// read from it.
    #[error("{path}: changed since its directory layer was indexed ({why}); its reads fail until remounted")]
    Changed {
        /// The file.
        path: PathBuf,
        /// What differs.
        why: String,
    },
    /// A remote layer's bytes could not be fetched, or were not what was
    /// indexed: the registry, not the layer, is at fault.
    #[error("{path}: {source}")]
    Remote {
        /// The blob (`REGISTRY/REPO@DIGEST`).
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// Decompression failed while reading.
    #[error("{path}: {codec} stream is corrupt near decompressed offset {offset}: {source}")]
    Corrupt {
        /// The layer file.
        path: PathBuf,
        /// The codec.
        codec: &'static str,
        /// Decompressed offset reached when it failed.
        offset: u64,
        /// What the decoder said.
        source: io::Error,
    },
}

impl SourceError {
    /// The errno a filesystem read should fail with: the OS's own where
    /// the layer file or the cache failed with one (a reader is better
    /// told ENOSPC or EACCES than EIO), EIO for data that is damaged,
    /// changed or missing. A registry's socket errors (ECONNRESET, EPIPE)
    /// mean something else on a file, and EINTR or EAGAIN would ask a
    /// reader to retry what will not succeed: those are EIO too.
    pub fn errno(&self) -> i32 {
        match self {
            SourceError::Io { source, .. } | SourceError::Cache { source, .. } => {
                match os_errno(source) {
                    Some(libc::EINTR | libc::EAGAIN) | None => libc::EIO,
                    Some(errno) => errno,
                }
            }
            SourceError::UnsupportedCodec { .. }
            | SourceError::NotALayer { .. }
            | SourceError::PastEnd { .. }
            | SourceError::NotIndexed { .. }
            | SourceError::Truncated { .. }
            | SourceError::Modified { .. }
            | SourceError::Changed { .. }
            | SourceError::Remote { .. }
            | SourceError::Corrupt { .. } => libc::EIO,
        }
    }

    /// The layer file the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            SourceError::Io { path, .. }
            | SourceError::UnsupportedCodec { path, .. }
            | SourceError::NotALayer { path, .. }
            | SourceError::PastEnd { path, .. }
            | SourceError::NotIndexed { path }
            | SourceError::Cache { path, .. }
            | SourceError::Truncated { path, .. }
            | SourceError::Modified { path, .. }
            | SourceError::Changed { path, .. }
            | SourceError::Remote { path, .. }
            | SourceError::Corrupt { path, .. } => path,
        }
    }

    /// A short name of what went wrong, the same for every occurrence of
    /// the same problem on a layer: what a server logs once.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceError::Io { .. } => "io",
            SourceError::UnsupportedCodec { .. } => "codec",
            SourceError::NotALayer { .. } => "not-a-layer",
            SourceError::PastEnd { .. } => "past-end",
            SourceError::NotIndexed { .. } => "not-indexed",
            SourceError::Cache { .. } => "cache",
            SourceError::Truncated { .. } => "truncated",
            SourceError::Modified { .. } => "modified",
            SourceError::Changed { .. } => "changed",
            SourceError::Remote { .. } => "remote",
            SourceError::Corrupt { .. } => "corrupt",
        }
    }
}

/// The OS's errno behind `e`, looking through the errors that wrap one (a
/// [`SpillError`] adds the cache directory around what the OS said).
fn os_errno(e: &io::Error) -> Option<i32> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = cause {
        let errno = error
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error);
        if errno.is_some() {
            return errno;
        }
        cause = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_memory_streams_skip_up_to_their_end() {
        let mut stream = io::Cursor::new(vec![1u8, 2, 3, 4, 5]);
        assert_eq!(stream.skip(2).expect("skip"), 2);
        let mut b = [0u8; 1];
        stream.read_exact(&mut b).expect("read");
        assert_eq!(b, [3]);
        assert_eq!(stream.skip(u64::MAX).expect("skip"), 2);
        assert_eq!(stream.skip(1).expect("skip"), 0);
        // A position set past the end skips nothing and never underflows.
        stream.set_position(100);
        assert_eq!(stream.skip(1).expect("skip"), 0);
    }

    #[test]
    fn reads_fail_with_the_os_errno_else_eio() {
        let path = || PathBuf::from("layer.tar");
        let io = |errno| SourceError::Io {
            path: path(),
            source: io::Error::from_raw_os_error(errno),
        };
        // As the spill cache reports it: naming its directory.
        let cache = |errno| SourceError::Cache {
            path: path(),
            source: io::Error::other(SpillError {
                dir: "/var/cache/layerfs".into(),
                source: io::Error::from_raw_os_error(errno),
            }),
        };
        assert_eq!(io(libc::EACCES).errno(), libc::EACCES);
        assert_eq!(cache(libc::ENOSPC).errno(), libc::ENOSPC);
        // Retry-me errnos would send a reader round a loop.
        assert_eq!(io(libc::EINTR).errno(), libc::EIO);
        assert_eq!(cache(libc::EAGAIN).errno(), libc::EIO);
        let no_errno = SourceError::Io {
            path: path(),
            source: io::Error::other("short read"),
        };
        assert_eq!(no_errno.errno(), libc::EIO);
        let socket = SourceError::Remote {
            path: path(),
            source: io::Error::from_raw_os_error(libc::ECONNRESET),
        };
        assert_eq!(socket.errno(), libc::EIO);
        let corrupt = SourceError::Corrupt {
            path: path(),
            codec: "gzip",
            offset: 0,
            source: io::Error::from_raw_os_error(libc::EACCES),
        };
        assert_eq!(corrupt.errno(), libc::EIO);
        let gone = SourceError::Changed {
            path: path(),
            why: "it is gone".into(),
        };
        assert_eq!(gone.errno(), libc::EIO);
    }
}
