//! From a reference to one image manifest's layers: the manifest (or the
//! index and the platform's manifest in it), fetched, verified and read.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::blob::RegistryBlob;
use super::client::Client;
use super::reference::{verify_sha256, Target};
use super::transport;
use super::{Reference, RegistryError, RegistryOptions, RemoteImage, RemoteLayer, Repository};
use crate::digest::Digest;
use crate::image::manifest::{self, Descriptor, Index, Kind, LayerType, Manifest};
use crate::image::{platforms, Platform};

/// How deep indexes may nest (real images: one level).
const MAX_DEPTH: usize = 4;

/// The largest manifest a registry accepts (distribution's own limit).
pub(super) const MAX_MANIFEST: u64 = 4 << 20;

/// Every manifest kind layerfs reads; a registry converts or refuses the
/// rest (and this keeps it from falling back to schema 1).
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// Resolves `reference` to the layers of its manifest (the platform's, for
/// an index), each a [`RegistryBlob`] sharing one client.
pub(super) fn resolve(
    reference: &Reference,
    options: &RegistryOptions,
) -> Result<RemoteImage, RegistryError> {
    let client = Arc::new(Client::new(reference, options)?);
    let platform = options.platform.clone().unwrap_or_else(Platform::host);
    let resolver = Resolver {
        client: &client,
        platform: &platform,
    };
    let expected = match &reference.target {
        Target::Digest(digest) => Some(digest),
        Target::Tag(_) => None,
        Target::Blob(digest) => {
            let layer = resolver
                .lone_blob(digest)?
                .ok_or_else(|| RegistryError::NotFound {
                    place: resolver.place(),
                    what: format!("blob {digest}"),
                })?;
            // No manifest: nothing refers to it (an empty media type says so).
            return Ok(RemoteImage {
                name: reference.name.clone(),
                manifest_digest: digest.clone(),
                manifest_media_type: String::new(),
                manifest_size: 0,
                layers: vec![layer],
                repository: Repository::new(Arc::clone(&client)),
                bytes_received: client.received().clone(),
            });
        }
    };
    let (subject, manifest) = resolver.manifest(reference.target.as_str(), expected, 1)?;
    let layers = manifest
        .layers
        .iter()
        .enumerate()
        .map(|(n, d)| resolver.layer(n + 1, d))
        .collect::<Result<_, _>>()?;
    Ok(RemoteImage {
        name: reference.name.clone(),
        manifest_digest: subject.digest,
        manifest_media_type: subject.media_type,
        manifest_size: subject.size,
        layers,
        repository: Repository::new(Arc::clone(&client)),
        bytes_received: client.received().clone(),
    })
}

/// The two fields that say what a manifest is, read before the rest.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<u64>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
}

/// The descriptor of the image manifest resolved to.
struct Subject {
    digest: Digest,
    media_type: String,
    size: u64,
}

/// A manifest or index as fetched.
struct Document {
    /// What it is: its own `mediaType`, else the response's `Content-Type`.
    media_type: String,
    body: Vec<u8>,
    /// `sha256:` of the body, verified where a digest was expected.
    digest: Digest,
    what: String,
}

struct Resolver<'a> {
    client: &'a Arc<Client>,
    platform: &'a Platform,
}

