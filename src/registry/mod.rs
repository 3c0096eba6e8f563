//! Images in a registry, spoken to through the OCI distribution API: a
//! reference resolved to one manifest's layers, each a blob read lazily by
//! HTTP Range requests.
//!
//! What a registry needs is all here: reference grammar ([`parse`]), HTTP
//! with timeouts and retries of transient failures, the bearer-token and
//! basic logins (from `--creds` or `docker login`'s config file), and
//! manifest and index resolution with digests verified. What the blob
//! bytes are (codec, tar index, chunk cache, span verification) is for
//! [`crate::source`] to read through [`crate::source::BlobFetch`].

mod auth;
mod blob;
mod client;
mod creds;
mod error;
mod reference;
mod referrers;
mod resolve;
mod retry;
#[cfg(test)]
mod test_server;
#[cfg(test)]
mod tests;
mod transport;

pub use blob::RegistryBlob;
pub use error::RegistryError;
pub use reference::{parse, Reference, Target};
pub use referrers::{Pushed, Referrer, Repository, INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};
pub use retry::RetryPolicy;

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::image::Platform;
use crate::source::BlobFetch;

/// How to reach a registry and which image of an index to take.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// Plain HTTP to a registry that is not on loopback (`--insecure`).
    pub insecure: bool,
    /// `USER:PASS` (`--creds`); wins over the Docker config file.
    pub creds: Option<String>,
    /// The platform to take from an index; `None`: the host's.
    pub platform: Option<Platform>,
    /// The Docker config file to read logins from, instead of
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
    pub docker_config: Option<PathBuf>,
    /// Retries of transient failures; `None`: the default, adjusted by
    /// `LAYERFS_HTTP_RETRIES` and `LAYERFS_HTTP_RETRY_DELAY_MS`.
    pub retry: Option<RetryPolicy>,
}

/// An image manifest in a registry, resolved to its layers.
#[derive(Clone, Debug)]
pub struct RemoteImage {
    /// The reference as given, for messages.
    pub name: String,
    /// The digest of the image manifest the layers come from (for an
    /// index, the platform's manifest, not the index).
    pub manifest_digest: crate::digest::Digest,
    /// That manifest's media type (OCI or Docker), for descriptors of it;
    /// empty for a blob given by its URL, which has no manifest.
    pub manifest_media_type: String,
    /// That manifest's size in bytes.
    pub manifest_size: u64,
    /// The layers, bottom first.
    pub layers: Vec<RemoteLayer>,
    /// The repository, for the artifacts that refer to the manifest.
    pub repository: Repository,
    /// Blob bytes received from the registry so far, for all the layers
    /// together (retried bytes included): for logs and figures.
    pub bytes_received: Arc<AtomicU64>,
}

/// One layer of a [`RemoteImage`].
#[derive(Clone, Debug)]
pub struct RemoteLayer {
    /// The blob's digest (a sha256 one), as the manifest gives it; the
    /// bytes are not checked against it here.
    pub digest: crate::digest::Digest,
    /// The blob's size, as the manifest gives it.
    pub size: u64,
    /// The layer's media type, as the manifest gives it.
    pub media_type: String,
    /// The blob's bytes, fetched on demand.
    pub blob: Arc<dyn BlobFetch>,
    /// The table of contents its annotations announce (eStargz,
    /// zstd:chunked), if any.
    pub toc: Option<crate::toc::TocRef>,
}

/// Resolves `reference` to the layers of its manifest: the platform's
/// manifest (`options.platform`, else the host's) if it names an index.
/// A manifest asked for by digest must have that digest; one asked for by
/// tag must have the digest the registry claims for it.
pub fn resolve(
    reference: &Reference,
    options: &RegistryOptions,
) -> Result<RemoteImage, RegistryError> {
    resolve::resolve(reference, options)
}
