//! Where an image's files are: a layout directory or an archive's
//! members, looked up by name the same way.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::archive::{self, Members};
use super::manifest::DockerEntry;
use super::ImageError;
use crate::digest::Digest;

/// The largest JSON document (index, manifest, config) read.
const MAX_DOCUMENT: u64 = 16 << 20;

/// An image's files, in a directory or an archive.
#[derive(Debug)]
pub(super) enum Store {
    /// An OCI image layout directory.
    Dir(PathBuf),
    /// A tar holding an OCI layout or a `docker save` image.
    Archive {
        /// The archive.
        path: PathBuf,
        /// Its regular-file members.
        members: Members,
    },
}

/// A file of the image found: the file holding it, and its range there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Located {
    pub path: PathBuf,
    pub offset: u64,
    pub len: u64,
}

impl Store {
    /// The image at `path`, if it is one: a directory with `oci-layout`, or
    /// an image archive (see [`archive::members`]). `None` for anything
    /// else, including a path that does not exist.
    pub(super) fn open(path: &Path) -> Result<Option<Store>, ImageError> {
        let Ok(meta) = std::fs::metadata(path) else {
            return Ok(None);
        };
        if meta.is_dir() {
            return Ok(path
                .join("oci-layout")
                .is_file()
                .then(|| Store::Dir(path.to_path_buf())));
        }
        if !meta.is_file() {
            return Ok(None);
        }
        let store = archive::members(path)?.map(|members| Store::Archive {
            path: path.to_path_buf(),
            members,
        });
        Ok(store.filter(Store::holds_an_image))
    }

    /// Whether an archive's documents are an image's: a layer may well
    /// hold a `manifest.json` or `index.json` of its own at its root, so
    /// only one whose index parses, or whose `manifest.json` lists images
    /// whose layers are all there, is taken for an image.
    fn holds_an_image(&self) -> bool {
        let parses = |name: &str| -> Option<serde_json::Value> {
            serde_json::from_slice(&self.read(name, "").ok()?).ok()
        };
        if self.has("oci-layout") && parses("index.json").is_some_and(|i| i["manifests"].is_array())
        {
            return true;
        }
        let Some(entries) = parses("manifest.json") else {
            return false;
        };
        let entries: Vec<DockerEntry> = serde_json::from_value(entries).unwrap_or_default();
        !entries.is_empty()
            && entries
                .iter()
                .all(|e| !e.layers.is_empty() && e.layers.iter().all(|l| self.has(l)))
    }

    /// The file named `name` (relative, `/`-separated), if present.
    pub(super) fn locate(&self, name: &str) -> Option<Located> {
        match self {
            Store::Dir(dir) => {
                let path = dir.join(name);
                let meta = std::fs::metadata(&path).ok().filter(|m| m.is_file())?;
                Some(Located {
                    path,
                    offset: 0,
                    len: meta.len(),
                })
            }
            Store::Archive { path, members } => {
                let &(offset, len) = members.get(name)?;
                Some(Located {
                    path: path.clone(),
                    offset,
                    len,
                })
            }
        }
    }

    /// Whether the image has a file named `name`.
    pub(super) fn has(&self, name: &str) -> bool {
        self.locate(name).is_some()
    }

    /// The contents of the JSON document `name`; `image` names the image
    /// in errors.
    pub(super) fn read(&self, name: &str, image: &str) -> Result<Vec<u8>, ImageError> {
        let found = self.locate(name).ok_or_else(|| ImageError::Missing {
            image: image.to_string(),
            what: name.to_string(),
        })?;
        if found.len > MAX_DOCUMENT {
            return Err(ImageError::TooLarge {
                image: image.to_string(),
                what: name.to_string(),
                size: found.len,
                limit: MAX_DOCUMENT,
            });
        }
        let io_err = |source| ImageError::Io {
            path: found.path.clone(),
            source,
        };
        let file = File::open(&found.path).map_err(io_err)?;
        let mut bytes = vec![0; found.len as usize];
        match self {
            Store::Dir(_) => (&file).take(found.len).read_exact(&mut bytes),
            Store::Archive { .. } => file.read_exact_at(&mut bytes, found.offset),
        }
        .map_err(io_err)?;
        Ok(bytes)
    }
}

/// A tag or digest picking one manifest: `IMAGE:TAG` or `IMAGE@DIGEST`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Selector {
    Tag(String),
    Digest(Digest),
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Tag(tag) => write!(f, "tagged {tag}"),
            Selector::Digest(digest) => write!(f, "with digest {digest}"),
        }
    }
}

/// Splits `IMAGE@DIGEST` or `IMAGE:TAG` when the whole argument names no
/// file but the part before the separator does; `Ok(None)` otherwise (a
/// file named `a:b` is taken as it is). A digest that is split off is
/// parsed here, where it enters.
pub(super) fn split_selector(arg: &Path) -> Result<Option<(PathBuf, Selector)>, ImageError> {
    if arg.symlink_metadata().is_ok() {
        return Ok(None);
    }
    let Some(text) = arg.to_str() else {
        return Ok(None);
    };
    let (base, digest, tag) = match (text.rsplit_once('@'), text.rsplit_once(':')) {
        (Some((base, digest)), _) => (base, Some(digest), None),
        (None, Some((base, tag))) => (base, None, Some(tag)),
        (None, None) => return Ok(None),
    };
    let base = PathBuf::from(base);
    if !base.exists() {
        return Ok(None);
    }
    let selector = match (digest, tag) {
        (Some(digest), _) => {
            Selector::Digest(
                Digest::parse(digest).map_err(|source| ImageError::BadDigest {
                    image: text.to_string(),
                    what: "the digest asked for".into(),
                    source,
                })?,
            )
        }
        (None, tag) => Selector::Tag(tag.unwrap_or_default().to_string()),
    };
    Ok(Some((base, selector)))
}

/// The name of the blob with `digest` in an OCI layout (`blobs/ALG/HEX`):
/// a parsed digest is an algorithm name and hex digits, safe in a path.
pub(super) fn blob_name(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm(), digest.hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_become_blob_names() {
        let hex = "a".repeat(64);
        let digest = Digest::parse(&format!("sha256:{hex}")).expect("digest");
        assert_eq!(blob_name(&digest), format!("blobs/sha256/{hex}"));
    }

    #[test]
    fn selectors_split_only_off_an_existing_base() {
        let dir = tempfile::tempdir().expect("dir");
        let layout = dir.path().join("img");
        std::fs::create_dir(&layout).expect("mkdir");
        let arg = |s: &str| PathBuf::from(format!("{}{s}", layout.display()));
        let split = |arg: &Path| split_selector(arg).expect("split");
        assert_eq!(
            split(&arg(":v1")),
            Some((layout.clone(), Selector::Tag("v1".into())))
        );
        let digest = format!("sha256:{}", "0".repeat(64));
        assert_eq!(
            split(&arg(&format!("@{digest}"))),
            Some((
                layout.clone(),
                Selector::Digest(digest.parse().expect("digest"))
            ))
        );
        assert_eq!(split(&layout), None);
        assert_eq!(split(&dir.path().join("nothing:v1")), None);
        assert_eq!(split(&dir.path().join("nothing@sha256:00")), None);
        let bad = split_selector(&arg("@sha256:00")).expect_err("short digest");
        assert!(
            bad.to_string()
                .contains("\"sha256:00\" is not a valid digest"),
            "{bad}"
        );
    }
}