impl Resolver<'_> {
    fn place(&self) -> String {
        self.client.place().to_string()
    }

    /// Fetches the manifest or index `target` (a tag or a digest) and
    /// checks its digest against `expected`, or against the registry's
    /// `Docker-Content-Digest` for a tag.
    fn document(&self, target: &str, expected: Option<&Digest>) -> Result<Document, RegistryError> {
        let what = format!("manifest {target}");
        let place = self.place();
        let Fetched {
            content_type,
            body,
            digest,
        } = fetch_manifest(self.client, target, expected, ACCEPT, &what)?;
        let envelope: Envelope = parse(&place, &what, &body)?;
        let header_type = content_type
            .as_deref()
            .map(|t| t.split(';').next().unwrap_or(t).trim().to_string());
        let media_type = envelope
            .media_type
            .filter(|t| !t.is_empty())
            .or(header_type)
            .unwrap_or_default();
        if envelope.schema_version == Some(1)
            || media_type.starts_with("application/vnd.docker.distribution.manifest.v1")
        {
            return Err(RegistryError::Schema1 { place, what });
        }
        Ok(Document {
            media_type,
            body,
            digest,
            what,
        })
    }

    /// The image manifest `target` is, or leads to through indexes, and
    /// what describes it.
    fn manifest(
        &self,
        target: &str,
        expected: Option<&Digest>,
        depth: usize,
    ) -> Result<(Subject, Manifest), RegistryError> {
        if depth > MAX_DEPTH {
            return Err(RegistryError::TooDeep {
                place: self.place(),
                limit: MAX_DEPTH,
            });
        }
        let document = self.document(target, expected)?;
        match manifest::kind(&document.media_type) {
            Kind::Manifest => {
                let manifest = parse(&self.place(), &document.what, &document.body)?;
                let subject = Subject {
                    size: document.body.len() as u64,
                    digest: document.digest,
                    media_type: document.media_type,
                };
                Ok((subject, manifest))
            }
            Kind::Index => {
                let index: Index = parse(&self.place(), &document.what, &document.body)?;
                let next = self.for_platform(&index.manifests)?;
                verify_sha256(&next.digest).map_err(|reason| RegistryError::BadDescriptor {
                    place: self.place(),
                    what: format!("{} (an entry)", document.what),
                    reason,
                })?;
                self.manifest(next.digest.as_str(), Some(&next.digest), depth + 1)
            }
            Kind::Other => Err(RegistryError::MediaType {
                place: self.place(),
                what: document.what,
                media_type: document.media_type,
            }),
        }
    }

    /// The first manifest of an index for the platform wanted; a lone
    /// manifest that names no platform is taken as it is.
    fn for_platform<'d>(
        &self,
        candidates: &'d [Descriptor],
    ) -> Result<&'d Descriptor, RegistryError> {
        let matching = candidates.iter().find(|d| {
            d.platform.as_ref().is_some_and(|p| {
                self.platform
                    .matches(&p.os, &p.architecture, p.variant.as_deref())
            })
        });
        match (matching, candidates) {
            (Some(d), _) => Ok(d),
            (None, [only]) if only.platform.is_none() => Ok(only),
            _ => {
                let available = platforms(candidates);
                Err(RegistryError::NoPlatform {
                    place: self.place(),
                    wanted: self.platform.to_string(),
                    available: if available.is_empty() {
                        "no platforms".into()
                    } else {
                        available
                    },
                })
            }
        }
    }

    /// Layer `number` (from 1, bottom first), as a blob of the registry.
    fn layer(&self, number: usize, d: &Descriptor) -> Result<RemoteLayer, RegistryError> {
        let what = format!("layer {number} ({})", d.digest);
        if !d.urls.is_empty() {
            return Err(RegistryError::Foreign {
                place: self.place(),
                what,
                urls: d.urls.join(", "),
            });
        }
        if manifest::layer_type(&d.media_type) == LayerType::Unknown {
            return Err(RegistryError::MediaType {
                place: self.place(),
                what,
                media_type: d.media_type.clone(),
            });
        }
        let bad = |reason: String| RegistryError::BadDescriptor {
            place: self.place(),
            what: what.clone(),
            reason,
        };
        verify_sha256(&d.digest).map_err(bad)?;
        let size = d
            .size
            .ok_or_else(|| bad("the descriptor gives no size".into()))?;
        Ok(RemoteLayer {
            digest: d.digest.clone(),
            size,
            media_type: d.media_type.clone(),
            blob: Arc::new(RegistryBlob::new(Arc::clone(self.client), &d.digest, size)),
            toc: crate::toc::TocRef::from_annotations(&d.annotations),
        })
    }
}

