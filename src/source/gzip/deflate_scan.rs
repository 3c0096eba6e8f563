//! Finding where a deflate block may start, in the middle of a stream.
//!
//! deflate marks nothing: a block begins at whatever bit the previous one's
//! end-of-block code ended on. To inflate a gzip member from its middle
//! (see [`super::parallel`]) a worker looks for bits that *could* be a
//! block start and lets a trial inflate, and in the end the block chain
//! itself, decide. Two kinds of start are looked for, as rapidgzip does:
//!
//! - a non-final block with its own Huffman codes: its header (sizes, the
//!   code-length code, the code lengths) must be one zlib would accept, which
//!   almost no run of bits is;
//! - the block right after a non-final stored block, whose 16-bit length is
//!   followed by its complement (`00 00 ff ff` is the empty one pigz and
//!   zlib's flushes write).
//!
//! Blocks with the fixed codes are not looked for: any 3 bits can start one,
//! and encoders use them only for short blocks. A scan that misses a start
//! finds a later one; a start that is not a real one fails the chain check
//! and costs only speculation.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The order the code-length code's lengths are stored in (RFC 1951 3.2.7).
const CODE_LENGTH_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

/// Bits of the longest code-length code.
const CODE_LENGTH_BITS: usize = 7;

/// Longest literal/length or distance code.
const MAX_BITS: usize = 15;

/// Candidate block starts in `data`, ascending, as bit offsets from its
/// first byte, from `from` (a bit offset) on. A candidate too near the end
/// of `data` to check is not given.
pub(super) fn candidates(data: &[u8], from: u64) -> Candidates<'_> {
    Candidates {
        data,
        next: from,
        stored_from: from / 8,
        stored: BinaryHeap::new(),
    }
}

/// See [`candidates`].
pub(super) struct Candidates<'a> {
    data: &'a [u8],
    /// Next bit to test as a dynamic block header.
    next: u64,
    /// Next byte to test as a stored block's length.
    stored_from: u64,
    /// Starts after stored blocks found so far, not yet handed out.
    stored: BinaryHeap<Reverse<u64>>,
}

impl Iterator for Candidates<'_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        let bits = (self.data.len() as u64) * 8;
        while self.next < bits {
            let bit = self.next;
            // Stored blocks whose length field lies before this bit's byte
            // have been seen; one ending here comes first.
            let byte = bit / 8;
            while self.stored_from <= byte {
                if let Some(end) = stored_block_end(self.data, self.stored_from) {
                    if end >= self.next {
                        self.stored.push(Reverse(end));
                    }
                }
                self.stored_from += 1;
            }
            if let Some(&Reverse(end)) = self.stored.peek() {
                if end <= bit {
                    self.stored.pop();
                    if end == bit {
                        // Both kinds here: hand it out once.
                        self.next = bit + 1;
                    }
                    return Some(end);
                }
            }
            self.next = bit + 1;
            if dynamic_header_at(self.data, bit) {
                return Some(bit);
            }
        }
        // Past the data: only stored ends inside it remain.
        while let Some(Reverse(end)) = self.stored.pop() {
            if end < bits {
                return Some(end);
            }
        }
        None
    }
}

/// The bit after a non-final stored block whose length field starts at
/// byte `at`, if the field and its complement agree.
fn stored_block_end(data: &[u8], at: u64) -> Option<u64> {
    let at = usize::try_from(at).ok()?;
    let field = data.get(at..at.checked_add(4)?)?;
    let len = u16::from_le_bytes([field[0], field[1]]);
    let nlen = u16::from_le_bytes([field[2], field[3]]);
    if len != !nlen || at == 0 {
        return None;
    }
    // The block's 3 header bits (not final, stored) end the byte before,
    // followed by zero padding: the byte's top three bits at least must be
    // clear for a header to fit there.
    if data[at - 1] & 0xe0 != 0 {
        return None;
    }
    Some((at as u64 + 4 + u64::from(len)) * 8)
}

/// LSB-first bits of a byte slice, reading zeros nowhere: running past the
/// end is reported.
struct Bits<'a> {
    data: &'a [u8],
    pos: u64,
}

impl Bits<'_> {
    /// The next `n` (≤ 32) bits, or `None` past the end of the data.
    fn peek(&self, n: u32) -> Option<u32> {
        let byte = usize::try_from(self.pos / 8).ok()?;
        let shift = (self.pos % 8) as u32;
        let need = (shift + n).div_ceil(8) as usize;
        let bytes = self.data.get(byte..byte.checked_add(need)?)?;
        let mut word = 0u64;
        for (i, &b) in bytes.iter().enumerate() {
            word |= u64::from(b) << (8 * i);
        }
        Some(((word >> shift) & ((1u64 << n) - 1)) as u32)
    }

    fn take(&mut self, n: u32) -> Option<u32> {
        let v = self.peek(n)?;
        self.pos += u64::from(n);
        Some(v)
    }
}

