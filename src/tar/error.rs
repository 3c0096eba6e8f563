//! The one error type of the tar module.
//!
//! Every problem carries the byte offset in the decompressed layer stream
//! where it was found, because a layer is often a multi-gigabyte blob and
//! "bad header" alone gives a user nothing to look at.

use std::io;

/// A layer's tar stream could not be indexed.
#[derive(Debug, thiserror::Error)]
#[error("at byte {offset}: {problem}")]
pub struct TarError {
    /// Offset in the decompressed stream where the problem is.
    pub offset: u64,
    /// What is wrong there.
    pub problem: Problem,
}

/// What is wrong with a tar stream.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// Reading the stream failed (for compressed layers this is usually a
    /// corrupt compressed stream).
    #[error("read error: {0}")]
    Io(io::Error),
    /// The very first header block is not a tar header: what a random file,
    /// or a layer decoded with the wrong codec, looks like.
    #[error("not a tar archive")]
    NotATar,
    /// A header block's checksum does not match its contents.
    #[error("bad header checksum")]
    BadChecksum,
    /// The stream ends inside a header or inside a member's data.
    #[error("archive is truncated")]
    Truncated,
    /// Extension headers (PAX 'x', GNU 'L'/'K') are not followed by the
    /// member they describe.
    #[error("extension header is not followed by a member")]
    DanglingExtension,
    /// A numeric header field is malformed or out of range.
    #[error("bad number in the {field} field")]
    BadNumber {
        /// Name of the header field.
        field: &'static str,
    },
    /// A PAX extended header record is malformed.
    #[error("bad pax header: {0}")]
    BadPax(String),
    /// A sparse member's map is malformed or inconsistent with its sizes.
    #[error("bad sparse map: {0}")]
    BadSparse(String),
    /// Input exceeds a limit that protects against hostile archives.
    #[error("limit exceeded: {0}")]
    Limit(String),
    /// A valid tar feature that layerfs does not handle.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl Problem {
    /// Pins the problem to a stream offset.
    pub(super) fn at(self, offset: u64) -> TarError {
        TarError {
            offset,
            problem: self,
        }
    }
}
