//! A raw inflater walking through the members of a gzip file: headers
//! and trailers read here, deflate data inflated by zlib, so one inflater
//! runs through a multi-member file and can start inside a member.

use std::io;
use std::sync::Arc;

use super::index::Checkpoint;
use super::input::{corrupt, Input};
use super::zlib::{Flush, Inflater};
use crate::source::region::Region;

/// Compressed read size of the indexing pass.
pub(super) const PASS_INPUT: usize = 256 * 1024;

/// Compressed read size of a random-access inflater (it is kept parked, so
/// this stays moderate).
pub(super) const ACCESS_INPUT: usize = 64 * 1024;

/// Scratch for the output a read inflates and throws away before its offset.
pub(super) const SKIP_BUFFER: usize = 64 * 1024;

/// Where a [`Cursor`] is in the file's member structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Before a member header (or the end of the members).
    Header,
    /// Inside a member's deflate data.
    Deflate,
    /// After a member's deflate data, before its 8-byte trailer.
    Trailer,
    /// Past the last member.
    End,
}

/// What one [`Cursor::step`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Event {
    /// Bytes written to the output (possibly none), and, with
    /// [`Flush::Block`], the unused bits if it stopped at a block boundary.
    Data {
        produced: usize,
        block_end: Option<u8>,
    },
    /// A member header was read; its deflate data starts at the cursor.
    MemberStart,
    /// A member ended with this trailer (CRC-32, length mod 2^32).
    MemberEnd { crc: u32, size: u32 },
    /// No more members.
    End,
}

/// A raw inflater walking through the members of a gzip file.
pub(super) struct Cursor {
    pub(super) input: Input,
    inflater: Inflater,
    /// Decompressed offset of the next byte this cursor produces.
    pub(super) pos: u64,
    phase: Phase,
    /// The indexing pass refuses what follows the last member unless it is
    /// zero padding; later reads only need to know the stream ended.
    pub(super) strict: bool,
}

impl Cursor {
    /// A cursor at the start of the file.
    pub(super) fn at_start(
        file: Arc<Region>,
        file_len: u64,
        capacity: usize,
        strict: bool,
    ) -> io::Result<Self> {
        Ok(Cursor {
            input: Input::new(file, file_len, 0, capacity),
            inflater: Inflater::new_raw()?,
            pos: 0,
            phase: Phase::Header,
            strict,
        })
    }

    /// A cursor resuming at `checkpoint`.
    pub(super) fn at_checkpoint(
        file: Arc<Region>,
        file_len: u64,
        checkpoint: &Checkpoint,
    ) -> io::Result<Self> {
        let window = checkpoint.window()?;
        let bit = checkpoint.input * 8 - u64::from(checkpoint.bits);
        Self::at_bit(file, file_len, bit, &window, checkpoint.out, ACCESS_INPUT)
    }

    /// A cursor inside a deflate stream at a block boundary, the compressed
    /// bit `bit`, where the decompressed offset is `pos` and `window` is
    /// the output before it.
    pub(super) fn at_bit(
        file: Arc<Region>,
        file_len: u64,
        bit: u64,
        window: &[u8],
        pos: u64,
        capacity: usize,
    ) -> io::Result<Self> {
        let mut inflater = Inflater::new_raw()?;
        let mut input = Input::new(file, file_len, bit / 8, capacity);
        let used = (bit % 8) as u8;
        if used > 0 {
            let byte = input.needed()?;
            inflater.prime(8 - used, byte >> used)?;
        }
        inflater.set_dictionary(window)?;
        Ok(Cursor {
            input,
            inflater,
            pos,
            phase: Phase::Deflate,
            strict: false,
        })
    }

    /// A cursor before a member's trailer at byte `at` of the file (the
    /// indexing pass's, so strict).
    pub(super) fn at_trailer(
        file: Arc<Region>,
        file_len: u64,
        at: u64,
        pos: u64,
    ) -> io::Result<Self> {
        Ok(Cursor {
            input: Input::new(file, file_len, at, PASS_INPUT),
            inflater: Inflater::new_raw()?,
            pos,
            phase: Phase::Trailer,
            strict: true,
        })
    }

    /// Moves forward by one event. `out` must not be empty.
    pub(super) fn step(&mut self, out: &mut [u8], flush: Flush) -> io::Result<Event> {
        match self.phase {
            Phase::Header => {
                if self.member_header()? {
                    self.phase = Phase::Deflate;
                    Ok(Event::MemberStart)
                } else {
                    self.phase = Phase::End;
                    Ok(Event::End)
                }
            }
            Phase::Deflate => self.inflate(out, flush),
            Phase::Trailer => {
                let crc = u32::from_le_bytes(self.input.needed_array()?);
                let size = u32::from_le_bytes(self.input.needed_array()?);
                self.phase = Phase::Header;
                Ok(Event::MemberEnd { crc, size })
            }
            Phase::End => Ok(Event::End),
        }
    }

    fn inflate(&mut self, out: &mut [u8], flush: Flush) -> io::Result<Event> {
        if out.is_empty() {
            return Ok(Event::Data {
                produced: 0,
                block_end: None,
            });
        }
        loop {
            let avail = self.input.fill()?;
            let at_eof = avail.is_empty();
            let r = self.inflater.inflate(avail, out, flush)?;
            self.input.consume(r.consumed);
            self.pos += r.produced as u64;
            if r.stream_end {
                self.phase = Phase::Trailer;
            }
            let block_end = (flush == Flush::Block && r.block_end).then_some(r.unused_bits);
            if r.stream_end || block_end.is_some() || r.produced > 0 {
                return Ok(Event::Data {
                    produced: r.produced,
                    block_end,
                });
            }
            if r.consumed == 0 {
                // Neither input taken nor output made: zlib wants bytes
                // the file does not have.
                return Err(corrupt(if at_eof {
                    "gzip stream is truncated"
                } else {
                    "gzip inflate made no progress"
                }));
            }
            // Input taken without output (a block's code tables): go on.
        }
    }

    /// Reads a member header if one follows; false at the end of the
    /// members.
    fn member_header(&mut self) -> io::Result<bool> {
        match self.input.peek()? {
            None => return Ok(false),
            Some(0x1f) => {}
            Some(_) if !self.strict => return Ok(false),
            Some(0) if self.input.rest_is_zero()? => return Ok(false),
            Some(_) => return Err(corrupt("garbage after a gzip member")),
        }
        let [_, id2, method, flags] = self.input.needed_array()?;
        if id2 != 0x8b {
            if !self.strict {
                return Ok(false);
            }
            return Err(corrupt("garbage after a gzip member"));
        }
        if method != 8 {
            return Err(corrupt("gzip member uses an unknown compression method"));
        }
        if flags & 0xe0 != 0 {
            return Err(corrupt("gzip header has reserved flags set"));
        }
        // mtime, extra flags, OS
        self.input.skip(6)?;
        if flags & 0x04 != 0 {
            let len = u16::from_le_bytes(self.input.needed_array()?);
            self.input.skip(len.into())?;
        }
        if flags & 0x08 != 0 {
            self.input.skip_string()?;
        }
        if flags & 0x10 != 0 {
            self.input.skip_string()?;
        }
        if flags & 0x02 != 0 {
            self.input.skip(2)?;
        }
        self.inflater.reset()?;
        Ok(true)
    }
}
