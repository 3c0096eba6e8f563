//! From an image's top-level index (or `docker save` manifest) to one
//! manifest's layers: tags, digests, nested indexes and platforms.

use serde::de::DeserializeOwned;

use crate::digest::Digest;
use crate::source::{Codec, LayerSource};

use super::manifest::{self, Config, Descriptor, DockerEntry, Index, Kind, LayerType, Manifest};
use super::store::{blob_name, Located, Selector, Store};
use super::{ImageError, ImageLayer, Platform, Selection};

/// How deep indexes may nest (real images: one level).
const MAX_DEPTH: usize = 4;

/// The layers of the manifest `selector` (or the only one, or the
/// platform's) picks, bottom first.
pub(super) fn layers(
    store: &Store,
    image: &str,
    selector: Option<&Selector>,
    selection: &Selection,
) -> Result<Vec<ImageLayer>, ImageError> {
    let platform = selection.platform.clone().unwrap_or_else(Platform::host);
    let resolver = Resolver {
        store,
        image,
        platform: &platform,
    };
    if store.has("index.json") && store.has("oci-layout") {
        let index: Index = resolver.document("index.json")?;
        let descriptor = resolver.pick(&index.manifests, selector)?;
        let manifest = resolver.manifest(descriptor, 1)?;
        resolver.oci_layers(&manifest)
    } else if store.has("manifest.json") {
        resolver.docker_layers(selector)
    } else {
        Err(ImageError::Missing {
            image: image.to_string(),
            what: "index.json (with oci-layout) or manifest.json".into(),
        })
    }
}

struct Resolver<'a> {
    store: &'a Store,
    image: &'a str,
    platform: &'a Platform,
}

