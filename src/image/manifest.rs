//! The JSON documents of an image, as far as layerfs reads them.

use std::collections::HashMap;

use serde::Deserialize;

use crate::digest::Digest;

/// The annotation that tags a manifest in a layout's `index.json`.
pub(super) const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An OCI index (also a Docker manifest list): a list of manifests.
#[derive(Debug, Deserialize)]
pub(crate) struct Index {
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// An image manifest (OCI, or Docker schema 2): the config and the layers.
#[derive(Debug, Deserialize)]
pub(crate) struct Manifest {
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// A reference to a blob.
#[derive(Debug, Deserialize)]
pub(crate) struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// Parsed with the document: a malformed digest fails it, naming it.
    pub digest: Digest,
    /// The blob's length; a layout's blob files tell it anyway, a
    /// registry's blobs only through here.
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub urls: Vec<String>,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    pub platform: Option<DescriptorPlatform>,
}

/// The platform a manifest of an index is for.
#[derive(Debug, Deserialize)]
pub(crate) struct DescriptorPlatform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    pub variant: Option<String>,
}

/// One image of a `docker save` archive's `manifest.json`.
#[derive(Debug, Deserialize)]
pub(super) struct DockerEntry {
    #[serde(rename = "Config", default)]
    pub config: String,
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    pub layers: Vec<String>,
}

/// The part of an image config that names each layer's uncompressed digest.
#[derive(Debug, Deserialize)]
pub(super) struct Config {
    #[serde(default)]
    pub rootfs: Option<RootFs>,
}

/// `rootfs` of an image config.
#[derive(Debug, Deserialize)]
pub(super) struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

/// What a descriptor points to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Index,
    Manifest,
    Other,
}

/// Classifies a manifest or index media type.
pub(crate) fn kind(media_type: &str) -> Kind {
    match media_type {
        "application/vnd.oci.image.index.v1+json"
        | "application/vnd.docker.distribution.manifest.list.v2+json" => Kind::Index,
        "application/vnd.oci.image.manifest.v1+json"
        | "application/vnd.docker.distribution.manifest.v2+json" => Kind::Manifest,
        _ => Kind::Other,
    }
}

/// How a layer media type is taken.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LayerType {
    /// A tar layer, plain or compressed (the codec is sniffed anyway).
    Tar,
    /// A tar layer that registries may not ship: used only if present.
    Nondistributable,
    /// Not a layer layerfs reads.
    Unknown,
}

/// Classifies a layer media type.
pub(crate) fn layer_type(media_type: &str) -> LayerType {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => LayerType::Tar,
        "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
            LayerType::Nondistributable
        }
        _ => LayerType::Unknown,
    }
}
