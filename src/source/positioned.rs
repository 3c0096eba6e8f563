//! A reader over a shared layer file with a position of its own.

use super::region::Region;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::sync::Arc;

/// A reader with its own position over a shared file, so that several
/// decoders can read one file descriptor at once (a dup'ed fd would share
/// the offset).
pub(super) struct PositionedReader {
    pub(super) file: Arc<Region>,
    pub(super) pos: u64,
    pub(super) len: u64,
}

impl PositionedReader {
    /// A buffered reader of `file` (`len` bytes long) from offset `pos`:
    /// the input a streaming decoder takes.
    pub(super) fn buffered(
        file: &Arc<Region>,
        len: u64,
        pos: u64,
        capacity: usize,
    ) -> BufReader<PositionedReader> {
        let reader = PositionedReader {
            file: Arc::clone(file),
            pos,
            len,
        };
        BufReader::with_capacity(capacity, reader)
    }
}

impl Read for PositionedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for PositionedReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        };
        self.pos = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before start"))?;
        Ok(self.pos)
    }
}
