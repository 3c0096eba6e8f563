//! layerfs' own indexes, shipped through the registry beside the image
//! they index, so that the first mount of a registry image on any machine
//! reads no blob to index it: `layerfs index push` uploads them as an OCI
//! artifact that refers to the image manifest, and a mount whose layers
//! have no stored index looks for one before it streams the blobs.
//!
//! The artifact (OCI image spec 1.1, an image manifest):
//!
//! ```text
//! artifactType  application/vnd.layerfs.index.v1
//! config        the empty descriptor (application/vnd.oci.empty.v1+json, `{}`)
//! subject       the image manifest (the platform's, for an index)
//! layers        one per distinct image layer: media type
//!               application/vnd.layerfs.index.layer.v1+zstd, the layer's
//!               index cache entry, zstd-compressed, annotated with
//!               dev.layerfs.layer.digest  the layer blob's digest
//!               dev.layerfs.layer.size    the layer blob's size
//!               dev.layerfs.index.format  the cache entry format version
//! ```
//!
//! The entry pushed is the stored one but for the gzip checkpoints'
//! windows, which are most of it (32 KiB per 2 MiB of output, barely
//! compressible as most of a layer is compressed data already): each is
//! made sparse, every byte the deflate stream after the checkpoint never
//! copies zeroed, and proven to inflate the same before it replaces the
//! whole one (see `source/window_use.rs`), so that zstd then takes the
//! zeros away. The local cache keeps its entries whole: proving a sparse
//! window takes the compressed bytes after the checkpoint again, which
//! the indexing pass has gone past by the time the window is known, and
//! the entries are not what a first mount fetches. An entry taken from
//! the registry is stored as it came, sparse (the same entry format: a
//! window is only ever given to zlib as history). An artifact of the
//! first layout, media type `application/vnd.layerfs.index.layer.v1` and
//! the entry uncompressed, is still read as it is.
//!
//! Nothing fetched is trusted beyond what is checked: the manifest and
//! each blob against their digests, the subject against the image, each
//! entry against the layer it must index (the entry echoes the blob digest
//! and size it was built from, and must decode whole) before it enters the
//! cache. What the entry says of the blob's bytes is then checked as any
//! stored index is: every chunk read from the blob against the chunk sums
//! the index carries.

use serde::Deserialize;
use serde_json::json;

use crate::cache::{self, CacheError, IndexCache, LayerKey};
use crate::digest::Digest;
use crate::registry::{Pushed, RegistryError, RemoteImage, RemoteLayer, MANIFEST_MEDIA_TYPE};
use crate::source::{sparsen_windows, SparseCount};

/// The artifact type of a layerfs index artifact.
pub const ARTIFACT_TYPE: &str = "application/vnd.layerfs.index.v1";

/// The media type of one layer's index in the artifact: a cache entry,
/// zstd-compressed.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.layerfs.index.layer.v1+zstd";

/// The media type of the first artifacts: the cache entry as it is.
const PLAIN_LAYER_MEDIA_TYPE: &str = "application/vnd.layerfs.index.layer.v1";

/// zstd's level for the index blobs: on the entries of a 415 MB image,
/// level 19 took 4 s for half a percent less than level 9 in 0.1 s.
const ZSTD_LEVEL: i32 = 9;

/// Annotation of an index blob: the digest of the layer blob it indexes.
const LAYER_DIGEST: &str = "dev.layerfs.layer.digest";
/// Annotation of an index blob: the size of the layer blob it indexes.
const LAYER_SIZE: &str = "dev.layerfs.layer.size";
/// Annotation of an index blob: the cache entry format version.
const FORMAT: &str = "dev.layerfs.index.format";

/// The OCI empty descriptor's media type, digest and bytes (`{}`).
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
const EMPTY_JSON: &[u8] = b"{}";

/// The largest index blob taken from a registry, compressed or not: it is
/// held in memory while checked, and an index of 200k files takes 7 MB.
const MAX_INDEX_BLOB: u64 = 256 << 20;

