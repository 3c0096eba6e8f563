//! `layerfs inspect`: an image's layers as stored and as merged: media
//! type, sizes, digest, entries, and how much of the layers below each one
//! hides.

use std::io::{self, Write};

use serde::Serialize;

use crate::image::Image;
use crate::stack::Stack;

/// One layer of an inspected image.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct LayerReport {
    /// 1 = bottom.
    pub layer: usize,
    /// The media type the manifest gives.
    pub media_type: String,
    /// The codec recognised from the blob's bytes.
    pub codec: String,
    /// The blob's size as stored.
    pub compressed_bytes: u64,
    /// The tar's size as its index knows it (see
    /// [`crate::stack::LayerStats::tar_bytes`]).
    pub uncompressed_bytes: u64,
    /// The digest the image gives, if any.
    pub digest: Option<String>,
    /// Members of the layer's tar.
    pub entries: u64,
    /// Names of the layers below that this layer's whiteouts, opaque
    /// directories and tombstones hide (a hidden directory counts with
    /// everything under it).
    pub hides: u64,
}

/// The report of `image`'s layers, from `stack`, which must hold exactly
/// the image's layers and have been opened with removals recorded.
pub fn report(image: &Image, stack: &Stack) -> Vec<LayerReport> {
    let mut hides = vec![0u64; stack.layers().len()];
    for removal in stack.removals() {
        if let Some(slot) = hides.get_mut(removal.layer as usize) {
            *slot += removal.hides.iter().map(|h| h.entries).sum::<u64>();
        }
    }
    image
        .layers
        .iter()
        .zip(stack.layers())
        .enumerate()
        .map(|(n, (layer, source))| {
            let stats = stack.layer_stats().get(n).copied().unwrap_or_default();
            LayerReport {
                layer: n + 1,
                media_type: layer.media_type.clone(),
                codec: source.format().to_string(),
                compressed_bytes: layer.len,
                uncompressed_bytes: stats.tar_bytes,
                digest: layer.digest.clone(),
                entries: stats.entries,
                hides: hides.get(n).copied().unwrap_or(0),
            }
        })
        .collect()
}

/// Writes the report as a table, one line per layer.
pub fn write_text(reports: &[LayerReport], out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "LAYER\tMEDIA TYPE\tCOMPRESSED\tUNCOMPRESSED\tENTRIES\tHIDES\tDIGEST"
    )?;
    for r in reports {
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            r.layer,
            r.media_type,
            r.compressed_bytes,
            r.uncompressed_bytes,
            r.entries,
            r.hides,
            r.digest.as_deref().unwrap_or("-")
        )?;
    }
    Ok(())
}

/// Writes the report as one JSON object per layer, one per line.
pub fn write_json(reports: &[LayerReport], out: &mut dyn Write) -> io::Result<()> {
    for r in reports {
        serde_json::to_writer(&mut *out, r)?;
        writeln!(out)?;
    }
    Ok(())
}
