//! What can go wrong while resolving an image to its layers.

use std::path::PathBuf;

use crate::digest::{Digest, DigestError};
use crate::source::SourceError;

/// Why an image argument could not be resolved; each message names the
/// image and, for a blob, its digest.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file of the image could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The archive could not be opened as a tar.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// An index, manifest or config is not the JSON it should be.
    #[error("{image}: {what} is not valid: {source}")]
    Json {
        /// The image.
        image: String,
        /// Which document (a member name or a digest).
        what: String,
        /// What the parser said.
        source: serde_json::Error,
    },
    /// A JSON document is larger than any sane one.
    #[error("{image}: {what} is {size} bytes, more than the {limit} an image document may have")]
    TooLarge {
        /// The image.
        image: String,
        /// Which document.
        what: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A file the image format requires is missing.
    #[error("{image}: {what} is missing")]
    Missing {
        /// The image.
        image: String,
        /// The member or file.
        what: String,
    },
    /// The tag or digest asked for names no manifest.
    #[error("{image}: no manifest {selector} (the image has: {available})")]
    NoManifest {
        /// The image.
        image: String,
        /// The tag or digest asked for.
        selector: String,
        /// What there is.
        available: String,
    },
    /// Several manifests fit and nothing says which one.
    #[error("{image}: holds several images ({available}); name one as IMAGE:TAG or IMAGE@DIGEST")]
    Ambiguous {
        /// The image.
        image: String,
        /// What there is.
        available: String,
    },
    /// No manifest of a multi-platform index is for the platform wanted.
    #[error("{image}: no manifest for platform {wanted} (the index has: {available}); choose one with --platform")]
    NoPlatform {
        /// The image.
        image: String,
        /// The platform wanted.
        wanted: String,
        /// The platforms the index lists.
        available: String,
    },
    /// A blob the manifest names is not in the image.
    #[error("{image}: blob {digest} ({what}) is missing")]
    MissingBlob {
        /// The image.
        image: String,
        /// The blob's digest, or its member name in a `docker save` archive.
        digest: String,
        /// What it is (a layer number, a manifest, …).
        what: String,
    },
    /// A non-distributable layer whose blob was not shipped with the image.
    #[error("{image}: layer {number} ({digest}) is non-distributable and its blob is not in the image (it is published at: {urls}); fetch it into the layout first")]
    Nondistributable {
        /// The image.
        image: String,
        /// 1 = bottom.
        number: usize,
        /// The blob's digest.
        digest: Digest,
        /// Where the manifest says it can be fetched.
        urls: String,
    },
    /// A layer of a media type layerfs does not read.
    #[error("{image}: layer {number} ({digest}) has media type {media_type}, which is not a tar layer layerfs reads")]
    MediaType {
        /// The image.
        image: String,
        /// 1 = bottom.
        number: usize,
        /// The blob's digest.
        digest: Digest,
        /// The media type.
        media_type: String,
    },
    /// A manifest or index of a media type layerfs does not know.
    #[error(
        "{image}: {digest} has media type {media_type}, neither an image manifest nor an index"
    )]
    NotAManifest {
        /// The image.
        image: String,
        /// The descriptor's digest.
        digest: Digest,
        /// The media type.
        media_type: String,
    },
    /// A digest that breaks the OCI rule (see [`crate::digest`]).
    #[error("{image}: {what}: {source}")]
    BadDigest {
        /// The image.
        image: String,
        /// Where the digest was found.
        what: String,
        /// What is wrong with it.
        source: DigestError,
    },
    /// Indexes nested deeper than any real image.
    #[error("{image}: indexes are nested more than {limit} deep")]
    TooDeep {
        /// The image.
        image: String,
        /// The limit.
        limit: usize,
    },
    /// `--platform` is not `os/arch[/variant]`.
    #[error("--platform {0:?}: expected os/arch[/variant], e.g. linux/arm64/v8")]
    BadPlatform(String),
}