/// What can go wrong pushing or fetching an index artifact.
#[derive(Debug, thiserror::Error)]
pub enum RemoteIndexError {
    /// The registry refused or failed a request.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A layer's index is not in the cache to be pushed.
    #[error("{image}: layer {number} ({digest}) has no stored index in {} (a registry layer indexed with --no-verify is not stored)", dir.display())]
    Missing {
        /// The image.
        image: String,
        /// The layer (1 = bottom).
        number: usize,
        /// Its blob digest.
        digest: Digest,
        /// The cache directory.
        dir: std::path::PathBuf,
    },
    /// A blob given by its URL has no manifest for an artifact to refer to.
    #[error("{image}: a blob, not an image: an index artifact refers to an image manifest")]
    NoManifest {
        /// The blob's URL.
        image: String,
    },
    /// A layer's stored index could not be made ready to push.
    #[error("{image}: layer {number} ({digest}): {reason}")]
    Push {
        /// The image.
        image: String,
        /// The layer (1 = bottom).
        number: usize,
        /// Its blob digest.
        digest: Digest,
        /// What failed.
        reason: String,
    },
    /// A cache entry could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The entry.
        path: std::path::PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The artifact found is not one this layerfs can use.
    #[error("{place}: layerfs index {digest}: {reason}")]
    Unusable {
        /// `REGISTRY/REPO`.
        place: String,
        /// The artifact manifest's digest.
        digest: Digest,
        /// What is wrong with it.
        reason: String,
    },
    /// An index from the artifact was refused by the cache.
    #[error("{place}: layerfs index {digest}: {source}")]
    Cache {
        /// `REGISTRY/REPO`.
        place: String,
        /// The artifact manifest's digest.
        digest: Digest,
        /// Why.
        source: CacheError,
    },
}

/// Uploads the stored indexes of `image`'s layers as an artifact referring
/// to its manifest (see the module docs); every layer must have one.
pub fn push(cache: &IndexCache, image: &RemoteImage) -> Result<Pushed, RemoteIndexError> {
    if image.manifest_media_type.is_empty() {
        return Err(RemoteIndexError::NoManifest {
            image: image.name.clone(),
        });
    }
    let repository = &image.repository;
    let mut layers = Vec::new();
    for (n, layer) in distinct(&image.layers) {
        let name = LayerKey::of_blob(&layer.digest, layer.size).file_name();
        let bytes = cache
            .entry_bytes(&name)
            .map_err(|source| RemoteIndexError::Io {
                path: cache.dir().join(&name),
                source,
            })?
            .ok_or_else(|| RemoteIndexError::Missing {
                image: image.name.clone(),
                number: n + 1,
                digest: layer.digest.clone(),
                dir: cache.dir().to_path_buf(),
            })?;
        let failed = |reason: String| RemoteIndexError::Push {
            image: image.name.clone(),
            number: n + 1,
            digest: layer.digest.clone(),
            reason,
        };
        let packed = pack(&bytes, layer).map_err(failed)?;
        let digest = repository.push_blob(&packed)?;
        layers.push(json!({
            "mediaType": LAYER_MEDIA_TYPE,
            "digest": digest,
            "size": packed.len(),
            "annotations": {
                LAYER_DIGEST: layer.digest,
                LAYER_SIZE: layer.size.to_string(),
                FORMAT: cache::format_version().to_string(),
            },
        }));
    }
    repository.push_blob(EMPTY_JSON)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": EMPTY_MEDIA_TYPE,
            "digest": EMPTY_DIGEST,
            "size": EMPTY_JSON.len(),
            "data": "e30=",
        },
        "layers": layers,
        "subject": {
            "mediaType": image.manifest_media_type,
            "digest": image.manifest_digest,
            "size": image.manifest_size,
        },
    });
    let body = serde_json::to_vec(&manifest).map_err(|source| RegistryError::Json {
        place: repository.place().to_string(),
        what: "the layerfs index manifest".into(),
        source,
    })?;
    Ok(repository.push_referrer(&body, &image.manifest_digest, ARTIFACT_TYPE, &json!({}))?)
}

