//! eStargz: a gzip layer whose last members are its TOC (a tar holding
//! `stargz.index.json`) and a footer, an empty gzip member whose extra
//! field gives the TOC's offset.

use std::io::Read;

use super::{check_sha256, read_stored, TocFault, MAX_TOC};
use crate::digest::Digest;
use crate::source::LayerSource;

/// The TOC's name in its tar.
const TOC_NAME: &[u8] = b"stargz.index.json";

/// Files eStargz adds for prefetching, which are no part of the layer.
const LANDMARKS: [&[u8]; 2] = [b".prefetch.landmark", b".no.prefetch.landmark"];

/// The footer: a gzip header with a 26-byte extra field (subfield `SG`,
/// then `%016xSTARGZ`), an empty stored block and the trailer.
const FOOTER: usize = 51;

/// The footer of the first stargz: the same without the subfield header.
const LEGACY_FOOTER: usize = 47;

/// Whether `path` is the TOC entry or a landmark, however the tar spells
/// the name (`./` prefixes).
pub(super) fn is_bookkeeping(path: &[u8]) -> bool {
    let mut name = path;
    while let Some(rest) = name.strip_prefix(b"./") {
        name = rest;
    }
    let name = name.strip_prefix(b"/").unwrap_or(name);
    name == TOC_NAME || LANDMARKS.contains(&name)
}

/// The offset of the TOC's gzip member, from the footer at the end of
/// `tail` (the blob's last [`FOOTER`] bytes, or fewer for a short blob).
fn toc_offset(tail: &[u8]) -> Result<(u64, usize), TocFault> {
    let parse = |hex: &[u8]| {
        std::str::from_utf8(hex)
            .ok()
            .and_then(|h| u64::from_str_radix(h, 16).ok())
    };
    let header = |f: &[u8], xlen: u8| f[..4] == [0x1f, 0x8b, 8, 4] && f[10..12] == [xlen, 0];
    if let Some(f) = tail.len().checked_sub(FOOTER).map(|at| &tail[at..]) {
        if header(f, 26) && &f[12..16] == b"SG\x16\x00" && &f[32..38] == b"STARGZ" {
            if let Some(offset) = parse(&f[16..32]) {
                return Ok((offset, FOOTER));
            }
        }
    }
    if let Some(f) = tail.len().checked_sub(LEGACY_FOOTER).map(|at| &tail[at..]) {
        if header(f, 22) && &f[28..34] == b"STARGZ" {
            if let Some(offset) = parse(&f[12..28]) {
                return Ok((offset, LEGACY_FOOTER));
            }
        }
    }
    Err(TocFault::new("the blob does not end in an eStargz footer"))
}

/// The TOC JSON, checked against `digest`, and where the members before
/// it end (the TOC's own offset).
pub(super) fn read_toc(layer: &LayerSource, digest: &Digest) -> Result<(Vec<u8>, u64), TocFault> {
    let len = layer.file_len();
    let tail_len = len.min(FOOTER as u64);
    let tail = read_stored(layer, len - tail_len, tail_len, MAX_TOC, "footer")?;
    let (offset, footer) = toc_offset(&tail)?;
    let end = len - footer as u64;
    if offset >= end {
        return Err(TocFault::new(format!(
            "the footer puts the TOC at offset {offset}, past the members that end at {end}"
        )));
    }
    let compressed = read_stored(layer, offset, end - offset, MAX_TOC, "TOC")?;
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .take(MAX_TOC + 1)
        .read_to_end(&mut tar)
        .map_err(|e| TocFault::new(format!("the TOC at offset {offset} does not inflate: {e}")))?;
    let json = toc_json(&tar)?;
    check_sha256(json, digest, "TOC JSON")?;
    Ok((json.to_vec(), offset))
}

/// The contents of `stargz.index.json`, the TOC tar's first member.
fn toc_json(tar: &[u8]) -> Result<&[u8], TocFault> {
    let mut stream = std::io::Cursor::new(tar);
    let index = crate::tar::index_layer(&mut stream)
        .map_err(|e| TocFault::new(format!("the TOC is not a tar: {e}")))?;
    let member = index
        .members
        .first()
        .filter(|m| m.path == TOC_NAME)
        .ok_or_else(|| TocFault::new("the TOC tar does not start with stargz.index.json"))?;
    let start = usize::try_from(member.data.offset).ok();
    let end = start.and_then(|s| s.checked_add(usize::try_from(member.data.size).ok()?));
    start
        .zip(end)
        .and_then(|(s, e)| tar.get(s..e))
        .ok_or_else(|| TocFault::new("the TOC tar is truncated"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn footer(offset: u64, legacy: bool) -> Vec<u8> {
        let mut f = vec![0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff];
        let text = format!("{offset:016x}STARGZ");
        if legacy {
            f.extend_from_slice(&[22, 0]);
        } else {
            f.extend_from_slice(&[26, 0, b'S', b'G', 22, 0]);
        }
        f.extend_from_slice(text.as_bytes());
        f.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
        f.extend_from_slice(&[0; 8]);
        f
    }

    #[test]
    fn both_footers_give_the_toc_offset() {
        let mut tail = vec![9u8; 10];
        tail.extend(footer(0x2dcc26, false));
        assert_eq!(toc_offset(&tail).ok().map(|t| t.0), Some(0x2dcc26));
        let legacy = footer(77, true);
        assert_eq!(legacy.len(), LEGACY_FOOTER);
        let mut tail = vec![0u8; 4];
        tail.extend(legacy);
        assert_eq!(toc_offset(&tail).ok(), Some((77, LEGACY_FOOTER)));
    }

    #[test]
    fn anything_else_is_not_a_footer() {
        assert!(toc_offset(b"").is_err());
        let mut f = footer(5, false);
        f[33] = b'X';
        assert!(toc_offset(&f).is_err());
        let mut f = footer(5, false);
        f[20] = b'g';
        assert!(toc_offset(&f).is_err());
    }

    #[test]
    fn bookkeeping_names_in_any_spelling() {
        for name in [
            &b"stargz.index.json"[..],
            b"./.prefetch.landmark",
            b"/.no.prefetch.landmark",
        ] {
            assert!(is_bookkeeping(name), "{}", String::from_utf8_lossy(name));
        }
        assert!(!is_bookkeeping(b"etc/stargz.index.json"));
        assert!(!is_bookkeeping(b".landmark"));
    }
}
