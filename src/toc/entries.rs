//! The entries of a table of contents, which eStargz and zstd:chunked
//! write in the same shape (one per member, then one per further chunk of
//! a large file), made into the layer's members and chunk table.

use std::collections::BTreeMap;

use base64::Engine;
use serde::Deserialize;

use crate::digest::Digest;
use crate::source::{ChunkTable, TableChunk};
use crate::tar::{DataLayout, Member, MemberKind};

/// What both formats' JSON holds, as far as layerfs reads it.
#[derive(Deserialize)]
struct Toc {
    #[serde(default)]
    entries: Vec<Entry>,
}

/// One entry; every field may be left out.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Entry {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    size: u64,
    modtime: Option<String>,
    #[serde(rename = "linkName")]
    link_name: String,
    mode: u32,
    uid: u32,
    gid: u32,
    #[serde(rename = "devMajor")]
    dev_major: u32,
    #[serde(rename = "devMinor")]
    dev_minor: u32,
    /// Values base64-encoded, in both formats.
    xattrs: BTreeMap<String, String>,
    digest: String,
    offset: u64,
    #[serde(rename = "endOffset")]
    end_offset: u64,
    #[serde(rename = "innerOffset")]
    inner_offset: u64,
    #[serde(rename = "chunkOffset")]
    chunk_offset: u64,
    #[serde(rename = "chunkSize")]
    chunk_size: u64,
    #[serde(rename = "chunkDigest")]
    chunk_digest: String,
}

/// The regular file whose chunks are being listed.
struct OpenFile {
    name: String,
    /// Its contents' offset in the layer's stream.
    out: u64,
    size: u64,
    /// Bytes its chunks so far cover.
    covered: u64,
    /// A file left out of the tree: its chunks are left out too.
    hidden: bool,
}

/// The members and chunk table of the TOC `json`; `data_end` bounds the
/// compressed bytes of the last chunk, and members whose path `hides`
/// are left out.
pub(super) fn index(
    json: &[u8],
    data_end: u64,
    hides: impl Fn(&[u8]) -> bool,
) -> Result<(Vec<Member>, ChunkTable), String> {
    let toc: Toc = serde_json::from_slice(json).map_err(|e| format!("bad JSON: {e}"))?;
    let ends = compressed_ends(&toc.entries, data_end);
    let mut members = Vec::new();
    let mut chunks = Vec::new();
    let mut pos = 0u64;
    let mut open: Option<OpenFile> = None;
    for (entry, comp_end) in toc.entries.iter().zip(ends) {
        if entry.kind == "chunk" {
            let file = open
                .as_mut()
                .ok_or_else(|| "a chunk entry follows no regular file".to_string())?;
            if !file.hidden {
                chunks.push(chunk(file, entry, comp_end)?);
            }
            continue;
        }
        if let Some(file) = open.take() {
            finish(&file)?;
        }
        let hidden = hides(entry.name.as_bytes());
        // The layer's stream is laid out as a tar of ustar headers would
        // be (a header block, then the contents padded to a block), so its
        // length is about the tar's: what `inspect` shows as uncompressed.
        let header = pos;
        pos = pos
            .checked_add(512)
            .ok_or_else(|| "the files' sizes overflow".to_string())?;
        let member = member(entry, header, pos)?;
        if member.kind == MemberKind::Regular && entry.size > 0 {
            let mut file = OpenFile {
                name: entry.name.clone(),
                out: pos,
                size: entry.size,
                covered: 0,
                hidden,
            };
            if entry.chunk_offset != 0 {
                return Err(format!(
                    "{}: the first chunk starts at {}",
                    entry.name, entry.chunk_offset
                ));
            }
            let first = chunk(&mut file, entry, comp_end)?;
            if !hidden {
                chunks.push(first);
            }
            pos = pos
                .checked_add(entry.size.next_multiple_of(512))
                .ok_or_else(|| "the files' sizes overflow".to_string())?;
            open = Some(file);
        }
        if !hidden {
            members.push(member);
        }
    }
    if let Some(file) = open {
        finish(&file)?;
    }
    let table = ChunkTable::new(chunks).map_err(|e| e.0.to_string())?;
    Ok((members, table))
}

/// Where each entry's compressed bytes end: where the next member starts
/// (a later entry's offset that does not share the member), or the
/// entry's own end offset (zstd:chunked) if that comes first.
fn compressed_ends(entries: &[Entry], data_end: u64) -> Vec<u64> {
    let mut next = data_end;
    let mut ends = vec![0; entries.len()];
    for (i, e) in entries.iter().enumerate().rev() {
        ends[i] = match e.end_offset {
            end if end > e.offset => end.min(next),
            _ => next,
        };
        if e.offset != 0 && e.inner_offset == 0 {
            next = e.offset;
        }
    }
    ends
}

