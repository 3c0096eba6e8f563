//! The layer arguments of a command, turned into the layers to open: loose
//! layer files as they are, each image argument expanded to its layers,
//! with the digests they must have, any other directory as a layer of its
//! own (an extracted layer, or an overlayfs upper directory), and a
//! registry reference (`HOST/REPO:TAG`, `docker://…`) as its image's
//! layers, read from the registry on demand.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::digest::Digest;
use crate::image::{self, Image, ImageError, ImageLayer, Platform, Selection};
use crate::registry::{self, RegistryError, RegistryOptions, RemoteImage};
use crate::source::Codec;
use crate::stack::{LayerSpec, RemoteSpec};

/// What a command was given as its layers.
///
/// Images, loose layer files and directories may be mixed: each image
/// stands for its layers, bottom first, in the place it was given (`IMAGE
/// patch.tar` stacks a loose layer on an image). A directory is an image
/// if it holds an `oci-layout` file, else a directory layer.
#[derive(Clone, Debug)]
pub struct LayerInputs {
    /// Layer files and images, bottom first.
    pub args: Vec<PathBuf>,
    /// `--platform os/arch[/variant]`: which manifest of a multi-platform
    /// image (default: the host's).
    pub platform: Option<String>,
    /// Check each layer's digest when it is first indexed (`--no-verify`
    /// turns it off).
    pub verify: bool,
    /// `--digest N=DIGEST`: the digest layer N (1 = bottom, counted after
    /// images are expanded) must have; for loose layers, which carry none.
    pub digests: Vec<String>,
    /// `--insecure`: plain HTTP to a registry that is not on loopback.
    pub insecure: bool,
    /// `--creds USER:PASS` for registries (else `docker login`'s).
    pub creds: Option<String>,
    /// Look for a layerfs index artifact in the registry for registry
    /// layers with no stored index (`--no-remote-index` turns it off).
    pub remote_index: bool,
}

impl LayerInputs {
    /// Loose layer files, checked against nothing.
    pub fn files(args: Vec<PathBuf>) -> LayerInputs {
        LayerInputs {
            args,
            platform: None,
            verify: true,
            digests: Vec::new(),
            insecure: false,
            creds: None,
            remote_index: true,
        }
    }
}

/// Why the layer arguments could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// An image argument could not be resolved.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A `docker://` argument is not a valid reference (the message names
    /// it).
    #[error(transparent)]
    BadReference(Box<RegistryError>),
    /// An argument taken as a registry reference could not be resolved.
    /// A bare one (no `docker://`) is no file here either, which the
    /// message says too: it may be a mistyped path.
    #[error("{arg}: {}{source}", if *bare { "no such file or directory; as a registry reference: " } else { "" })]
    Registry {
        /// The argument.
        arg: String,
        /// Whether it came without `docker://`.
        bare: bool,
        /// What the registry client said.
        source: Box<RegistryError>,
    },
    /// `--digest` is not `N=DIGEST` with N a layer.
    #[error("--digest {text:?}: {why}")]
    DigestArg {
        /// What was given.
        text: String,
        /// What is wrong with it.
        why: String,
    },
}

/// The layers to open, bottom first, and the images among the arguments
/// (for `inspect`).
pub fn resolve(inputs: &LayerInputs) -> Result<(Vec<LayerSpec>, Vec<Image>), InputError> {
    let (specs, images, _) = resolve_all(inputs)?;
    Ok((specs, images))
}

/// What [`resolve_all`] finds: the layers, the images, and the registry
/// images among them (for the index artifacts that refer to them).
pub type Resolved = (Vec<LayerSpec>, Vec<Image>, Vec<RemoteImage>);

