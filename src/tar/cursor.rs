//! The layer stream with its position counted.
//!
//! Every offset the index records comes from here, so nothing else may
//! touch the stream: the cursor reads exactly what it is asked for (no read
//! ahead) and retries short reads, which decompressors produce all the time.

use std::io::ErrorKind;

use super::error::{Problem, TarError};
use super::header::BLOCK;
use crate::source::Stream;

/// A stream and the number of bytes consumed from it so far.
pub(super) struct Cursor<'a> {
    inner: &'a mut dyn Stream,
    pos: u64,
}

impl<'a> Cursor<'a> {
    /// Starts counting at offset 0.
    pub(super) fn new(inner: &'a mut dyn Stream) -> Cursor<'a> {
        Cursor { inner, pos: 0 }
    }

    /// Offset of the next byte the stream will give.
    pub(super) fn pos(&self) -> u64 {
        self.pos
    }

    /// Reads until `buf` is full or the stream ends; returns how many bytes
    /// were read.
    pub(super) fn fill(&mut self, buf: &mut [u8]) -> Result<usize, TarError> {
        let mut filled = 0;
        while let Some(rest) = buf.get_mut(filled..).filter(|r| !r.is_empty()) {
            match self.inner.read(rest) {
                Ok(0) => break,
                Ok(n) => {
                    // A reader claiming more than it was given is broken;
                    // never let it push the count past the buffer.
                    let n = n.min(rest.len());
                    filled += n;
                    self.pos += n as u64;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(Problem::Io(e).at(self.pos)),
            }
        }
        Ok(filled)
    }

    /// Fills `buf` completely, or fails with `Truncated` where the stream
    /// ended.
    pub(super) fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), TarError> {
        if self.fill(buf)? < buf.len() {
            return Err(Problem::Truncated.at(self.pos));
        }
        Ok(())
    }

    /// Skips up to `n` bytes; returns how many were skipped (fewer only at
    /// the end of the stream).
    pub(super) fn skip(&mut self, n: u64) -> Result<u64, TarError> {
        let mut done = 0;
        while done < n {
            match self.inner.skip(n - done) {
                Ok(0) => break,
                Ok(k) => {
                    let k = k.min(n - done);
                    done += k;
                    self.pos += k;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(Problem::Io(e).at(self.pos)),
            }
        }
        Ok(done)
    }

    /// Skips `len` bytes of member data and the padding that completes its
    /// last block. Missing data is `Truncated`; missing padding is not (a
    /// stream cut there has lost nothing).
    pub(super) fn skip_data(&mut self, len: u64) -> Result<(), TarError> {
        if self.skip(len.saturating_add(padding(len)))? < len {
            return Err(Problem::Truncated.at(self.pos));
        }
        Ok(())
    }
}

/// Bytes of padding after `len` data bytes to reach a block boundary.
pub(super) fn padding(len: u64) -> u64 {
    let rem = len % BLOCK as u64;
    if rem == 0 {
        0
    } else {
        BLOCK as u64 - rem
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tar::testutil::SliceStream;

    #[test]
    fn short_reads_and_skips_are_retried_and_counted() {
        let data: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        let mut stream = SliceStream::new(data.clone(), 7);
        let mut cursor = Cursor::new(&mut stream);
        let mut buf = [0u8; 100];
        cursor.read_exact(&mut buf).expect("read");
        assert_eq!(&buf[..], &data[..100]);
        assert_eq!(cursor.skip(1000).expect("skip"), 1000);
        assert_eq!(cursor.pos(), 1100);
        cursor.skip_data(100).expect("skip data");
        assert_eq!(cursor.pos(), 1612);
        cursor.read_exact(&mut buf).expect("read");
        assert_eq!(&buf[..], &data[1612..1712]);
        // Ending in the padding is fine, ending in the data is not.
        cursor.skip_data(1200).expect("padding cut");
        assert_eq!(cursor.pos(), 3000);
        let err = cursor.skip_data(1).expect_err("nothing left");
        assert!(matches!(err.problem, Problem::Truncated));
        assert_eq!(err.offset, 3000);
    }

    #[test]
    fn read_errors_carry_the_offset() {
        let mut stream = SliceStream::new(vec![1; 600], 512).failing_at(512);
        let mut cursor = Cursor::new(&mut stream);
        let mut block = [0u8; 512];
        cursor.read_exact(&mut block).expect("first block");
        let err = cursor.read_exact(&mut block).expect_err("fails");
        assert!(matches!(err.problem, Problem::Io(_)));
        assert_eq!(err.offset, 512);
    }

    #[test]
    fn padding_completes_the_block() {
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 511);
        assert_eq!(padding(512), 0);
        assert_eq!(padding(513), 511);
    }
}