/// Whether a code with these lengths is one zlib's `inflate_table` builds:
/// not over-subscribed, and complete unless `incomplete_single` allows a
/// lone one-bit code (what literal/length and distance codes may be).
/// `None` for no codes at all.
fn code_is_valid(lengths: &[u8], incomplete_single: bool) -> Option<bool> {
    let mut count = [0u32; MAX_BITS + 1];
    for &l in lengths {
        count[usize::from(l)] += 1;
    }
    let max = (1..=MAX_BITS).rev().find(|&l| count[l] != 0)?;
    let mut left: i64 = 1;
    for &c in &count[1..] {
        left = (left << 1) - i64::from(c);
        if left < 0 {
            return Some(false);
        }
    }
    Some(left == 0 || (incomplete_single && max == 1))
}

/// Whether a non-final dynamic-Huffman block header zlib would accept
/// starts at bit `bit` of `data`.
pub(super) fn dynamic_header_at(data: &[u8], bit: u64) -> bool {
    let mut bits = Bits { data, pos: bit };
    // BFINAL = 0, BTYPE = 2, HLIT, HDIST, HCLEN: 17 bits.
    let Some(head) = bits.take(17) else {
        return false;
    };
    if head & 7 != 0b100 {
        return false;
    }
    let literals = ((head >> 3) & 31) as usize + 257;
    let distances = ((head >> 8) & 31) as usize + 1;
    let code_lengths = ((head >> 13) & 15) as usize + 4;
    if literals > 286 || distances > 30 {
        return false;
    }
    let mut precode = [0u8; 19];
    for &symbol in &CODE_LENGTH_ORDER[..code_lengths] {
        match bits.take(3) {
            Some(l) => precode[symbol] = l as u8,
            None => return false,
        }
    }
    if code_is_valid(&precode, false) != Some(true) {
        return false;
    }
    let table = decode_table(&precode);
    let mut lengths = [0u8; 286 + 30];
    let total = literals + distances;
    let mut i = 0;
    while i < total {
        // A candidate this near the end of the data is not given.
        let Some(peek) = bits.peek(CODE_LENGTH_BITS as u32) else {
            return false;
        };
        let (symbol, len) = table[peek as usize];
        if len == 0 || bits.take(u32::from(len)).is_none() {
            return false;
        }
        let (value, repeat) = match symbol {
            0..=15 => (symbol, 1),
            16 => {
                let Some(r) = bits.take(2) else { return false };
                if i == 0 {
                    return false;
                }
                (lengths[i - 1], 3 + r as usize)
            }
            17 => match bits.take(3) {
                Some(r) => (0, 3 + r as usize),
                None => return false,
            },
            _ => match bits.take(7) {
                Some(r) => (0, 11 + r as usize),
                None => return false,
            },
        };
        if i + repeat > total {
            return false;
        }
        lengths[i..i + repeat].fill(value);
        i += repeat;
    }
    let (lit, dist) = lengths[..total].split_at(literals);
    // No end-of-block code: zlib refuses the block.
    if lit[256] == 0 {
        return false;
    }
    code_is_valid(lit, true) == Some(true) && code_is_valid(dist, true) != Some(false)
}

