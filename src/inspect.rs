//! `layerfs inspect`: an image's layers as stored and as merged: media
//! type, sizes, digest, entries, and how much of the layers below each one
//! hides.

use std::io::{self, Write};

use serde::Serialize;

use crate::digest::Digest;
use crate::escape::Escaped;
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
    pub digest: Option<Digest>,
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

/// Writes the report as a table, one line per layer, for a terminal:
/// columns two spaces apart, each as wide as its widest cell, numbers
/// right-aligned under their heading (`--json` is the form for scripts).
pub fn write_text(reports: &[LayerReport], out: &mut dyn Write) -> io::Result<()> {
    let rows: Vec<[String; 7]> = reports
        .iter()
        .map(|r| {
            [
                r.layer.to_string(),
                Escaped(r.media_type.as_bytes()).to_string(),
                r.compressed_bytes.to_string(),
                r.uncompressed_bytes.to_string(),
                r.entries.to_string(),
                r.hides.to_string(),
                r.digest
                    .as_ref()
                    .map_or_else(|| "-".to_string(), Digest::to_string),
            ]
        })
        .collect();
    let mut widths = HEADINGS.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    write_row(&HEADINGS, &widths, out)?;
    for row in &rows {
        write_row(row, &widths, out)?;
    }
    Ok(())
}

/// The table's headings; the columns of [`NUMERIC`] hold numbers.
const HEADINGS: [&str; 7] = [
    "LAYER",
    "MEDIA TYPE",
    "COMPRESSED",
    "UNCOMPRESSED",
    "ENTRIES",
    "HIDES",
    "DIGEST",
];
const NUMERIC: [bool; 7] = [true, false, true, true, true, true, false];

/// One line of the table; the last column is not padded, so no line ends
/// in blanks.
fn write_row(
    cells: &[impl AsRef<str>; 7],
    widths: &[usize; 7],
    out: &mut dyn Write,
) -> io::Result<()> {
    let last = cells.len() - 1;
    for (i, ((cell, &width), &numeric)) in cells.iter().zip(widths).zip(&NUMERIC).enumerate() {
        let cell = cell.as_ref();
        let separator = if i == 0 { "" } else { "  " };
        match (numeric, i == last) {
            (true, _) => write!(out, "{separator}{cell:>width$}")?,
            (false, false) => write!(out, "{separator}{cell:<width$}")?,
            (false, true) => write!(out, "{separator}{cell}")?,
        }
    }
    writeln!(out)
}

/// Writes the report as one JSON object per layer, one per line.
pub fn write_json(reports: &[LayerReport], out: &mut dyn Write) -> io::Result<()> {
    for r in reports {
        serde_json::to_writer(&mut *out, r)?;
        writeln!(out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(
        layer: usize,
        media_type: &str,
        sizes: [u64; 4],
        digest: Option<&str>,
    ) -> LayerReport {
        LayerReport {
            layer,
            media_type: media_type.to_string(),
            codec: "gzip".to_string(),
            compressed_bytes: sizes[0],
            uncompressed_bytes: sizes[1],
            digest: digest.map(|d| d.parse().expect("digest")),
            entries: sizes[2],
            hides: sizes[3],
        }
    }

    #[test]
    fn the_table_lines_up_under_its_headings() {
        let (aa, bb) = (
            format!("sha256:{}", "a".repeat(64)),
            format!("sha256:{}", "b".repeat(64)),
        );
        let reports = [
            report(
                1,
                "application/vnd.oci.image.layer.v1.tar+gzip",
                [123, 10_240, 7, 0],
                Some(&aa),
            ),
            report(2, "x/y", [98_765_432_100, 3, 12_345_678, 1], None),
            report(10, "evil\nLAYER", [1, 2, 3, 4], Some(&bb)),
        ];
        let mut out = Vec::new();
        write_text(&reports, &mut out).expect("write");
        assert_eq!(
            String::from_utf8_lossy(&out),
            format!(
                "\
LAYER  MEDIA TYPE                                    COMPRESSED  UNCOMPRESSED   ENTRIES  HIDES  DIGEST
    1  application/vnd.oci.image.layer.v1.tar+gzip          123         10240         7      0  {aa}
    2  x/y                                          98765432100             3  12345678      1  -
   10  evil\\nLAYER                                            1             2         3      4  {bb}
"
            )
        );
    }
}