/// The file's next chunk, from `entry` (its `reg` entry or a `chunk`).
fn chunk(file: &mut OpenFile, entry: &Entry, comp_end: u64) -> Result<TableChunk, String> {
    let name = &file.name;
    if entry.chunk_offset != file.covered {
        return Err(format!(
            "{name}: a chunk starts at {}, where {} bytes were covered",
            entry.chunk_offset, file.covered
        ));
    }
    let left = file.size - file.covered;
    let len = match entry.chunk_size {
        0 => left,
        n => n,
    };
    if len == 0 || len > left {
        return Err(format!(
            "{name}: a chunk of {len} bytes at {} of {}",
            file.covered, file.size
        ));
    }
    if entry.offset == 0 || comp_end <= entry.offset {
        return Err(format!(
            "{name}: the chunk at {} has no place in the blob",
            file.covered
        ));
    }
    // A file of one chunk may give only the whole file's digest.
    let digest = match (&entry.chunk_digest[..], &entry.digest[..]) {
        ("", whole) if len == file.size && !whole.is_empty() => Some(sha256(name, whole)?),
        ("", _) => None,
        (d, _) => Some(sha256(name, d)?),
    };
    let c = TableChunk {
        out: file.out + file.covered,
        len,
        comp: entry.offset,
        comp_end,
        skip: entry.inner_offset,
        digest,
    };
    file.covered += len;
    Ok(c)
}

/// Checks a file's chunks covered all of it.
fn finish(file: &OpenFile) -> Result<(), String> {
    if file.covered != file.size {
        return Err(format!(
            "{}: its chunks cover {} of its {} bytes",
            file.name, file.covered, file.size
        ));
    }
    Ok(())
}

/// The 32 bytes of `sha256:<hex>`.
fn sha256(name: &str, text: &str) -> Result<[u8; 32], String> {
    let digest = Digest::parse(text).map_err(|e| format!("{name}: bad digest: {e}"))?;
    digest
        .sha256_bytes()
        .ok_or_else(|| format!("{name}: bad digest {digest} (only sha256 is supported)"))
}

