//! The compressed bytes of a gzip layer as its inflaters read them: a
//! buffer that knows the file offset of every byte, and the reads of
//! headers and trailers that must not come up short.

use std::io::{self, Read};
use std::sync::Arc;

use crate::source::positioned::PositionedReader;
use crate::source::region::Region;

/// The error for damaged or cut-off compressed data.
pub(super) fn corrupt(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The compressed file read through a buffer, knowing the file offset of
/// every byte it hands out (which is what a checkpoint records).
pub(super) struct Input {
    reader: PositionedReader,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Input {
    pub(super) fn new(file: Arc<Region>, file_len: u64, pos: u64, capacity: usize) -> Input {
        Input {
            reader: PositionedReader {
                file,
                pos,
                len: file_len,
            },
            buf: vec![0; capacity].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// File offset of the next byte not yet consumed.
    pub(super) fn pos(&self) -> u64 {
        self.reader.pos - (self.end - self.start) as u64
    }

    /// The buffered bytes not yet consumed, reading more if there are
    /// none; empty at the end of the file.
    pub(super) fn fill(&mut self) -> io::Result<&[u8]> {
        if self.start == self.end {
            let left = self.reader.len.saturating_sub(self.reader.pos);
            let want = self
                .buf
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = loop {
                match self.reader.read(&mut self.buf[..want]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
            self.start = 0;
            self.end = n;
        }
        Ok(&self.buf[self.start..self.end])
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    pub(super) fn peek(&mut self) -> io::Result<Option<u8>> {
        Ok(self.fill()?.first().copied())
    }

    pub(super) fn byte(&mut self) -> io::Result<Option<u8>> {
        let b = self.peek()?;
        if b.is_some() {
            self.start += 1;
        }
        Ok(b)
    }

    /// The next byte of a header or trailer, which must be there.
    pub(super) fn needed(&mut self) -> io::Result<u8> {
        self.byte()?
            .ok_or_else(|| corrupt("gzip stream is truncated"))
    }

    pub(super) fn needed_array<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut a = [0; N];
        for b in &mut a {
            *b = self.needed()?;
        }
        Ok(a)
    }

    pub(super) fn skip(&mut self, mut n: usize) -> io::Result<()> {
        while n > 0 {
            let avail = self.fill()?.len();
            if avail == 0 {
                return Err(corrupt("gzip stream is truncated"));
            }
            let k = avail.min(n);
            self.consume(k);
            n -= k;
        }
        Ok(())
    }

    /// Skips a NUL-terminated header field.
    pub(super) fn skip_string(&mut self) -> io::Result<()> {
        while self.needed()? != 0 {}
        Ok(())
    }

    /// True if nothing but zero bytes is left (padding some tools add to a
    /// block size); consumes them.
    pub(super) fn rest_is_zero(&mut self) -> io::Result<bool> {
        loop {
            let avail = self.fill()?;
            if avail.is_empty() {
                return Ok(true);
            }
            if avail.iter().any(|&b| b != 0) {
                return Ok(false);
            }
            let n = avail.len();
            self.consume(n);
        }
    }
}