/// The stored entry `bytes` of `layer`'s index as it travels: its gzip
/// windows sparse, zstd-compressed; see the module docs.
fn pack(bytes: &[u8], layer: &RemoteLayer) -> Result<Vec<u8>, String> {
    let key = LayerKey::of_blob(&layer.digest, layer.size);
    let mut sparsened = Ok(SparseCount::default());
    let entry = IndexCache::with_seek(&key, bytes, |seek| {
        sparsened = sparsen_windows(seek, layer.blob.as_ref());
    })
    .map_err(|e| e.to_string())?;
    let count = sparsened
        .map_err(|e| format!("reading the blob to make its index smaller to push: {e}"))?;
    if count.sparse + count.full > 0 {
        log::info!(
            "{}: {} of {} gzip windows sparse ({} of their bytes zeroed, {} compressed bytes read to prove it)",
            layer.blob.name(),
            count.sparse,
            count.sparse + count.full,
            count.zeroed,
            count.fetched
        );
    }
    zstd::bulk::compress(&entry, ZSTD_LEVEL).map_err(|e| format!("zstd: {e}"))
}

/// `blob`, the index blob of media type `media_type`, decompressed if it
/// is compressed, to at most `limit` bytes ([`MAX_INDEX_BLOB`]).
fn unpack(blob: Vec<u8>, media_type: &str, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    if media_type == PLAIN_LAYER_MEDIA_TYPE {
        return Ok(blob);
    }
    let mut entry = Vec::new();
    zstd::stream::read::Decoder::with_buffer(&blob[..])
        .and_then(|d| d.take(limit + 1).read_to_end(&mut entry))
        .map_err(|e| format!("it does not decompress: {e}"))?;
    if entry.len() as u64 > limit {
        return Err(format!(
            "it decompresses to more than the {limit} bytes an index may take"
        ));
    }
    Ok(entry)
}

/// The layers of `layers` with their numbers (from 0), each blob once.
fn distinct(layers: &[RemoteLayer]) -> Vec<(usize, &RemoteLayer)> {
    let mut seen = std::collections::HashSet::new();
    layers
        .iter()
        .enumerate()
        .filter(|(_, layer)| seen.insert((&layer.digest, layer.size)))
        .collect()
}

/// What [`fetch`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetched {
    /// Every layer had a stored index: nothing was asked of the registry.
    NotNeeded,
    /// The registry has no layerfs index for the image.
    None,
    /// This many layer indexes were put into the cache.
    Imported(usize),
    /// The registry could not be asked, or what it had was unusable
    /// (warned about).
    Failed,
}

/// Puts the indexes of `image`'s layers that the cache lacks into it from
/// a layerfs index artifact in the registry, if there is one. A missing
/// artifact is only logged; a lookup that fails or an artifact that cannot
/// be used costs one warning. Either way the mount goes on, indexing what
/// is still missing as usual.
pub fn fetch(cache: &IndexCache, image: &RemoteImage) -> Fetched {
    let missing: Vec<(usize, &RemoteLayer)> = distinct(&image.layers)
        .into_iter()
        .filter(|(_, layer)| {
            cache
                .load_seek(&LayerKey::of_blob(&layer.digest, layer.size))
                .is_none()
        })
        .collect();
    if missing.is_empty() {
        return Fetched::NotNeeded;
    }
    if image.manifest_media_type.is_empty() {
        // A blob given by its URL: no manifest, so no artifact refers to it.
        return Fetched::None;
    }
    let repository = &image.repository;
    let subject = &image.manifest_digest;
    let referrers = match repository.referrers(subject, ARTIFACT_TYPE) {
        Ok(referrers) => referrers,
        Err(e) => {
            log::warn!(
                "{}: looking for a layerfs index of {subject}: {e}; indexing the layers as usual",
                image.name
            );
            return Fetched::Failed;
        }
    };
    // The latest listed first: the fallback tag's index lists the last
    // one pushed last.
    let mut failure = None;
    for referrer in referrers.iter().rev() {
        match import(cache, image, &referrer.digest, referrer.size, &missing) {
            Ok(count) => {
                log::info!(
                    "{}: {} taken from the registry (layerfs index {})",
                    image.name,
                    crate::plural::counted(count, "layer index", "layer indexes"),
                    referrer.digest
                );
                return Fetched::Imported(count);
            }
            Err(e) => {
                log::debug!("{e}");
                failure.get_or_insert(e);
            }
        }
    }
    match failure {
        Some(e) => {
            log::warn!("{}: {e}; indexing the layers as usual", image.name);
            Fetched::Failed
        }
        None => {
            log::debug!(
                "{}: the registry has no layerfs index of {subject}",
                image.name
            );
            Fetched::None
        }
    }
}