/// The member an entry describes, its header at `header` and its
/// contents (if any) at `pos`.
fn member(e: &Entry, header: u64, pos: u64) -> Result<Member, String> {
    let name = &e.name;
    let kind = match &e.kind[..] {
        "reg" => MemberKind::Regular,
        "dir" => MemberKind::Directory,
        "symlink" => MemberKind::Symlink,
        "hardlink" => MemberKind::Hardlink,
        "char" => MemberKind::CharDevice,
        "block" => MemberKind::BlockDevice,
        "fifo" => MemberKind::Fifo,
        other => return Err(format!("{name}: unknown entry type {other:?}")),
    };
    let (mtime, mtime_nsec) = match e.modtime.as_deref() {
        None | Some("") => (0, 0),
        Some(text) => {
            super::time::parse(text).ok_or_else(|| format!("{name}: bad modtime {text:?}"))?
        }
    };
    let xattrs = e
        .xattrs
        .iter()
        .map(|(k, v)| {
            let value = base64::engine::general_purpose::STANDARD
                .decode(v)
                .map_err(|_| format!("{name}: xattr {k} is not base64"))?;
            Ok((k.as_bytes().to_vec(), value))
        })
        .collect::<Result<_, String>>()?;
    let linked = matches!(kind, MemberKind::Symlink | MemberKind::Hardlink);
    let device = matches!(kind, MemberKind::CharDevice | MemberKind::BlockDevice);
    Ok(Member {
        path: name.as_bytes().to_vec(),
        kind,
        mode: e.mode & 0o7777,
        uid: e.uid,
        gid: e.gid,
        mtime,
        mtime_nsec,
        link_target: if linked {
            e.link_name.as_bytes().to_vec()
        } else {
            Vec::new()
        },
        dev_major: if device { e.dev_major } else { 0 },
        dev_minor: if device { e.dev_minor } else { 0 },
        xattrs,
        data: DataLayout {
            offset: pos,
            size: if kind == MemberKind::Regular {
                e.size
            } else {
                0
            },
            sparse: None,
        },
        header_offset: header,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX_A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn run(json: &str) -> Result<(Vec<Member>, ChunkTable), String> {
        index(json.as_bytes(), 10_000, |p| p == b".no.prefetch.landmark")
    }

    #[test]
    fn members_and_chunks_from_entries() {
        let json = format!(
            r#"{{"version":1,"entries":[
            {{"name":".no.prefetch.landmark","type":"reg","size":1,"offset":85,"chunkDigest":"{HEX_A}"}},
            {{"name":"etc/","type":"dir","modtime":"1970-01-01T00:00:10Z","mode":16877,"uid":5}},
            {{"name":"etc/big","type":"reg","size":700,"offset":200,"chunkSize":600,"chunkDigest":"{HEX_A}","xattrs":{{"user.a":"aGk="}}}},
            {{"name":"etc/big","type":"chunk","offset":300,"chunkOffset":600,"chunkDigest":"{HEX_A}"}},
            {{"name":"etc/small","type":"reg","size":3,"offset":300,"innerOffset":100,"digest":"{HEX_A}"}},
            {{"name":"etc/link","type":"hardlink","linkName":"etc/big"}},
            {{"name":"dev/null","type":"char","devMajor":1,"devMinor":3}}
            ]}}"#
        );
        let (members, table) = run(&json).expect("index");
        let names: Vec<&[u8]> = members.iter().map(|m| &m.path[..]).collect();
        assert_eq!(
            names,
            [
                &b"etc/"[..],
                b"etc/big",
                b"etc/small",
                b"etc/link",
                b"dev/null"
            ]
        );
        assert_eq!(
            (members[0].mode, members[0].uid, members[0].mtime),
            (0o755, 5, 10)
        );
        assert_eq!(
            members[1].xattrs,
            vec![(b"user.a".to_vec(), b"hi".to_vec())]
        );
        // Past the hidden landmark (header and one block), the directory's
        // header, the file's header: 2048; then 512 for the second file's.
        assert_eq!(
            (members[1].data.offset, members[2].data.offset),
            (2048, 3584)
        );
        assert_eq!(members[3].link_target, b"etc/big");
        assert_eq!((members[4].dev_major, members[4].dev_minor), (1, 3));
        let spans: Vec<(u64, u64, u64, u64, u64)> = table
            .chunks
            .iter()
            .map(|c| (c.out, c.len, c.comp, c.comp_end, c.skip))
            .collect();
        // The big file's chunks end where the next member starts; the
        // small file shares the second one's member.
        assert_eq!(
            spans,
            [
                (2048, 600, 200, 300, 0),
                (2648, 100, 300, 10_000, 0),
                (3584, 3, 300, 10_000, 100)
            ]
        );
        assert!(table.chunks.iter().all(|c| c.digest == Some([0xaa; 32])));
    }

    #[test]
    fn end_offsets_bound_zstd_chunked_files() {
        let json = r#"{"entries":[
            {"name":"a","type":"reg","size":5,"offset":40,"endOffset":60},
            {"name":"b","type":"reg","size":5,"offset":90,"endOffset":120}]}"#;
        let (_, table) = run(json).expect("index");
        let ends: Vec<u64> = table.chunks.iter().map(|c| c.comp_end).collect();
        assert_eq!(ends, [60, 120]);
    }

    #[test]
    fn inconsistent_entries_are_refused() {
        for (json, why) in [
            (
                r#"{"entries":[{"name":"a","type":"chunk","offset":5}]}"#,
                "follows no regular file",
            ),
            (
                r#"{"entries":[{"name":"a","type":"reg","size":9,"offset":5,"chunkSize":4}]}"#,
                "cover 4 of its 9",
            ),
            (
                r#"{"entries":[{"name":"a","type":"reg","size":9}]}"#,
                "no place in the blob",
            ),
            (
                r#"{"entries":[{"name":"a","type":"whiteout"}]}"#,
                "unknown entry type",
            ),
            (
                r#"{"entries":[{"name":"a","type":"dir","modtime":"yesterday"}]}"#,
                "bad modtime",
            ),
            (
                r#"{"entries":[{"name":"a","type":"reg","size":1,"offset":5,"digest":"md5:00"}]}"#,
                "bad digest",
            ),
            (
                r#"{"entries":[{"name":"a","type":"dir","xattrs":{"user.x":"%%"}}]}"#,
                "not base64",
            ),
            (
                r#"{"entries":[{"name":"a","type":"reg","size":9,"offset":5,"chunkSize":4},
                {"name":"a","type":"chunk","offset":6,"chunkOffset":5}]}"#,
                "starts at 5",
            ),
            ("[1,2]", "bad JSON"),
        ] {
            let err = run(json).expect_err(why);
            assert!(err.contains(why), "{err} (wanted {why})");
        }
    }
}
