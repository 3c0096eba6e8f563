//! Layers that carry their own table of contents: eStargz and
//! zstd:chunked. Their manifest descriptor says so (an annotation with the
//! table's digest, and for zstd:chunked where it lies), and the table
//! lists every member with where its contents start in the blob: a layer
//! is indexed by reading that table alone, by range, instead of passing
//! over the whole blob.
//!
//! The table is trusted only once its digest matches the annotation (the
//! manifest's, which the image's digest covers); each chunk of contents is
//! then checked against its own digest when it is read (see
//! `source/chunk_table.rs`). A table that is missing or fails its check
//! costs a warning and the ordinary pass.

mod entries;
mod estargz;
mod time;
mod zstd_chunked;

use std::collections::HashMap;
use std::path::PathBuf;

use crate::digest::{Algorithm, Digest};
use crate::source::{Codec, LayerSource, SeekIndex, SourceError};
use crate::tar::Member;

/// The annotation of an eStargz layer: the digest of its TOC JSON.
pub const ESTARGZ_TOC_DIGEST: &str = "containerd.io/snapshot/stargz/toc.digest";

/// The annotations of a zstd:chunked layer, under the current prefix and
/// the one older producers wrote.
const ZSTD_CHUNKED_PREFIXES: [&str; 2] = [
    "io.github.containers.zstd-chunked.",
    "io.containers.zstd-chunked.",
];

/// Where a layer's table of contents is and what it must hash to, from its
/// descriptor's annotations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TocRef {
    /// An eStargz layer: the sha256 of its `stargz.index.json`.
    Estargz {
        /// `sha256:<hex>` of the TOC JSON.
        digest: Digest,
    },
    /// A zstd:chunked layer.
    ZstdChunked {
        /// `sha256:<hex>` of the manifest as stored (compressed).
        checksum: Digest,
        /// `offset:compressed length:length:type` of the manifest.
        position: String,
    },
}

impl TocRef {
    /// The table of contents a layer descriptor's annotations announce, if
    /// any. A digest annotation that is not a valid digest announces none
    /// (with a warning): the layer is then read by a pass, as one without.
    pub fn from_annotations(annotations: &HashMap<String, String>) -> Option<TocRef> {
        let parsed = |key: &str, text: &str| {
            Digest::parse(text)
                .map_err(|e| {
                    log::warn!("annotation {key}: {e}; the layer's table of contents is not used")
                })
                .ok()
        };
        if let Some(digest) = annotations.get(ESTARGZ_TOC_DIGEST) {
            return Some(TocRef::Estargz {
                digest: parsed(ESTARGZ_TOC_DIGEST, digest)?,
            });
        }
        ZSTD_CHUNKED_PREFIXES.iter().find_map(|prefix| {
            let key = |name: &str| format!("{prefix}{name}");
            let get = |name: &str| annotations.get(&key(name)).cloned();
            let checksum = get("manifest-checksum")?;
            let position = get("manifest-position")?;
            Some(TocRef::ZstdChunked {
                checksum: parsed(&key("manifest-checksum"), &checksum)?,
                position,
            })
        })
    }

    /// The format's name, for messages.
    pub fn format(&self) -> &'static str {
        match self {
            TocRef::Estargz { .. } => "eStargz",
            TocRef::ZstdChunked { .. } => "zstd:chunked",
        }
    }

    /// What the layer's cache key is marked with (see `stack/keys.rs`): the
    /// table's format and digest, which the index it gives is only as good
    /// as.
    pub fn tag(&self) -> String {
        match self {
            TocRef::Estargz { digest } => format!("estargz:{digest}"),
            TocRef::ZstdChunked { checksum, position } => {
                format!("zstd:chunked:{checksum}@{position}")
            }
        }
    }

    /// Whether a member named `path` is the format's own bookkeeping, not
    /// part of the layer's tree: eStargz's TOC entry and its prefetch
    /// landmarks, which an ordinary pass over the blob meets as members.
    pub fn hides(&self, path: &[u8]) -> bool {
        match self {
            TocRef::Estargz { .. } => estargz::is_bookkeeping(path),
            TocRef::ZstdChunked { .. } => false,
        }
    }
}

