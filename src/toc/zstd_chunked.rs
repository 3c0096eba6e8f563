//! zstd:chunked: a zstd layer followed by skippable frames holding its
//! manifest (the table of contents, zstd-compressed JSON) and tar-split
//! data; the layer's annotations say where the manifest lies and what its
//! compressed bytes hash to.

use std::io::Read;

use super::{check_sha256, read_stored, TocFault, MAX_TOC};
use crate::digest::Digest;
use crate::source::LayerSource;

/// The only manifest type there is (`ManifestTypeCRFS`).
const MANIFEST_TYPE: u64 = 1;

/// The manifest's place from the `manifest-position` annotation:
/// `offset:compressed length:length:type`.
fn position(text: &str) -> Result<(u64, u64, u64), TocFault> {
    let numbers: Vec<u64> = text
        .split(':')
        .map(|n| n.parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| TocFault::new(format!("bad manifest position {text:?}")))?;
    match numbers[..] {
        [offset, compressed, len, MANIFEST_TYPE] => Ok((offset, compressed, len)),
        [_, _, _, kind] => Err(TocFault::new(format!("unknown manifest type {kind}"))),
        _ => Err(TocFault::new(format!("bad manifest position {text:?}"))),
    }
}

/// The manifest JSON, checked against `checksum`, and where the layer's
/// frames end (the manifest's skippable frame starts 8 bytes before it).
pub(super) fn read_manifest(
    layer: &LayerSource,
    checksum: &Digest,
    position_text: &str,
) -> Result<(Vec<u8>, u64), TocFault> {
    let (offset, compressed_len, len) = position(position_text)?;
    if len > MAX_TOC {
        return Err(TocFault::new(format!(
            "the manifest takes {len} bytes, more than the {MAX_TOC} allowed"
        )));
    }
    let compressed = read_stored(layer, offset, compressed_len, MAX_TOC, "manifest")?;
    check_sha256(&compressed, checksum, "manifest")?;
    let mut json = Vec::new();
    zstd::stream::read::Decoder::with_buffer(&compressed[..])
        .and_then(|d| d.take(len + 1).read_to_end(&mut json))
        .map_err(|e| TocFault::new(format!("the manifest does not decompress: {e}")))?;
    if json.len() as u64 != len {
        return Err(TocFault::new(format!(
            "the manifest is {} bytes, the annotation says {len}",
            json.len()
        )));
    }
    Ok((json, offset.saturating_sub(8)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse_and_others_are_refused() {
        assert_eq!(position("100:20:300:1").ok(), Some((100, 20, 300)));
        for bad in ["", "1:2:3", "1:2:3:2", "a:2:3:1", "1:2:3:1:5", "-1:2:3:1"] {
            assert!(position(bad).is_err(), "{bad}");
        }
    }
}
