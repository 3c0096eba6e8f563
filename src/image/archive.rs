//! An image packed as one tar (`docker save`, `skopeo copy … oci-archive:`):
//! where each member's bytes lie, so that blobs are read in place.

use std::collections::HashMap;
use std::path::Path;

use crate::source::{Codec, LayerHead, LayerSource};
use crate::tar::{self, MemberKind};

use super::ImageError;

/// How much of a tar is peeked at to see whether it is an image archive.
const PEEK_BYTES: u64 = 64 * 1024;

/// The regular-file members of an archive: name → (data offset, length).
pub(super) type Members = HashMap<String, (u64, u64)>;

/// The members of `path` if it is a plain tar that starts like an image
/// archive and holds an OCI layout's `oci-layout` and `index.json` or a
/// `docker save` `manifest.json`; `None` if it is anything else (a layer,
/// most likely; one that merely starts like an archive is read twice).
pub(super) fn members(path: &Path) -> Result<Option<Members>, ImageError> {
    let mut head = LayerHead::open(path, PEEK_BYTES)?;
    if head.codec() != Codec::Plain {
        return Ok(None);
    }
    // A layer is not refused here for being an odd tar: that is for the
    // layer's own indexing to report.
    let Ok(prefix) = tar::index_prefix(&mut head) else {
        return Ok(None);
    };
    // `tar -C DIR -cf x.tar .` starts with `./`, the root itself.
    let first = prefix
        .index
        .members
        .iter()
        .map(|m| normalize(&m.path))
        .find(|name| !name.is_empty());
    if !first.as_deref().is_some_and(starts_an_image) {
        return Ok(None);
    }
    let source = LayerSource::open(path)?;
    // A damaged tar is a damaged layer as far as this module knows: the
    // layer's own indexing reports it, with its context.
    let Ok(index) = tar::index_layer(&mut source.index_pass()) else {
        return Ok(None);
    };
    let members: Members = index
        .members
        .iter()
        .filter(|m| m.kind == MemberKind::Regular && m.data.sparse.is_none())
        .map(|m| (normalize(&m.path), (m.data.offset, m.data.size)))
        .collect();
    let oci = members.contains_key("oci-layout") && members.contains_key("index.json");
    Ok((oci || members.contains_key("manifest.json")).then_some(members))
}

/// A member name without a leading `./` or `/`, as image documents name
/// members.
fn normalize(raw: &[u8]) -> String {
    let name = String::from_utf8_lossy(raw);
    let mut name = name.as_ref();
    loop {
        if let Some(rest) = name.strip_prefix("./") {
            name = rest;
        } else if let Some(rest) = name.strip_prefix('/') {
            name = rest;
        } else {
            return name.to_string();
        }
    }
}

/// Whether an archive whose first member is `name` may be an image: OCI
/// archives and newer `docker save` start with their layout files or
/// `blobs/`, older `docker save` and skopeo's docker-archive with layer
/// directories or files named by 64 hex digits.
fn starts_an_image(name: &str) -> bool {
    let top = name.split('/').next().unwrap_or_default();
    let stem = top.split('.').next().unwrap_or_default();
    matches!(
        top,
        "oci-layout" | "index.json" | "manifest.json" | "repositories" | "blobs"
    ) || (stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_members_of_image_archives_are_recognised() {
        for name in [
            "oci-layout",
            "blobs/",
            "blobs/sha256/00",
            "manifest.json",
            "repositories",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef/layer.tar",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.tar",
        ] {
            assert!(starts_an_image(name), "{name}");
        }
        let short_hex = "0123456789abcdef0123456789abcdef/x";
        for name in [
            "etc/",
            "usr/bin/blobs",
            "manifest.json.bak",
            "abc.tar",
            "",
            short_hex,
        ] {
            assert!(!starts_an_image(name), "{name}");
        }
        assert_eq!(normalize(b"././/blobs/x"), "blobs/x");
    }
}