/// A lookup table for the code-length code: indexed by the next 7 bits
/// (LSB first), it gives the symbol and its code length (0: no code).
fn decode_table(lengths: &[u8; 19]) -> [(u8, u8); 1 << CODE_LENGTH_BITS] {
    let mut table = [(0u8, 0u8); 1 << CODE_LENGTH_BITS];
    let mut code = 0u32;
    for len in 1..=CODE_LENGTH_BITS as u8 {
        for (symbol, &l) in lengths.iter().enumerate() {
            if l != len {
                continue;
            }
            // Codes are sent most significant bit first: reverse them for
            // an LSB-first lookup.
            let reversed = code.reverse_bits() >> (32 - u32::from(len));
            let mut index = reversed as usize;
            while index < table.len() {
                table[index] = (symbol as u8, len);
                index += 1 << len;
            }
            code += 1;
        }
        code <<= 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::gzip::zlib::{Flush, Inflater};
    use flate2::Compression;

    /// Text-like data with some repetition, so encoders pick dynamic codes.
    fn sample(len: usize, seed: u64) -> Vec<u8> {
        let words = [
            &b"layer "[..],
            b"whiteout ",
            b"opaque ",
            b"usr/lib/",
            b"\n",
            b"0123",
            b"tar ",
        ];
        let mut state = seed | 1;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if state % 5 == 0 {
                out.push((state >> 24) as u8);
            } else {
                out.extend_from_slice(words[(state >> 8) as usize % words.len()]);
            }
        }
        out.truncate(len);
        out
    }

    /// Raw deflate of `data`, with a sync flush (an empty stored block)
    /// every `sync` bytes if given.
    fn deflate(data: &[u8], level: u32, sync: Option<usize>) -> Vec<u8> {
        use std::io::Write;
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), Compression::new(level));
        for piece in data.chunks(sync.unwrap_or(data.len()).max(1)) {
            z.write_all(piece).expect("deflate");
            if sync.is_some() {
                z.flush().expect("sync flush");
            }
        }
        z.finish().expect("deflate")
    }

    /// Every block boundary of a raw deflate stream (as bit offsets), and
    /// the types of the blocks that start there.
    fn boundaries(packed: &[u8]) -> Vec<u64> {
        let mut z = Inflater::new_raw().expect("inflater");
        let mut out = vec![0u8; 1 << 16];
        let mut at = 0;
        let mut ends = Vec::new();
        loop {
            let r = z
                .inflate(&packed[at..], &mut out, Flush::Block)
                .expect("inflate");
            at += r.consumed;
            if r.stream_end {
                break;
            }
            if r.block_end {
                ends.push(at as u64 * 8 - u64::from(r.unused_bits));
            }
        }
        ends.dedup();
        ends
    }

    /// The 3 header bits of the block at `bit`: final flag, then type.
    fn block_header(packed: &[u8], bit: u64) -> u32 {
        Bits {
            data: packed,
            pos: bit,
        }
        .peek(3)
        .expect("header")
    }

    #[test]
    fn every_dynamic_and_after_stored_start_is_a_candidate() {
        let data = sample(3 << 20, 7);
        for (level, sync) in [(6, None), (9, None), (6, Some(100_000)), (1, Some(100_000))] {
            let packed = deflate(&data, level, sync);
            let found: std::collections::HashSet<u64> = candidates(&packed, 0).collect();
            let starts = boundaries(&packed);
            let mut dynamic = 0;
            for &b in &starts {
                // Non-final, dynamic codes.
                if block_header(&packed, b) == 0b100 {
                    dynamic += 1;
                    assert!(
                        found.contains(&b),
                        "level {level}: dynamic block at {b} missed"
                    );
                }
            }
            // zlib-rs's level 1 writes fixed-code blocks only: there the
            // stored blocks of the flushes are what can be found.
            assert!(
                dynamic > 3 || level == 1,
                "level {level}: only {dynamic} dynamic blocks"
            );
            if sync.is_some() {
                // The block after each empty stored block.
                let after: Vec<u64> = packed
                    .windows(4)
                    .enumerate()
                    .filter(|(_, w)| *w == [0, 0, 0xff, 0xff])
                    .map(|(i, _)| (i as u64 + 4) * 8)
                    .filter(|b| starts.contains(b))
                    .collect();
                assert!(after.len() > 5);
                for b in after {
                    assert!(
                        found.contains(&b),
                        "start after a stored block at {b} missed"
                    );
                }
            }
        }
    }

    #[test]
    fn candidates_are_ascending_and_rare() {
        let data = sample(2 << 20, 11);
        let packed = deflate(&data, 6, Some(200_000));
        let found: Vec<u64> = candidates(&packed, 12_345).collect();
        assert!(found.windows(2).all(|w| w[0] < w[1]));
        assert!(found.iter().all(|&b| b >= 12_345));
        let real = boundaries(&packed);
        let false_ones = found.iter().filter(|b| !real.contains(b)).count();
        // Headers zlib accepts are rare in compressed bits: a handful per
        // MiB at most.
        let mib = packed.len() as f64 / (1 << 20) as f64;
        assert!(
            (false_ones as f64) < 50.0 * mib.max(1.0),
            "{false_ones} false candidates in {mib:.1} MiB"
        );
    }

    #[test]
    fn random_bytes_give_few_candidates_and_short_input_none() {
        let mut state = 99u64;
        let noise: Vec<u8> = (0..1 << 20)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 33) as u8
            })
            .collect();
        assert!(candidates(&noise, 0).count() < 200);
        assert_eq!(candidates(&[0x04, 0x00], 0).count(), 0);
        assert_eq!(candidates(&[], 0).count(), 0);
    }

    #[test]
    fn code_validity_follows_zlib() {
        // Complete: two 1-bit codes.
        assert_eq!(code_is_valid(&[1, 1], false), Some(true));
        // Over-subscribed.
        assert_eq!(code_is_valid(&[1, 1, 1], true), Some(false));
        // A lone 1-bit code: fine for literal and distance codes only.
        assert_eq!(code_is_valid(&[1, 0], true), Some(true));
        assert_eq!(code_is_valid(&[1, 0], false), Some(false));
        // Incomplete with longer codes.
        assert_eq!(code_is_valid(&[2, 2, 2], true), Some(false));
        assert_eq!(code_is_valid(&[0, 0], true), None);
    }
}
