//! The stored index of a gzip layer: its checkpoints, each a place a raw
//! inflater can resume with the 32 KiB of output before it, and their
//! encoding.

use std::fmt;
use std::io::{self, Read};

use super::input::corrupt;
use crate::source::cursor::{ByteCursor, SeekDecodeError};

/// How far back deflate can refer: what a checkpoint must remember.
pub(super) const WINDOW: usize = 32 * 1024;

/// Version byte of the encoded index.
pub(super) const FORMAT: u8 = 1;

/// Where a raw inflater can start: the index of a gzip layer.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct GzipIndex {
    /// Ascending by decompressed offset. The start of the file is an
    /// implicit checkpoint and is not stored.
    pub(super) checkpoints: Vec<Checkpoint>,
    /// The decompressed length, when the indexing pass read to the end:
    /// lets a read past the end fail without inflating anything.
    pub(super) end: Option<u64>,
}

impl fmt::Debug for GzipIndex {
    // The windows are the bulk and of no use in a message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GzipIndex")
            .field("checkpoints", &self.checkpoints.len())
            .field("end", &self.end)
            .finish()
    }
}

/// A place inside a deflate stream where a raw inflater can resume.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Checkpoint {
    /// Decompressed offset of the first byte inflated from here.
    pub(super) out: u64,
    /// Compressed offset of the first whole byte to feed the inflater.
    pub(super) input: u64,
    /// Unused high bits (0–7) of the byte before `input`, which belong to
    /// the next block and are primed into the inflater first.
    pub(super) bits: u8,
    /// Length of the window once inflated (32 KiB, or less near the start
    /// of a member).
    pub(super) window_len: u32,
    /// The output before `out`, raw-deflate compressed.
    pub(super) window: Vec<u8>,
}

impl Checkpoint {
    /// Fixed bytes of one encoded checkpoint, before its window.
    const ENCODED_FIXED: usize = 8 + 8 + 1 + 4 + 4;

    /// The window, inflated and checked against its recorded length.
    pub(super) fn window(&self) -> io::Result<Vec<u8>> {
        let mut window = Vec::with_capacity(self.window_len as usize);
        flate2::read::DeflateDecoder::new(&self.window[..])
            .take(WINDOW as u64 + 1)
            .read_to_end(&mut window)?;
        if window.len() != self.window_len as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a gzip checkpoint's window has the wrong length",
            ));
        }
        Ok(window)
    }
}

impl GzipIndex {
    /// Appends the index: a version byte, the end (0 when unknown, else
    /// length + 1), the checkpoint count, then each checkpoint; integers
    /// little-endian.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.push(FORMAT);
        let end = self.end.map_or(0, |e| e.saturating_add(1));
        out.extend_from_slice(&end.to_le_bytes());
        out.extend_from_slice(&(self.checkpoints.len() as u64).to_le_bytes());
        for c in &self.checkpoints {
            out.extend_from_slice(&c.out.to_le_bytes());
            out.extend_from_slice(&c.input.to_le_bytes());
            out.push(c.bits);
            out.extend_from_slice(&c.window_len.to_le_bytes());
            out.extend_from_slice(&(c.window.len() as u32).to_le_bytes());
            out.extend_from_slice(&c.window);
        }
    }

    /// Decodes what [`GzipIndex::encode`] wrote, refusing anything
    /// inconsistent; sizes are checked against the bytes present before
    /// anything is allocated.
    pub(crate) fn decode(bytes: &[u8]) -> Result<GzipIndex, SeekDecodeError> {
        const TRUNCATED: SeekDecodeError = SeekDecodeError("truncated gzip index");
        let mut r = ByteCursor::new(bytes);
        if r.u8().ok_or(TRUNCATED)? != FORMAT {
            return Err(SeekDecodeError("unknown gzip index version"));
        }
        let end = r.u64().ok_or(TRUNCATED)?.checked_sub(1);
        let count = r.u64().ok_or(TRUNCATED)?;
        if count > (r.len() / Checkpoint::ENCODED_FIXED) as u64 {
            return Err(SeekDecodeError("gzip checkpoint count exceeds the data"));
        }
        let mut checkpoints: Vec<Checkpoint> = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let out = r.u64().ok_or(TRUNCATED)?;
            let input = r.u64().ok_or(TRUNCATED)?;
            let bits = r.u8().ok_or(TRUNCATED)?;
            let window_len = r.u32().ok_or(TRUNCATED)?;
            let zlen = r.u32().ok_or(TRUNCATED)?;
            let window = r.take(zlen as usize).ok_or(TRUNCATED)?.to_vec();
            if let Some(prev) = checkpoints.last() {
                if out <= prev.out || input < prev.input {
                    return Err(SeekDecodeError("gzip checkpoints out of order"));
                }
            }
            if bits > 7 || (bits > 0 && input == 0) {
                return Err(SeekDecodeError("bad bit offset in a gzip checkpoint"));
            }
            if window_len as usize > WINDOW || u64::from(window_len) > out {
                return Err(SeekDecodeError("bad window length in a gzip checkpoint"));
            }
            checkpoints.push(Checkpoint {
                out,
                input,
                bits,
                window_len,
                window,
            });
        }
        if !r.is_empty() {
            return Err(SeekDecodeError("trailing bytes after a gzip index"));
        }
        if let (Some(end), Some(last)) = (end, checkpoints.last()) {
            if last.out > end {
                return Err(SeekDecodeError("gzip checkpoint past the end"));
            }
        }
        Ok(GzipIndex { checkpoints, end })
    }
    /// Where each checkpoint resumes: the bit of the file (see
    /// `window_use.rs`, which reads the stream from there).
    pub(super) fn checkpoint_bits(&self) -> Vec<u64> {
        self.checkpoints
            .iter()
            .map(|c| c.input * 8 - u64::from(c.bits))
            .collect()
    }

    /// The window of checkpoint `i`, inflated.
    pub(super) fn window(&self, i: usize) -> io::Result<Vec<u8>> {
        self.checkpoints
            .get(i)
            .ok_or_else(|| corrupt("no such gzip checkpoint"))?
            .window()
    }

    /// Replaces the window of checkpoint `i` by `window`, of the same
    /// length (a sparse one: see `window_use.rs`).
    pub(super) fn set_window(&mut self, i: usize, window: &[u8]) -> io::Result<()> {
        let checkpoint = self
            .checkpoints
            .get_mut(i)
            .filter(|c| c.window_len as usize == window.len())
            .ok_or_else(|| corrupt("no gzip checkpoint with a window of that length"))?;
        checkpoint.window = compress_window(window)?;
        Ok(())
    }

    /// The last checkpoint at or before `offset`, if any.
    pub(super) fn checkpoint_before(&self, offset: u64) -> Option<&Checkpoint> {
        let after = self.checkpoints.partition_point(|c| c.out <= offset);
        after.checked_sub(1).map(|i| &self.checkpoints[i])
    }
}

/// zlib level of the windows: the indexing pass of a 2 GiB layer packs a
/// thousand of them on the cores that inflate it, and level 2 takes half
/// the time of the default level 6 for windows 1–2% larger (level 1, zlib-rs's
/// quick strategy, is faster again but 15% larger).
const WINDOW_LEVEL: u32 = 2;

/// A checkpoint's window as the index keeps it: raw-deflate compressed.
pub(super) fn compress_window(window: &[u8]) -> io::Result<Vec<u8>> {
    use std::io::Write;
    let mut z = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(WINDOW / 2),
        flate2::Compression::new(WINDOW_LEVEL),
    );
    z.write_all(window)?;
    z.finish()
}