impl Resolver<'_> {
    /// The blob `digest` of the repository as a layer of unknown media
    /// type (its codec is then told by its first bytes), if there is such
    /// a blob (`None`: 404): its size is read from the `Content-Range` of a one-byte
    /// range request, which every registry layerfs reads from must honour.
    fn lone_blob(&self, digest: &Digest) -> Result<Option<RemoteLayer>, RegistryError> {
        let what = format!("blob {digest}");
        let url = self.client.url(&format!("/blobs/{digest}"));
        let place = self.place();
        let answer = self.client.retry().run(|| {
            let response = self
                .client
                .attempt(&url, &[("Range", "bytes=0-0")], &what)?;
            Ok(transport::header(&response, "content-range").map(str::to_string))
        });
        let content_range = match answer {
            Ok(content_range) => content_range,
            Err(RegistryError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let size = content_range
            .as_deref()
            .and_then(|range| range.strip_prefix("bytes 0-0/"))
            .and_then(|total| total.trim().parse::<u64>().ok())
            .ok_or_else(|| RegistryError::BadRange {
                name: format!("{place}@{digest}"),
                reason: format!(
                    "asked for bytes=0-0, got Content-Range {:?}",
                    content_range.as_deref().unwrap_or("")
                ),
            })?;
        Ok(Some(RemoteLayer {
            digest: digest.clone(),
            size,
            media_type: String::new(),
            toc: None,
            blob: Arc::new(RegistryBlob::new(Arc::clone(self.client), digest, size)),
        }))
    }
}

/// A manifest or index as the registry sent it.
pub(super) struct Fetched {
    /// The response's `Content-Type`, parameters and all.
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    /// `sha256:` of the body, checked where a digest was expected.
    pub digest: Digest,
}

/// Fetches the manifest `target` (a tag or a digest) of one of the media
/// types `accept` lists, as `what`, and checks its digest against
/// `expected`, or against the registry's `Docker-Content-Digest` for a tag
/// (a sha256 one: a header of another algorithm cannot be checked).
pub(super) fn fetch_manifest(
    client: &Client,
    target: &str,
    expected: Option<&Digest>,
    accept: &str,
    what: &str,
) -> Result<Fetched, RegistryError> {
    let url = client.url(&format!("/manifests/{target}"));
    let place = client.place();
    let (content_type, claimed, body) = client.retry().run(|| {
        let mut response = client.attempt(&url, &[("Accept", accept)], what)?;
        let header = |name| transport::header(&response, name).map(str::to_string);
        let (content_type, claimed) = (header("content-type"), header("docker-content-digest"));
        let body = transport::read_small(&mut response, MAX_MANIFEST, place, what)?;
        Ok((content_type, claimed, body))
    })?;
    let digest = Digest::sha256(&body);
    let claimed = claimed
        .filter(|c| c.starts_with("sha256:"))
        .map(|c| {
            Digest::parse(&c).map_err(|e| RegistryError::BadAnswer {
                place: place.to_string(),
                what: what.to_string(),
                reason: format!("its Docker-Content-Digest header {e}"),
            })
        })
        .transpose()?;
    if let Some(expected) = expected.or(claimed.as_ref()) {
        if *expected != digest {
            return Err(RegistryError::DigestMismatch {
                place: place.to_string(),
                what: what.to_string(),
                expected: expected.to_string(),
                actual: digest.to_string(),
            });
        }
    }
    Ok(Fetched {
        content_type,
        body,
        digest,
    })
}

/// Parses a JSON document fetched as `what`.
pub(super) fn parse<T: DeserializeOwned>(
    place: &str,
    what: &str,
    body: &[u8],
) -> Result<T, RegistryError> {
    serde_json::from_slice(body).map_err(|source| RegistryError::Json {
        place: place.to_string(),
        what: what.to_string(),
        source,
    })
}
