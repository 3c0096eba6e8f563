//! The layer arguments of a command, turned into the layers to open: loose
//! layer files as they are, each image argument expanded to its layers,
//! with the digests they must have, and any other directory as a layer of
//! its own (an extracted layer, or an overlayfs upper directory).

use std::path::PathBuf;

use crate::image::{self, Image, ImageError, Platform, Selection};
use crate::stack::LayerSpec;

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
}

impl LayerInputs {
    /// Loose layer files, checked against nothing.
    pub fn files(args: Vec<PathBuf>) -> LayerInputs {
        LayerInputs {
            args,
            platform: None,
            verify: true,
            digests: Vec::new(),
        }
    }
}

/// Why the layer arguments could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// An image argument could not be resolved.
    #[error(transparent)]
    Image(#[from] ImageError),
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
    let selection = Selection {
        platform: inputs
            .platform
            .as_deref()
            .map(Platform::parse)
            .transpose()?,
    };
    let mut specs = Vec::new();
    let mut images = Vec::new();
    for arg in &inputs.args {
        match image::open(arg, &selection)? {
            Some(image) => {
                specs.extend(image.layers.iter().map(|layer| LayerSpec {
                    path: layer.path.clone(),
                    directory: false,
                    range: Some((layer.offset, layer.len)),
                    verify: layer.digest.clone().filter(|_| inputs.verify),
                    remote: None,
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
        let (number, digest) = text
            .split_once('=')
            .ok_or_else(|| bad("expected N=sha256:<hex>, N the layer (1 = bottom)"))?;
        let spec = number
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|n| specs.get_mut(n))
            .ok_or_else(|| bad(&format!("there is no layer {number}")))?;
        if spec.directory {
            return Err(bad(&format!(
                "layer {number} is a directory ({}), which has no digest",
                spec.path.display()
            )));
        }
        if inputs.verify {
            spec.verify = Some(digest.to_string());
        }
    }
    Ok((specs, images))
}
