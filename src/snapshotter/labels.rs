//! The labels by which containerd's image handlers ask a remote
//! snapshotter to provide a layer itself instead of having it unpacked:
//! the CRI plugin's (`containerd.io/snapshot/cri.*`) and those of
//! stargz-snapshotter's `ctr-remote image rpull`
//! (`containerd.io/snapshot/remote/stargz.*`), and the name the layer's
//! committed snapshot must get (`containerd.io/snapshot.ref`).

use std::collections::BTreeMap;

use crate::digest::Digest;
use crate::registry::{self, Target};

/// The committed snapshot name containerd will look for.
pub const TARGET: &str = "containerd.io/snapshot.ref";
/// The image reference, as the CRI plugin and ctr-remote set it.
const IMAGE_REF: [&str; 2] = [
    "containerd.io/snapshot/cri.image-ref",
    "containerd.io/snapshot/remote/stargz.reference",
];
/// The layer's digest.
const LAYER_DIGEST: [&str; 2] = [
    "containerd.io/snapshot/cri.layer-digest",
    "containerd.io/snapshot/remote/stargz.digest",
];

/// A layer containerd asks to be provided from its registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LazyLayer {
    /// The committed snapshot to create.
    pub target: String,
    /// The blob as `layerfs mount` takes it, by its URL:
    /// `https://HOST/v2/REPO/blobs/DIGEST`.
    pub reference: String,
    /// The blob's digest.
    pub digest: Digest,
}

/// The lazy layer the labels ask for, if they name one completely and
/// well-formed; otherwise the layer is unpacked the ordinary way.
pub fn lazy_layer(labels: &BTreeMap<String, String>) -> Option<LazyLayer> {
    let first = |names: [&str; 2]| names.iter().find_map(|n| labels.get(*n));
    let target = labels.get(TARGET)?;
    let image = first(IMAGE_REF)?;
    let digest = first(LAYER_DIGEST)?;
    let image_digest = format!("docker://{}@{digest}", repository_of(image));
    match registry::parse(&image_digest) {
        Ok(Some(registry::Reference {
            registry,
            repository,
            target: Target::Digest(digest),
            ..
        })) => Some(LazyLayer {
            target: target.clone(),
            // Plain HTTP where the registry options say so (loopback,
            // --insecure), whatever the scheme here.
            reference: format!("https://{registry}/v2/{repository}/blobs/{digest}"),
            digest,
        }),
        Ok(_) => {
            log::warn!("{image} / {digest}: not a registry blob layerfs can read; unpacking it");
            None
        }
        Err(e) => {
            log::warn!("{image} / {digest}: {e}; unpacking the layer");
            None
        }
    }
}

/// `HOST/REPO` of an image reference: without its digest or tag (a tag
/// is a `:` after the last `/`, a port one before it).
fn repository_of(image: &str) -> &str {
    let image = image.trim_start_matches("docker://");
    let image = image.split_once('@').map_or(image, |(name, _)| name);
    let last = image.rfind('/').map_or(0, |i| i + 1);
    match image[last..].find(':') {
        Some(colon) => &image[..last + colon],
        None => image,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn repositories_lose_tags_and_digests_but_not_ports() {
        assert_eq!(
            repository_of("127.0.0.1:5000/img:tag"),
            "127.0.0.1:5000/img"
        );
        assert_eq!(repository_of("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b");
        assert_eq!(
            repository_of(&format!("reg.example/a/b:1@{DIGEST}")),
            "reg.example/a/b"
        );
        assert_eq!(
            repository_of("docker.io/library/busybox:latest"),
            "docker.io/library/busybox"
        );
    }

    #[test]
    fn cri_and_ctr_remote_labels_both_name_a_lazy_layer() {
        for (image_label, digest_label) in IMAGE_REF.iter().zip(LAYER_DIGEST) {
            let labels = BTreeMap::from([
                (TARGET.to_string(), "sha256:chain".to_string()),
                (image_label.to_string(), "127.0.0.1:5000/img:v1".to_string()),
                (digest_label.to_string(), DIGEST.to_string()),
            ]);
            assert_eq!(
                lazy_layer(&labels),
                Some(LazyLayer {
                    target: "sha256:chain".into(),
                    reference: format!("https://127.0.0.1:5000/v2/img/blobs/{DIGEST}"),
                    digest: DIGEST.parse().expect("digest"),
                })
            );
        }
    }

    #[test]
    fn incomplete_or_malformed_labels_mean_the_ordinary_path() {
        let complete = BTreeMap::from([
            (TARGET.to_string(), "sha256:chain".to_string()),
            (
                IMAGE_REF[0].to_string(),
                "127.0.0.1:5000/img:v1".to_string(),
            ),
            (LAYER_DIGEST[0].to_string(), DIGEST.to_string()),
        ]);
        for missing in [TARGET, IMAGE_REF[0], LAYER_DIGEST[0]] {
            let mut labels = complete.clone();
            labels.remove(missing);
            assert_eq!(lazy_layer(&labels), None, "without {missing}");
        }
        let mut bad = complete;
        bad.insert(LAYER_DIGEST[0].to_string(), "md5:xyz".into());
        assert_eq!(lazy_layer(&bad), None);
    }
}
