//! Hand-made OCI image layouts: blobs written under their digests, the
//! manifests, indexes and `index.json` written as JSON values, so a test
//! states exactly the image it needs (a nested multi-platform index, a
//! manifest of plain layers) where umoci and skopeo would choose for it.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// The annotation a layout's `index.json` tags a descriptor with.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(bytes);
    digest_of(hasher)
}

/// `sha256:<hex>` of what `hasher` was fed.
pub fn digest_of(hasher: Sha256) -> String {
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

pub fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(bytes), &mut out)
        .expect("gunzip");
    out
}

/// A layout directory being written.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        fs::create_dir_all(dir.join("blobs/sha256")).expect("layout dirs");
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("oci-layout");
        Layout {
            dir: dir.to_path_buf(),
        }
    }

    /// Stores a blob; returns its descriptor's digest and size.
    pub fn blob(&self, bytes: &[u8]) -> (String, usize) {
        let digest = sha256(bytes);
        fs::write(self.blob_path(&digest), bytes).expect("blob");
        (digest, bytes.len())
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// A manifest of `layers` (media type, digest, size) with a config
    /// that lists no diff_ids; returns its digest and size.
    pub fn manifest(&self, layers: &[(String, String, usize)]) -> (String, usize) {
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        self.image_manifest(&config, layers)
    }

    /// A manifest of `layers` (media type, digest, size) with `config`;
    /// returns its digest and size.
    pub fn image_manifest(
        &self,
        config: &serde_json::Value,
        layers: &[(String, String, usize)],
    ) -> (String, usize) {
        let (config, config_size) = self.blob(config.to_string().as_bytes());
        let layers: Vec<serde_json::Value> = layers
            .iter()
            .map(|(media_type, digest, size)| {
                serde_json::json!({"mediaType": media_type, "digest": digest, "size": size})
            })
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": CONFIG, "digest": config, "size": config_size},
            "layers": layers,
        });
        self.blob(manifest.to_string().as_bytes())
    }

    /// Writes `index.json` listing `manifests` (descriptors).
    pub fn index(&self, manifests: serde_json::Value) {
        let index = serde_json::json!({"schemaVersion": 2, "manifests": manifests});
        fs::write(self.dir.join("index.json"), index.to_string()).expect("index.json");
    }

    /// A blob parsed as JSON (a manifest, an index, a config).
    pub fn json_blob(&self, digest: &str) -> serde_json::Value {
        let bytes = fs::read(self.blob_path(digest))
            .unwrap_or_else(|e| panic!("read blob {digest} of {}: {e}", self.dir.display()));
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("blob {digest} of {}: {e}", self.dir.display()))
    }

    /// The digest `index.json` tags `tag`.
    pub fn tagged(&self, tag: &str) -> String {
        let path = self.dir.join("index.json");
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(&path).expect("read index.json"))
                .expect("parse index.json");
        index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["annotations"][REF_NAME] == tag)
            .and_then(|d| d["digest"].as_str())
            .unwrap_or_else(|| panic!("{} tags no {tag}", path.display()))
            .to_string()
    }

    /// The layer descriptors (media type, digest, size) of manifest
    /// `digest`, bottom first.
    pub fn layers(&self, manifest: &str) -> Vec<(String, String, usize)> {
        let manifest = self.json_blob(manifest);
        manifest["layers"]
            .as_array()
            .expect("manifest layers")
            .iter()
            .map(|l| {
                (
                    l["mediaType"].as_str().expect("mediaType").to_string(),
                    l["digest"].as_str().expect("digest").to_string(),
                    l["size"].as_u64().expect("size") as usize,
                )
            })
            .collect()
    }
}

/// A manifest descriptor, with `extra` fields (platform, annotations).
pub fn manifest_descriptor(
    digest: &str,
    size: usize,
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut d = serde_json::json!({
        "mediaType": MANIFEST,
        "digest": digest,
        "size": size,
    });
    if let (Some(d), Some(extra)) = (d.as_object_mut(), extra.as_object()) {
        d.extend(extra.clone());
    }
    d
}

/// umoci's unpack of an image made of the uncompressed `layers` (bottom
/// first), written under `work`: the reference tree of a runtime that
/// reads layers with Go's archive/tar. Fails the test if umoci fails or is
/// missing (CI installs it).
pub fn umoci_rootfs(work: &Path, layers: &[&[u8]]) -> PathBuf {
    let layout = Layout::new(&work.join("image"));
    let media = "application/vnd.oci.image.layer.v1.tar";
    let descriptors: Vec<(String, String, usize)> = layers
        .iter()
        .map(|layer| {
            let (digest, size) = layout.blob(layer);
            (media.to_string(), digest, size)
        })
        .collect();
    let diff_ids: Vec<String> = layers.iter().map(|layer| sha256(layer)).collect();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (manifest, manifest_size) = layout.image_manifest(&config, &descriptors);
    layout.index(serde_json::json!([manifest_descriptor(
        &manifest,
        manifest_size,
        serde_json::json!({"annotations": {REF_NAME: "t"}}),
    )]));
    let bundle = work.join("bundle");
    // umoci unpacks only as root (it chowns the rootfs).
    super::needs::declared(super::needs::Need::Root);
    super::needs::declared(super::needs::Need::Tool("umoci"));
    let out = std::process::Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:t", layout.dir.display()))
        .arg(&bundle)
        .output()
        .expect("run umoci (CI installs it)");
    assert!(
        out.status.success(),
        "umoci unpack failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bundle.join("rootfs")
}