/// An artifact manifest, as far as it is read.
#[derive(Deserialize)]
struct Artifact {
    #[serde(rename = "artifactType", default)]
    artifact_type: Option<String>,
    #[serde(default)]
    subject: Option<Blob>,
    #[serde(default)]
    layers: Vec<Blob>,
}

/// A descriptor, as far as it is read.
#[derive(Deserialize)]
struct Blob {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: Digest,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    annotations: std::collections::HashMap<String, String>,
}

/// Fetches the artifact `digest` and puts the indexes of the `missing`
/// layers from it into the cache, each checked first; returns how many.
fn import(
    cache: &IndexCache,
    image: &RemoteImage,
    digest: &Digest,
    size: Option<u64>,
    missing: &[(usize, &RemoteLayer)],
) -> Result<usize, RemoteIndexError> {
    let repository = &image.repository;
    let unusable = |reason: String| RemoteIndexError::Unusable {
        place: repository.place().to_string(),
        digest: digest.clone(),
        reason,
    };
    let body = repository.manifest(digest)?;
    if size.is_some_and(|size| size != body.len() as u64) {
        return Err(unusable("its size is not the one its listing gives".into()));
    }
    let artifact: Artifact = serde_json::from_slice(&body)
        .map_err(|e| unusable(format!("not a valid manifest: {e}")))?;
    if artifact.artifact_type.as_deref() != Some(ARTIFACT_TYPE) {
        return Err(unusable(format!(
            "its artifact type is {:?}, not {ARTIFACT_TYPE}",
            artifact.artifact_type.unwrap_or_default()
        )));
    }
    let subject = artifact.subject.map(|s| s.digest);
    if subject.as_ref() != Some(&image.manifest_digest) {
        return Err(unusable(format!(
            "it refers to {}, not to the image {}",
            subject.map_or_else(|| "nothing".to_string(), |s| s.to_string()),
            image.manifest_digest
        )));
    }
    let mut imported = 0;
    for (n, layer) in missing {
        let blob = artifact
            .layers
            .iter()
            .find(|b| {
                b.annotations.get(LAYER_DIGEST).map(String::as_str) == Some(layer.digest.as_str())
            })
            .ok_or_else(|| {
                unusable(format!(
                    "it has no index of layer {} ({})",
                    n + 1,
                    layer.digest
                ))
            })?;
        let what = format!("the index of layer {} ({})", n + 1, layer.digest);
        check_blob(blob, layer.size).map_err(|reason| unusable(format!("{what}: {reason}")))?;
        let blob_size = blob.size.unwrap_or_default();
        let bytes = repository.blob(&blob.digest, blob_size)?;
        let bytes = unpack(bytes, &blob.media_type, MAX_INDEX_BLOB)
            .map_err(|reason| unusable(format!("{what}: {reason}")))?;
        cache
            .import_layer(&LayerKey::of_blob(&layer.digest, layer.size), &bytes)
            .map_err(|source| RemoteIndexError::Cache {
                place: repository.place().to_string(),
                digest: digest.clone(),
                source,
            })?;
        imported += 1;
    }
    Ok(imported)
}

