//! Test helpers: in-memory streams with awkward read patterns, raw header
//! builders for dialect corner cases, and GNU tar for real fixtures.

use std::io::{self, Read};
use std::ops::Range;
use std::path::Path;
use std::process::Command;

use super::error::TarError;
use super::header::{Block, BLOCK};
use super::index::{index_layer, index_layer_batches, LayerIndex};
use super::member::Member;
use crate::source::Stream;

/// A stream over bytes that hands out at most `max_read` bytes per read,
/// counts what was read and skipped, and can fail at an offset.
pub(crate) struct SliceStream {
    data: Vec<u8>,
    pos: usize,
    max_read: usize,
    fail_at: Option<usize>,
    /// Bytes handed out by `read`.
    pub(crate) read_bytes: usize,
}

impl SliceStream {
    pub(crate) fn new(data: Vec<u8>, max_read: usize) -> SliceStream {
        SliceStream {
            data,
            pos: 0,
            max_read: max_read.max(1),
            fail_at: None,
            read_bytes: 0,
        }
    }

    /// Makes reads at or past `at` fail with an I/O error.
    pub(crate) fn failing_at(mut self, at: usize) -> SliceStream {
        self.fail_at = Some(at);
        self
    }
}

impl Read for SliceStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut end = self.data.len();
        if let Some(at) = self.fail_at {
            if self.pos >= at {
                return Err(io::Error::other("injected failure"));
            }
            end = end.min(at);
        }
        let n = buf
            .len()
            .min(self.max_read)
            .min(end.saturating_sub(self.pos));
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        self.read_bytes += n;
        Ok(n)
    }
}

impl Stream for SliceStream {
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        let left = (self.data.len() - self.pos) as u64;
        let k = n.min(left);
        self.pos += k as usize;
        Ok(k)
    }
}

/// Indexes `bytes` with whole reads, one-byte reads and seven-byte reads,
/// checks the three agree, and returns the result.
pub(crate) fn index_bytes(bytes: &[u8]) -> Result<LayerIndex, TarError> {
    let whole = index_layer(&mut SliceStream::new(bytes.to_vec(), usize::MAX));
    for max_read in [1, 7] {
        let short = index_layer(&mut SliceStream::new(bytes.to_vec(), max_read));
        match (&whole, &short) {
            (Ok(a), Ok(b)) => assert_eq!(a.members, b.members, "reads of {max_read}"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "reads of {max_read}"),
            _ => panic!("reads of {max_read} disagree: {whole:?} vs {short:?}"),
        }
    }
    // Handed out in batches, the same members arrive, in the same order,
    // in full batches but the last.
    for size in [1, 3] {
        let mut batches: Vec<Vec<Member>> = Vec::new();
        let result = index_layer_batches(
            &mut SliceStream::new(bytes.to_vec(), 7),
            size,
            &mut |batch| batches.push(batch),
        );
        let (last, full) = batches
            .split_last()
            .map_or((0, &[][..]), |(l, f)| (l.len(), f));
        assert!(full.iter().all(|b| b.len() == size), "batches of {size}");
        assert!((1..=size).contains(&last) || batches.is_empty());
        match (&whole, result) {
            (Ok(a), Ok(())) => assert_eq!(a.members, batches.concat(), "batches of {size}"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "batches of {size}"),
            (_, other) => panic!("batches of {size} disagree: {whole:?} vs {other:?}"),
        }
    }
    whole
}

/// Header dialects the builder can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    V7,
    Ustar,
    Gnu,
}

/// Writes `bytes` at the start of `range`, zero-filling the rest of it.
pub(crate) fn set(block: &mut Block, range: Range<usize>, bytes: &[u8]) {
    let field = &mut block[range];
    field.fill(0);
    field[..bytes.len()].copy_from_slice(bytes);
}

/// Writes `value` as zero-padded octal with a NUL terminator.
pub(crate) fn set_octal(block: &mut Block, range: Range<usize>, value: u64) {
    let width = range.len() - 1;
    set(block, range, format!("{value:0width$o}\0").as_bytes());
}

/// Recomputes the checksum after fields were changed.
pub(crate) fn seal(block: &mut Block) {
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    set(block, 148..156, format!("{sum:06o}\0 ").as_bytes());
}

/// A sealed header with plausible fields.
pub(crate) fn header(kind: Kind, name: &[u8], typeflag: u8, size: u64) -> Block {
    let mut block = [0u8; BLOCK];
    set(&mut block, 0..100, name);
    set_octal(&mut block, 100..108, 0o644);
    set_octal(&mut block, 108..116, 1000);
    set_octal(&mut block, 116..124, 100);
    set_octal(&mut block, 124..136, size);
    set_octal(&mut block, 136..148, 1_700_000_000);
    block[156] = typeflag;
    match kind {
        Kind::V7 => {}
        Kind::Ustar => set(&mut block, 257..265, b"ustar\x0000"),
        Kind::Gnu => set(&mut block, 257..265, b"ustar  \0"),
    }
    if kind != Kind::V7 {
        set(&mut block, 265..297, b"user");
        set(&mut block, 297..329, b"group");
    }
    seal(&mut block);
    block
}

/// Encodes PAX records, computing each self-inclusive length.
pub(crate) fn records(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in pairs {
        let body = key.len() + value.len() + 3;
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(key);
        out.push(b'=');
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

/// An archive assembled block by block.
#[derive(Default)]
pub(crate) struct Archive {
    pub(crate) bytes: Vec<u8>,
}

impl Archive {
    /// Offset the next header will have.
    pub(crate) fn pos(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Appends a header, the data and the padding.
    pub(crate) fn entry(&mut self, header: &Block, data: &[u8]) -> &mut Archive {
        self.bytes.extend_from_slice(header);
        self.bytes.extend_from_slice(data);
        self.bytes
            .resize(self.bytes.len().div_ceil(BLOCK) * BLOCK, 0);
        self
    }

    /// Appends a member with header size equal to its data.
    pub(crate) fn file(
        &mut self,
        kind: Kind,
        name: &[u8],
        typeflag: u8,
        data: &[u8],
    ) -> &mut Archive {
        self.entry(&header(kind, name, typeflag, data.len() as u64), data)
    }

    /// Appends an extension header ('x', 'g', 'L', 'K', ...) with its data.
    pub(crate) fn ext(&mut self, typeflag: u8, data: &[u8]) -> &mut Archive {
        let kind = if matches!(typeflag, b'L' | b'K') {
            Kind::Gnu
        } else {
            Kind::Ustar
        };
        self.file(kind, b"././@LongLink", typeflag, data)
    }

    /// Appends a PAX header of the given type with these records.
    pub(crate) fn pax(&mut self, typeflag: u8, pairs: &[(&[u8], &[u8])]) -> &mut Archive {
        self.ext(typeflag, &records(pairs))
    }

    /// The bytes with the two end-of-archive blocks.
    pub(crate) fn finish(&self) -> Vec<u8> {
        let mut out = self.bytes.clone();
        out.extend_from_slice(&[0; 2 * BLOCK]);
        out
    }
}

/// Runs GNU tar in `dir` with `args` and returns the archive it writes to
/// standard output.
pub(crate) fn gnu_tar(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("tar")
        .current_dir(dir)
        .args(args)
        .args(["-f", "-"])
        .output()
        .expect("GNU tar runs");
    assert!(
        out.status.success(),
        "tar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
