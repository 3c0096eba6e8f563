//! What the fuzz targets share: a scratch directory for layer files,
//! streams that cut or trickle their bytes, and comparable listings of
//! indexes and trees.
//!
//! Each target feeds its input to layerfs through the library's public API
//! and checks properties that must hold for every input; any panic (an
//! `assert!` here included) is a finding.

use std::io::{self, Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use layerfs::source::Stream;
use layerfs::tar::{LayerIndex, Member, MemberKind, TarError};
use layerfs::tree::{NodeKind, Tree};

/// Most decompressed bytes a target takes from a layer: inputs are a few
/// KiB, but a few KiB of zstd or bzip2 can expand to gigabytes, and how
/// the library bounds that is not what these targets measure.
pub const MAX_DECOMPRESSED: u64 = 16 << 20;

/// A directory for the layer files of this process, in RAM when `/dev/shm`
/// exists, removed when the process ends normally.
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let made = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        };
        made.expect("a scratch directory for layer files")
    })
    .path()
}

/// Writes `bytes` as layer file `name` in the scratch directory.
pub fn write_layer(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch_dir().join(name);
    std::fs::write(&path, bytes).expect("a layer file in the scratch directory");
    path
}

/// An in-memory stream whose reads return at most `step` bytes, so that
/// the indexer's handling of short reads is exercised.
pub struct Trickle<'a> {
    inner: Cursor<&'a [u8]>,
    step: usize,
}

impl<'a> Trickle<'a> {
    /// A stream of `bytes`, at most `step` (at least 1) per read.
    pub fn new(bytes: &'a [u8], step: usize) -> Trickle<'a> {
        Trickle {
            inner: Cursor::new(bytes),
            step: step.max(1),
        }
    }
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.step);
        self.inner.read(&mut buf[..n])
    }
}

impl Stream for Trickle<'_> {
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        self.inner.skip(n)
    }
}

/// A stream that hands out at most `limit` bytes of another and keeps a
/// copy of them (skipped bytes included), so that later random reads can be
/// checked against what the sequential pass saw.
pub struct Recorder<S> {
    inner: S,
    left: u64,
    /// Every byte handed out or skipped, in stream order.
    pub seen: Vec<u8>,
}

impl<S: Stream> Recorder<S> {
    /// Records `inner`, stopping after `limit` bytes.
    pub fn new(inner: S, limit: u64) -> Recorder<S> {
        Recorder {
            inner,
            left: limit,
            seen: Vec::new(),
        }
    }

    /// The wrapped stream and the bytes seen.
    pub fn into_parts(self) -> (S, Vec<u8>) {
        (self.inner, self.seen)
    }
}

impl<S: Stream> Read for Recorder<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = usize::try_from(self.left).unwrap_or(usize::MAX);
        let n = buf.len().min(room);
        let got = self.inner.read(&mut buf[..n])?;
        self.seen.extend_from_slice(&buf[..got]);
        self.left -= got as u64;
        Ok(got)
    }
}

impl<S: Stream> Stream for Recorder<S> {
    /// Reads instead of skipping, to keep the bytes.
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        io::copy(&mut self.take(n), &mut io::sink())
    }
}

/// An index result in a form that compares: the members, or the message.
pub fn outcome(result: &Result<LayerIndex, TarError>) -> Result<&[Member], String> {
    match result {
        Ok(index) => Ok(&index.members),
        Err(e) => Err(e.to_string()),
    }
}

/// Reads every regular member of `index` back at its start, middle and end
/// through its data layout, from `read_stream`, which must succeed: the
/// index says the bytes are there.
pub fn read_back_members<E: std::fmt::Debug>(
    index: &LayerIndex,
    mut read_stream: impl FnMut(u64, &mut [u8]) -> Result<(), E>,
) {
    let mut buf = [0u8; 4096];
    for member in &index.members {
        if member.kind != MemberKind::Regular {
            continue;
        }
        let size = member.data.size;
        for pos in [0, size / 2, size.saturating_sub(1), size] {
            let want = usize::try_from(size - pos).map_or(buf.len(), |n| n.min(buf.len()));
            let got = member
                .data
                .read_at(pos, &mut buf, &mut read_stream)
                .unwrap_or_else(|e| {
                    panic!(
                        "member {:?} at {pos} of {size}: {e:?}",
                        String::from_utf8_lossy(&member.path)
                    )
                });
            assert_eq!(got, want, "read of member at {pos} of {size}");
        }
    }
}

/// Reads `dst.len()` bytes at `offset` of `bytes`, as a layer stream would.
pub fn read_slice(bytes: &[u8], offset: u64, dst: &mut [u8]) -> Result<(), String> {
    let start = usize::try_from(offset).map_err(|e| e.to_string())?;
    let src = start
        .checked_add(dst.len())
        .and_then(|end| bytes.get(start..end))
        .ok_or_else(|| {
            format!(
                "{} bytes at {offset} are past the end {}",
                dst.len(),
                bytes.len()
            )
        })?;
    dst.copy_from_slice(src);
    Ok(())
}

/// One name of a tree as a walk gives it, with what any faithful copy of
/// the tree must keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Path from the root.
    pub path: Vec<u8>,
    /// What it is.
    pub kind: NodeKind,
    /// Permission bits.
    pub mode: u32,
    /// Owner and group.
    pub owner: (u32, u32),
    /// Seconds and nanoseconds.
    pub mtime: (i64, u32),
    /// Size (files: contents; symlinks: the target's length).
    pub size: u64,
    /// Symlink target.
    pub target: Vec<u8>,
    /// Device numbers.
    pub rdev: (u32, u32),
    /// Extended attributes, in the tree's order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The tree's walk, every name with its node's attributes.
pub fn listing(tree: &Tree) -> Vec<Listed> {
    let mut out = Vec::new();
    let walked: Result<(), ()> = tree.walk(|path, ino, node| {
        out.push(Listed {
            path: path.to_vec(),
            kind: node.kind(),
            mode: node.mode,
            owner: (node.uid, node.gid),
            mtime: (node.mtime, node.mtime_nsec),
            size: node.size,
            target: tree.symlink_target(ino).unwrap_or_default().to_vec(),
            rdev: node.rdev(),
            xattrs: tree
                .xattrs(ino)
                .map(|(n, v)| (n.to_vec(), v.to_vec()))
                .collect(),
        });
        Ok(())
    });
    walked.expect("a walk that never fails");
    out
}

/// Splits a merge target's input into 1-4 layers: `flags & 3` plus one
/// layers (tests/fuzz_regressions.rs writes seeds so), each but the last led by its length (u16 little-endian, cut to
/// what is left), the last taking the rest.
pub fn split_layers(flags: u8, mut rest: &[u8]) -> Vec<&[u8]> {
    let count = usize::from(flags & 3) + 1;
    let mut layers = Vec::with_capacity(count);
    for _ in 1..count {
        let len = match rest {
            [lo, hi, tail @ ..] => {
                rest = tail;
                usize::from(u16::from_le_bytes([*lo, *hi])).min(rest.len())
            }
            _ => 0,
        };
        let (layer, tail) = rest.split_at(len.min(rest.len()));
        layers.push(layer);
        rest = tail;
    }
    layers.push(rest);
    layers
}