/// Why the descriptor `blob` cannot be the index of a layer blob of
/// `layer_size` bytes, if it cannot.
fn check_blob(blob: &Blob, layer_size: u64) -> Result<(), String> {
    if blob.media_type != LAYER_MEDIA_TYPE && blob.media_type != PLAIN_LAYER_MEDIA_TYPE {
        return Err(format!(
            "media type {:?}, not {LAYER_MEDIA_TYPE}",
            blob.media_type
        ));
    }
    let size = blob.annotations.get(LAYER_SIZE).map(String::as_str);
    if size != Some(layer_size.to_string().as_str()) {
        return Err(format!(
            "made for a blob of {} bytes, the layer has {layer_size}",
            size.unwrap_or("unknown"),
        ));
    }
    let version = cache::format_version().to_string();
    let format = blob.annotations.get(FORMAT).map(String::as_str);
    if format != Some(version.as_str()) {
        return Err(format!(
            "index format {}, this layerfs reads {version}",
            format.unwrap_or("unknown")
        ));
    }
    match blob.size {
        None => Err("its descriptor gives no size".into()),
        Some(size) if size > MAX_INDEX_BLOB => Err(format!(
            "{size} bytes, more than the {MAX_INDEX_BLOB} an index may take"
        )),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(media_type: &str, size: &str, format: &str, blob_size: u64) -> Blob {
        Blob {
            media_type: media_type.into(),
            digest: Digest::sha256(b"11"),
            size: Some(blob_size),
            annotations: [
                (LAYER_DIGEST.to_string(), "sha256:00".to_string()),
                (LAYER_SIZE.to_string(), size.to_string()),
                (FORMAT.to_string(), format.to_string()),
            ]
            .into(),
        }
    }

    #[test]
    fn an_index_blob_must_be_for_this_layer_and_this_format() {
        let version = cache::format_version().to_string();
        let good = blob(LAYER_MEDIA_TYPE, "100", &version, 10);
        assert_eq!(check_blob(&good, 100), Ok(()));
        let first_layout = blob(PLAIN_LAYER_MEDIA_TYPE, "100", &version, 10);
        assert_eq!(check_blob(&first_layout, 100), Ok(()));
        let refused = [
            blob("application/octet-stream", "100", &version, 10),
            blob(LAYER_MEDIA_TYPE, "101", &version, 10),
            blob(LAYER_MEDIA_TYPE, "100", "1", 10),
            blob(LAYER_MEDIA_TYPE, "100", &version, MAX_INDEX_BLOB + 1),
        ];
        for b in &refused {
            assert!(
                check_blob(b, 100).is_err(),
                "{:?} {:?}",
                b.media_type,
                b.annotations
            );
        }
    }

    #[test]
    fn index_blobs_decompress_within_the_bound() {
        let entry = b"LAYERFS-IDX\0 and the rest".repeat(100);
        let packed = zstd::bulk::compress(&entry, 3).expect("zstd");
        assert_eq!(
            unpack(packed.clone(), LAYER_MEDIA_TYPE, 1 << 20),
            Ok(entry.clone())
        );
        // The first layout's blobs are the entry itself.
        assert_eq!(
            unpack(entry.clone(), PLAIN_LAYER_MEDIA_TYPE, 1 << 20),
            Ok(entry.clone())
        );
        // A blob that inflates past the bound is refused before it all is.
        let err = unpack(packed, LAYER_MEDIA_TYPE, 1000).expect_err("over the bound");
        assert!(err.contains("more than the 1000 bytes"), "{err}");
        let err = unpack(entry, LAYER_MEDIA_TYPE, 1 << 20).expect_err("not zstd");
        assert!(err.contains("does not decompress"), "{err}");
    }

    #[test]
    fn the_empty_descriptor_is_the_empty_json() {
        assert_eq!(Digest::sha256(EMPTY_JSON).as_str(), EMPTY_DIGEST);
    }
}