/// [`resolve`], and the registry images among the arguments.
pub fn resolve_all(inputs: &LayerInputs) -> Result<Resolved, InputError> {
    let selection = Selection {
        platform: inputs
            .platform
            .as_deref()
            .map(Platform::parse)
            .transpose()?,
    };
    let mut specs = Vec::new();
    let mut images = Vec::new();
    let mut remotes = Vec::new();
    for arg in &inputs.args {
        if let Some(remote) = remote_image(arg, inputs, &selection)? {
            specs.extend(remote.layers.iter().map(|layer| LayerSpec {
                path: PathBuf::from(layer.blob.name()),
                directory: false,
                range: None,
                verify: Some(layer.digest.clone()).filter(|_| inputs.verify),
                remote: Some(RemoteSpec {
                    fetch: Arc::clone(&layer.blob),
                    digest: layer.digest.clone(),
                    codec: codec_of_media_type(&layer.media_type),
                }),
                toc: layer.toc.clone(),
            }));
            images.push(Image {
                name: remote.name.clone(),
                layers: remote
                    .layers
                    .iter()
                    .map(|layer| ImageLayer {
                        path: PathBuf::from(layer.blob.name()),
                        offset: 0,
                        len: layer.size,
                        digest: Some(layer.digest.clone()),
                        media_type: layer.media_type.clone(),
                        toc: layer.toc.clone(),
                    })
                    .collect(),
            });
            remotes.push(remote);
            continue;
        }
        match image::open(arg, &selection)? {
            Some(image) => {
                specs.extend(image.layers.iter().map(|layer| LayerSpec {
                    path: layer.path.clone(),
                    directory: false,
                    range: Some((layer.offset, layer.len)),
                    verify: layer.digest.clone().filter(|_| inputs.verify),
                    remote: None,
                    toc: layer.toc.clone(),
                }));
                images.push(image);
            }
            None if std::fs::metadata(arg).is_ok_and(|m| m.is_dir()) => {
                specs.push(LayerSpec::directory(arg.clone()));
            }
            None => specs.push(LayerSpec::file(arg.clone())),
        }
    }
    for text in &inputs.digests {
        let bad = |why: &str| InputError::DigestArg {
            text: text.clone(),
            why: why.to_string(),
        };
        // The layer number first: a digest for no layer is the mistake
        // to name, whatever the digest.
        let (number, digest) = text
            .split_once('=')
            .ok_or_else(|| bad("expected N=sha256:<hex>, N the layer (1 = bottom)"))?;
        let spec = number
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|n| specs.get_mut(n))
            .ok_or_else(|| bad(&format!("there is no layer {number}")))?;
        if spec.directory || spec.remote.is_some() {
            return Err(bad(&format!(
                "layer {number} is a directory ({}), which has no digest",
                spec.path.display()
            )));
        }
        let digest = Digest::parse(digest).map_err(|e| bad(&e.to_string()))?;
        if inputs.verify {
            spec.verify = Some(digest);
        }
    }
    Ok((specs, images, remotes))
}

/// The image `arg` names in a registry, if it is a registry reference:
/// `docker://…` and a blob's URL (`https://HOST/v2/REPO/blobs/DIGEST`)
/// always; `HOST/REPO…` only when nothing by that name exists
/// here (a local path always wins).
fn remote_image(
    arg: &Path,
    inputs: &LayerInputs,
    selection: &Selection,
) -> Result<Option<RemoteImage>, InputError> {
    let Some(text) = arg.to_str() else {
        return Ok(None);
    };
    let explicit = ["docker://", "http://", "https://"]
        .iter()
        .any(|scheme| text.starts_with(scheme));
    if !explicit && (std::fs::symlink_metadata(arg).is_ok() || local_image_exists(arg)) {
        return Ok(None);
    }
    let reference = match registry::parse(text) {
        Ok(Some(reference)) => reference,
        Ok(None) => return Ok(None),
        // Something that is neither a file here nor a well-formed
        // reference: the file error ("no such file") says more, unless a
        // reference was clearly meant.
        Err(_) if !explicit => return Ok(None),
        Err(e) => return Err(InputError::BadReference(Box::new(e))),
    };
    let fail = |source| InputError::Registry {
        arg: text.to_string(),
        bare: !explicit,
        source: Box::new(source),
    };
    let options = RegistryOptions {
        insecure: inputs.insecure,
        creds: inputs.creds.clone(),
        platform: selection.platform.clone(),
        docker_config: None,
        retry: None,
    };
    registry::resolve(&reference, &options)
        .map(Some)
        .map_err(fail)
}

/// Whether `arg` is a local image with a selector (`DIR:TAG`, `DIR@…`),
/// whose full text is no path of its own.
fn local_image_exists(arg: &Path) -> bool {
    let text = arg.to_string_lossy();
    [':', '@']
        .iter()
        .filter_map(|sep| text.rsplit_once(*sep))
        .any(|(base, _)| !base.is_empty() && Path::new(base).exists())
}

/// The codec a layer's media type names, if it names one; the blob's
/// first bytes tell otherwise.
fn codec_of_media_type(media_type: &str) -> Option<Codec> {
    let suffix = media_type.rsplit(['+', '.']).next().unwrap_or_default();
    match suffix {
        "gzip" => Some(Codec::Gzip),
        "zstd" => Some(Codec::Zstd),
        "tar" => Some(Codec::Plain),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_name_their_codecs() {
        for (media_type, codec) in [
            ("application/vnd.oci.image.layer.v1.tar", Some(Codec::Plain)),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                Some(Codec::Gzip),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                Some(Codec::Zstd),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Some(Codec::Gzip),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar",
                Some(Codec::Plain),
            ),
            ("application/vnd.example.layer.v1.tar+lz4", None),
            ("", None),
        ] {
            assert_eq!(codec_of_media_type(media_type), codec, "{media_type}");
        }
    }

    #[test]
    fn local_paths_win_over_references() {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("a.b");
        std::fs::create_dir(&layout).unwrap();
        let with_tag = PathBuf::from(format!("{}:v1", layout.display()));
        assert!(local_image_exists(&with_tag));
        assert!(!local_image_exists(Path::new("nowhere.example/repo:tag")));
    }
}