impl Resolver<'_> {
    /// Parses the JSON document `name`.
    fn document<T: DeserializeOwned>(&self, name: &str) -> Result<T, ImageError> {
        let bytes = self.store.read(name, self.image)?;
        serde_json::from_slice(&bytes).map_err(|source| ImageError::Json {
            image: self.image.to_string(),
            what: name.to_string(),
            source,
        })
    }

    /// Parses the JSON blob a descriptor points to.
    fn blob_document<T: DeserializeOwned>(
        &self,
        descriptor: &Descriptor,
        what: &str,
    ) -> Result<T, ImageError> {
        let name = blob_name(&descriptor.digest);
        if !self.store.has(&name) {
            return Err(ImageError::MissingBlob {
                image: self.image.to_string(),
                digest: descriptor.digest.to_string(),
                what: what.to_string(),
            });
        }
        self.document(&name)
    }

    /// The one descriptor of `candidates` wanted: the one `selector`
    /// names, else the only one, else the one for the platform.
    fn pick<'d>(
        &self,
        candidates: &'d [Descriptor],
        selector: Option<&Selector>,
    ) -> Result<&'d Descriptor, ImageError> {
        let chosen: Vec<&Descriptor> = candidates
            .iter()
            .filter(|d| match selector {
                Some(Selector::Tag(tag)) => d.annotations.get(manifest::REF_NAME) == Some(tag),
                Some(Selector::Digest(digest)) => &d.digest == digest,
                None => true,
            })
            .collect();
        match chosen.as_slice() {
            [] => Err(ImageError::NoManifest {
                image: self.image.to_string(),
                selector: selector.map_or_else(String::new, Selector::to_string),
                available: describe(candidates),
            }),
            [one] => Ok(one),
            several if several.iter().all(|d| d.platform.is_some()) => self.for_platform(several),
            several => Err(ImageError::Ambiguous {
                image: self.image.to_string(),
                available: describe(several.iter().copied()),
            }),
        }
    }

    /// The first of `candidates` for the platform wanted.
    fn for_platform<'d>(
        &self,
        candidates: &[&'d Descriptor],
    ) -> Result<&'d Descriptor, ImageError> {
        candidates
            .iter()
            .copied()
            .find(|d| {
                d.platform.as_ref().is_some_and(|p| {
                    self.platform
                        .matches(&p.os, &p.architecture, p.variant.as_deref())
                })
            })
            .ok_or_else(|| ImageError::NoPlatform {
                image: self.image.to_string(),
                wanted: self.platform.to_string(),
                available: platforms(candidates.iter().copied()),
            })
    }

    /// The manifest a descriptor leads to, through nested indexes.
    fn manifest(&self, descriptor: &Descriptor, depth: usize) -> Result<Manifest, ImageError> {
        if depth > MAX_DEPTH {
            return Err(ImageError::TooDeep {
                image: self.image.to_string(),
                limit: MAX_DEPTH,
            });
        }
        match manifest::kind(&descriptor.media_type) {
            Kind::Manifest => self.blob_document(descriptor, "manifest"),
            Kind::Index => {
                let index: Index = self.blob_document(descriptor, "index")?;
                let next = self.pick(&index.manifests, None)?;
                self.manifest(next, depth + 1)
            }
            Kind::Other => Err(ImageError::NotAManifest {
                image: self.image.to_string(),
                digest: descriptor.digest.clone(),
                media_type: descriptor.media_type.clone(),
            }),
        }
    }

    /// The layers of an OCI (or Docker schema 2) manifest.
    fn oci_layers(&self, manifest: &Manifest) -> Result<Vec<ImageLayer>, ImageError> {
        manifest
            .layers
            .iter()
            .enumerate()
            .map(|(n, d)| self.oci_layer(n + 1, d))
            .collect()
    }

    fn oci_layer(&self, number: usize, d: &Descriptor) -> Result<ImageLayer, ImageError> {
        let kind = manifest::layer_type(&d.media_type);
        if kind == LayerType::Unknown {
            return Err(ImageError::MediaType {
                image: self.image.to_string(),
                number,
                digest: d.digest.clone(),
                media_type: d.media_type.clone(),
            });
        }
        let found = self.store.locate(&blob_name(&d.digest));
        let Some(Located { path, offset, len }) = found else {
            return Err(if kind == LayerType::Nondistributable {
                ImageError::Nondistributable {
                    image: self.image.to_string(),
                    number,
                    digest: d.digest.clone(),
                    urls: if d.urls.is_empty() {
                        "no URLs given".into()
                    } else {
                        d.urls.join(", ")
                    },
                }
            } else {
                ImageError::MissingBlob {
                    image: self.image.to_string(),
                    digest: d.digest.to_string(),
                    what: format!("layer {number}"),
                }
            });
        };
        Ok(ImageLayer {
            path,
            offset,
            len,
            digest: Some(d.digest.clone()),
            media_type: d.media_type.clone(),
            toc: crate::toc::TocRef::from_annotations(&d.annotations),
        })
    }

    /// The layers of a `docker save` archive's image.
    fn docker_layers(&self, selector: Option<&Selector>) -> Result<Vec<ImageLayer>, ImageError> {
        let entries: Vec<DockerEntry> = self.document("manifest.json")?;
        let tags = |e: &DockerEntry| e.repo_tags.clone().unwrap_or_default();
        let chosen: Vec<&DockerEntry> = entries
            .iter()
            .filter(|e| match selector {
                Some(Selector::Tag(tag)) => tags(e)
                    .iter()
                    .any(|t| t == tag || t.rsplit_once(':').is_some_and(|(_, t)| t == tag)),
                Some(Selector::Digest(_)) => false,
                None => true,
            })
            .collect();
        let all_tags = || entries.iter().flat_map(tags).collect::<Vec<_>>().join(", ");
        let entry = match chosen.as_slice() {
            [one] => *one,
            [] => {
                return Err(ImageError::NoManifest {
                    image: self.image.to_string(),
                    selector: selector.map_or_else(String::new, Selector::to_string),
                    available: all_tags(),
                })
            }
            _ => {
                return Err(ImageError::Ambiguous {
                    image: self.image.to_string(),
                    available: all_tags(),
                })
            }
        };
        let config: Config = self.document(&entry.config)?;
        let diff_ids = config.rootfs.map(|r| r.diff_ids).unwrap_or_default();
        entry
            .layers
            .iter()
            .enumerate()
            .map(|(n, name)| self.docker_layer(n + 1, name, diff_ids.get(n)))
            .collect()
    }

    /// One layer of a `docker save` image. Its digest is the blob's name in
    /// a layout-style archive (`blobs/sha256/HEX`); else the config's
    /// `diff_id`, which is the blob's digest only if the blob is a plain tar.
    fn docker_layer(
        &self,
        number: usize,
        name: &str,
        diff_id: Option<&Digest>,
    ) -> Result<ImageLayer, ImageError> {
        let Located { path, offset, len } =
            self.store
                .locate(name)
                .ok_or_else(|| ImageError::MissingBlob {
                    image: self.image.to_string(),
                    digest: name.to_string(),
                    what: format!("layer {number}"),
                })?;
        let named = name
            .strip_prefix("blobs/")
            .and_then(|rest| rest.split_once('/'))
            .map(|(algorithm, hex)| {
                Digest::parse(&format!("{algorithm}:{hex}")).map_err(|source| {
                    ImageError::BadDigest {
                        image: self.image.to_string(),
                        what: format!("layer {number} ({name})"),
                        source,
                    }
                })
            })
            .transpose()?;
        let plain = LayerSource::open_range(&path, offset, len)?.codec() == Codec::Plain;
        let digest = named.or_else(|| diff_id.filter(|_| plain).cloned());
        let media_type = if plain {
            "application/vnd.docker.image.rootfs.diff.tar"
        } else {
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        };
        Ok(ImageLayer {
            path,
            offset,
            len,
            digest,
            media_type: media_type.to_string(),
            toc: None,
        })
    }
}

/// The descriptors, by tag where they have one, for messages.
fn describe<'d>(descriptors: impl IntoIterator<Item = &'d Descriptor>) -> String {
    let names: Vec<String> = descriptors
        .into_iter()
        .map(
            |d| match (d.annotations.get(manifest::REF_NAME), &d.platform) {
                (Some(tag), _) => format!("tag {tag}"),
                (None, Some(p)) => format!("{} for {}/{}", d.digest, p.os, p.architecture),
                (None, None) => d.digest.to_string(),
            },
        )
        .collect();
    if names.is_empty() {
        "no manifests".into()
    } else {
        names.join(", ")
    }
}

/// The platforms of descriptors, for messages.
pub(crate) fn platforms<'d>(descriptors: impl IntoIterator<Item = &'d Descriptor>) -> String {
    descriptors
        .into_iter()
        .filter_map(|d| d.platform.as_ref())
        .map(|p| match &p.variant {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