/// Why a layer could not be indexed from its table of contents.
#[derive(Debug, thiserror::Error)]
pub enum TocError {
    /// The blob could not be read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The table of contents is missing, damaged, or not what the
    /// annotation says.
    #[error("{} ({format} table of contents): {reason}", path.display())]
    Bad {
        /// The layer.
        path: PathBuf,
        /// eStargz or zstd:chunked.
        format: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// A layer's members and the seek index that reads their contents, from
/// its table of contents.
#[derive(Debug)]
pub struct TocIndex {
    /// The members, in the table's order, bookkeeping left out.
    pub members: Vec<Member>,
    /// How their contents are read.
    pub seek: SeekIndex,
}

/// Reads the layer's table of contents, checks it against `toc`, and
/// builds the layer's index from it.
pub fn index(layer: &LayerSource, toc: &TocRef) -> Result<TocIndex, TocError> {
    let bad = |reason: String| TocError::Bad {
        path: layer.path().to_path_buf(),
        format: toc.format(),
        reason,
    };
    let (json, data_end) = match (toc, layer.codec()) {
        (TocRef::Estargz { digest }, Codec::Gzip) => estargz::read_toc(layer, digest),
        (TocRef::ZstdChunked { checksum, position }, Codec::Zstd) => {
            zstd_chunked::read_manifest(layer, checksum, position)
        }
        (_, codec) => Err(TocFault::new(format!(
            "the layer is {codec}, not {}",
            toc.format()
        ))),
    }
    .map_err(|fault| match fault {
        TocFault::Source(e) => TocError::Source(e),
        TocFault::Bad(reason) => bad(reason),
    })?;
    let (members, table) = entries::index(&json, data_end, |path| toc.hides(path)).map_err(bad)?;
    Ok(TocIndex {
        members,
        seek: SeekIndex::Chunks(table),
    })
}

/// What the format readers fail with; [`index`] names the layer.
#[derive(Debug)]
enum TocFault {
    Source(SourceError),
    Bad(String),
}

impl TocFault {
    fn new(reason: impl Into<String>) -> TocFault {
        TocFault::Bad(reason.into())
    }
}

impl From<SourceError> for TocFault {
    fn from(e: SourceError) -> TocFault {
        TocFault::Source(e)
    }
}

/// Checks that `bytes` hash to `expected` (a sha256 digest).
fn check_sha256(bytes: &[u8], expected: &Digest, what: &str) -> Result<(), TocFault> {
    if expected.algorithm() != Algorithm::Sha256 {
        return Err(TocFault::new(format!(
            "cannot check the {what} digest {expected}: only sha256 is supported"
        )));
    }
    let actual = Digest::sha256(bytes);
    if actual != *expected {
        return Err(TocFault::new(format!(
            "the {what} hashes to {actual}, the annotation says {expected}"
        )));
    }
    Ok(())
}

/// Reads `len` stored bytes at `offset`, refusing more than `limit`.
fn read_stored(
    layer: &LayerSource,
    offset: u64,
    len: u64,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, TocFault> {
    if offset
        .checked_add(len)
        .is_none_or(|end| end > layer.file_len())
    {
        return Err(TocFault::new(format!(
            "the {what} ({len} bytes at offset {offset}) lies past the end of the {}-byte blob",
            layer.file_len()
        )));
    }
    if len > limit {
        return Err(TocFault::new(format!(
            "the {what} takes {len} bytes, more than the {limit} allowed"
        )));
    }
    let mut buf = vec![0u8; usize::try_from(len).map_err(|_| TocFault::new("too large"))?];
    layer.read_stored(offset, &mut buf)?;
    Ok(buf)
}

/// The largest table of contents read, compressed or not: a million files
/// take about 300 MB of JSON.
const MAX_TOC: u64 = 1 << 30;

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn annotations_announce_a_table_of_contents() {
        let (ab, cd) = (
            format!("sha256:{}", "ab".repeat(32)),
            format!("sha256:{}", "cd".repeat(32)),
        );
        let esgz = annotations(&[(ESTARGZ_TOC_DIGEST, &ab)]);
        assert_eq!(
            TocRef::from_annotations(&esgz),
            Some(TocRef::Estargz {
                digest: ab.parse().expect("digest")
            })
        );
        let bad = annotations(&[(ESTARGZ_TOC_DIGEST, "sha256:ab")]);
        assert_eq!(TocRef::from_annotations(&bad), None);
        for prefix in ZSTD_CHUNKED_PREFIXES {
            let zc = annotations(&[
                (&format!("{prefix}manifest-checksum"), &cd),
                (&format!("{prefix}manifest-position"), "1:2:3:1"),
            ]);
            assert_eq!(
                TocRef::from_annotations(&zc),
                Some(TocRef::ZstdChunked {
                    checksum: cd.parse().expect("digest"),
                    position: "1:2:3:1".into()
                })
            );
        }
        // A checksum without a position (or the reverse) is no table.
        let half = annotations(&[("io.github.containers.zstd-chunked.manifest-checksum", &cd)]);
        assert_eq!(TocRef::from_annotations(&half), None);
        assert_eq!(TocRef::from_annotations(&HashMap::new()), None);
    }
}
