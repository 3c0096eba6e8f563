//! Which bytes of a gzip checkpoint's 32 KiB window the deflate stream
//! after it ever copies, so that the rest can be zeroed before the index
//! travels (a "sparse window", as rapidgzip keeps them).
//!
//! A checkpoint stores the output before it because back-references may
//! reach that far, but in practice they reach a fraction of it: a window
//! of already-compressed data (most of a container layer) is hardly ever
//! referenced, and zeros cost nothing once the index is compressed. Only
//! the first 32 KiB of output after the checkpoint can reach into the
//! window (a distance is at most 32 KiB), so a short decode tells.
//!
//! zlib does not say which distances it followed, so the deflate stream is
//! decoded here, for its symbols only (no output is made: a literal just
//! advances the position, a copy marks the window bytes it reads). The
//! answer is then never taken on trust: [`sparsen`] inflates the same
//! 32 KiB with zlib from the sparse window and from the whole one and
//! keeps the sparse one only if both give the same bytes. After those
//! 32 KiB the two inflaters' histories are the same bytes, so everything
//! later is the same too. The chunk sums check compressed bytes only, so
//! a wrong window would otherwise serve wrong data unnoticed.

use std::io;

use super::index::{GzipIndex, WINDOW};
use super::zlib::{Flush, Inflater};
use crate::source::remote::BlobFetch;

/// Compressed bytes fetched after a checkpoint for a first try: 32 KiB of
/// output rarely takes more than its own size of input.
const FIRST_FETCH: usize = 48 * 1024;

/// The most compressed bytes fetched after one checkpoint; a stream that
/// needs more for 32 KiB of output (it cannot, short of a pathological
/// encoder) keeps its whole window.
const MAX_FETCH: usize = 1 << 20;

/// Checkpoints checked at once, each on a thread of its own with a ranged
/// GET of its own: a registry's round trip, not the decoding, is most of
/// the time.
const AT_ONCE: usize = 8;

/// What became of one checkpoint's window.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Sparsened {
    /// The window with every byte the stream never copies zeroed, proven
    /// to inflate the same.
    Sparse(Vec<u8>),
    /// The whole window is needed, or could not be proven unneeded.
    Full(&'static str),
    /// `input` ends before 32 KiB of output (or the stream's end): more is
    /// needed to tell.
    Short,
}

/// The sparse form of `window` for the deflate stream that starts at bit
/// `skip` (0–7) of `input`, where `window` is the output before it; see
/// the module docs.
pub(super) fn sparsen(input: &[u8], skip: u8, window: &[u8]) -> Sparsened {
    match references(input, skip, window.len()) {
        Ok(Some(used)) => prove(input, skip, window, &used),
        Ok(None) => Sparsened::Short,
        Err(reason) => Sparsened::Full(reason),
    }
}

/// `window` with the bytes not `used` zeroed, if zlib inflates the same
/// from it as from `window`.
fn prove(input: &[u8], skip: u8, window: &[u8], used: &[bool]) -> Sparsened {
    let sparse: Vec<u8> = window
        .iter()
        .zip(used)
        .map(|(&byte, &used)| if used { byte } else { 0 })
        .collect();
    match same_output(input, skip, window, &sparse) {
        Ok(true) => Sparsened::Sparse(sparse),
        Ok(false) => Sparsened::Full("the sparse window inflates other bytes"),
        Err(Proof::Short) => Sparsened::Short,
        Err(Proof::Failed) => Sparsened::Full("zlib refused the stream after the checkpoint"),
    }
}

/// Counts of what [`sparsen_windows`] did, for a log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SparseCount {
    /// Windows made sparse.
    pub sparse: usize,
    /// Windows kept whole.
    pub full: usize,
    /// Window bytes zeroed.
    pub zeroed: u64,
    /// Compressed bytes fetched to tell.
    pub fetched: u64,
}

/// Makes the windows of a gzip layer's checkpoints in `index` sparse
/// where that is proven safe, reading the compressed bytes after each
/// checkpoint from `blob` by range (a few dozen KiB each). A failed fetch
/// is an error; a window that cannot be made sparse stays whole.
pub(crate) fn sparsen_windows(
    index: &mut GzipIndex,
    blob: &dyn BlobFetch,
) -> io::Result<SparseCount> {
    let bits = index.checkpoint_bits();
    let mut count = SparseCount::default();
    let numbered: Vec<(usize, u64)> = bits.into_iter().enumerate().collect();
    for batch in numbered.chunks(AT_ONCE) {
        let shared = &*index;
        let outcomes: Vec<io::Result<(Sparsened, Vec<u8>, u64)>> = std::thread::scope(|scope| {
            let workers: Vec<_> = batch
                .iter()
                .map(|&(i, bit)| scope.spawn(move || one_window(shared.window(i)?, bit, blob)))
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|_| Err(io::Error::other("a window's check panicked")))
                })
                .collect()
        });
        for (&(i, bit), outcome) in batch.iter().zip(outcomes) {
            let (outcome, window, fetched) = outcome?;
            count.fetched += fetched;
            match outcome {
                Sparsened::Sparse(sparse) => {
                    count.sparse += 1;
                    count.zeroed +=
                        window.iter().zip(&sparse).filter(|(a, b)| a != b).count() as u64;
                    index.set_window(i, &sparse)?;
                }
                Sparsened::Full(reason) => {
                    log::debug!(
                        "{}: the gzip checkpoint at bit {bit} keeps its whole window: {reason}",
                        blob.name()
                    );
                    count.full += 1;
                }
                Sparsened::Short => count.full += 1,
            }
        }
    }
    Ok(count)
}

/// What becomes of `window`, the window of the checkpoint at `bit` of
/// `blob`, with the window itself and the bytes fetched to tell.
fn one_window(
    window: Vec<u8>,
    bit: u64,
    blob: &dyn BlobFetch,
) -> io::Result<(Sparsened, Vec<u8>, u64)> {
    let start = bit / 8;
    let skip = (bit % 8) as u8;
    let mut want = FIRST_FETCH;
    let mut fetched = 0;
    loop {
        let len = usize::try_from(blob.len().saturating_sub(start))
            .unwrap_or(usize::MAX)
            .min(want);
        let mut input = vec![0u8; len];
        blob.fetch(start, &mut input)?;
        fetched += len as u64;
        match sparsen(&input, skip, &window) {
            Sparsened::Short if len == want && want < MAX_FETCH => want *= 4,
            Sparsened::Short => {
                let outcome = Sparsened::Full("the blob ends too soon after it");
                return Ok((outcome, window, fetched));
            }
            done => return Ok((done, window, fetched)),
        }
    }
}

/// Why [`same_output`] could not tell.
enum Proof {
    /// The input ends first.
    Short,
    /// zlib failed on one of the two.
    Failed,
}

/// Whether zlib inflates the same first 32 KiB (or all, if the stream ends
/// sooner) from the stream at bit `skip` of `input` with `full` and with
/// `sparse` as the window.
fn same_output(input: &[u8], skip: u8, full: &[u8], sparse: &[u8]) -> Result<bool, Proof> {
    let a = inflate_head(input, skip, full)?;
    let b = inflate_head(input, skip, sparse)?;
    Ok(a == b)
}

/// Up to [`WINDOW`] bytes inflated from bit `skip` of `input` with
/// `window` as the history.
fn inflate_head(input: &[u8], skip: u8, window: &[u8]) -> Result<Vec<u8>, Proof> {
    let failed = |_| Proof::Failed;
    let (&first, rest) = input.split_first().ok_or(Proof::Short)?;
    let mut inflater = Inflater::new_raw().map_err(failed)?;
    let mut rest = if skip > 0 {
        inflater.prime(8 - skip, first >> skip).map_err(failed)?;
        rest
    } else {
        input
    };
    inflater.set_dictionary(window).map_err(failed)?;
    let mut out = vec![0u8; WINDOW];
    let mut made = 0;
    while made < WINDOW {
        let step = inflater
            .inflate(rest, &mut out[made..], Flush::None)
            .map_err(failed)?;
        made += step.produced;
        rest = &rest[step.consumed..];
        if step.stream_end {
            out.truncate(made);
            return Ok(out);
        }
        if step.consumed == 0 && step.produced == 0 {
            return Err(Proof::Short);
        }
    }
    Ok(out)
}

/// Reads a deflate stream's bits, least significant first.
struct Bits<'a> {
    input: &'a [u8],
    /// The next bit, counted from the start of `input`.
    at: u64,
}

/// The input ran out: not an error, more is needed.
struct Short;

impl Bits<'_> {
    fn bit(&mut self) -> Result<u32, Short> {
        let byte = usize::try_from(self.at / 8).map_err(|_| Short)?;
        let byte = *self.input.get(byte).ok_or(Short)?;
        let bit = (byte >> (self.at % 8)) & 1;
        self.at += 1;
        Ok(u32::from(bit))
    }

    fn bits(&mut self, n: u32) -> Result<u32, Short> {
        let mut value = 0;
        for i in 0..n {
            value |= self.bit()? << i;
        }
        Ok(value)
    }

    /// Skips to the next byte boundary.
    fn align(&mut self) {
        self.at = self.at.next_multiple_of(8);
    }
}

/// A canonical Huffman code: how many codes of each length, and the
/// symbols in code order.
struct Code {
    counts: [u16; 16],
    symbols: Vec<u16>,
}

impl Code {
    /// The code of the given code lengths (0: symbol unused). Refuses an
    /// over-subscribed set of lengths; an incomplete one is allowed (a
    /// distance code with one symbol is), and a code it lacks is an error
    /// when met.
    fn new(lengths: &[u8]) -> Result<Code, &'static str> {
        let mut counts = [0u16; 16];
        for &len in lengths {
            counts[usize::from(len)] += 1;
        }
        counts[0] = 0;
        let mut left: i32 = 1;
        for &count in &counts[1..] {
            left = left * 2 - i32::from(count);
            if left < 0 {
                return Err("an over-subscribed Huffman code");
            }
        }
        let mut offsets = [0u16; 16];
        for len in 1..15 {
            offsets[len + 1] = offsets[len] + counts[len];
        }
        let mut symbols = vec![0u16; lengths.len()];
        for (symbol, &len) in lengths.iter().enumerate() {
            if len != 0 {
                let at = &mut offsets[usize::from(len)];
                symbols[usize::from(*at)] = symbol as u16;
                *at += 1;
            }
        }
        Ok(Code { counts, symbols })
    }

    /// The next symbol, read a bit at a time.
    fn decode(&self, bits: &mut Bits) -> Result<Result<u16, &'static str>, Short> {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for &count in &self.counts[1..] {
            code |= bits.bit()? as i32;
            let count = i32::from(count);
            if code - first < count {
                let at = usize::try_from(index + code - first).unwrap_or(usize::MAX);
                return Ok(self.symbols.get(at).copied().ok_or("a bad Huffman code"));
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        Ok(Err("a code the Huffman table lacks"))
    }
}

/// Length codes 257..285: base lengths and extra bits.
const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
/// Distance codes 0..29: base distances and extra bits.
const DISTANCE_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DISTANCE_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];
/// The order code length code lengths come in, in a dynamic block.
const CODE_LENGTH_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

/// Which of the `window_len` window bytes the deflate stream from bit
/// `skip` of `input` copies before it has made [`WINDOW`] bytes of output
/// or ended; `None` if `input` ends first; an error for a stream that is
/// not deflate.
fn references(
    input: &[u8],
    skip: u8,
    window_len: usize,
) -> Result<Option<Vec<bool>>, &'static str> {
    let mut used = vec![false; window_len];
    let mut bits = Bits {
        input,
        at: u64::from(skip),
    };
    match blocks(&mut bits, &mut used) {
        Ok(Ok(())) => Ok(Some(used)),
        Ok(Err(reason)) => Err(reason),
        Err(Short) => Ok(None),
    }
}

/// Decodes blocks until 32 KiB of output or the last block's end, marking
/// the window bytes copied in `used`.
fn blocks(bits: &mut Bits, used: &mut [bool]) -> Result<Result<(), &'static str>, Short> {
    let mut out = 0usize;
    loop {
        let last = bits.bit()? == 1;
        let code = match bits.bits(2)? {
            0 => {
                bits.align();
                let len = bits.bits(16)?;
                let nlen = bits.bits(16)?;
                if len != !nlen & 0xffff {
                    return Ok(Err("a stored block's length fails its check"));
                }
                // The bytes themselves are needed only if the verdict
                // depends on them: 32 KiB in, none of them can matter.
                bits.at += u64::from(len) * 8;
                if bits.at > bits.input.len() as u64 * 8 && out + (len as usize) < WINDOW {
                    return Err(Short);
                }
                out += len as usize;
                None
            }
            1 => match fixed() {
                Ok(codes) => Some(codes),
                Err(reason) => return Ok(Err(reason)),
            },
            2 => match dynamic(bits)? {
                Ok(codes) => Some(codes),
                Err(reason) => return Ok(Err(reason)),
            },
            _ => return Ok(Err("a block of the reserved type 3")),
        };
        if let Some((literals, distances)) = code {
            match symbols(bits, &literals, &distances, used, &mut out)? {
                Ok(()) => {}
                Err(reason) => return Ok(Err(reason)),
            }
        }
        if last || out >= WINDOW {
            return Ok(Ok(()));
        }
    }
}

/// The fixed codes of a type 1 block.
fn fixed() -> Result<(Code, Code), &'static str> {
    let mut lengths = [0u8; 288];
    lengths[..144].fill(8);
    lengths[144..256].fill(9);
    lengths[256..280].fill(7);
    lengths[280..].fill(8);
    Ok((Code::new(&lengths)?, Code::new(&[5u8; 30])?))
}

/// The codes of a type 2 block, read from its header.
#[allow(clippy::type_complexity)]
fn dynamic(bits: &mut Bits) -> Result<Result<(Code, Code), &'static str>, Short> {
    let literal_count = bits.bits(5)? as usize + 257;
    let distance_count = bits.bits(5)? as usize + 1;
    let length_count = bits.bits(4)? as usize + 4;
    if literal_count > 286 || distance_count > 30 {
        return Ok(Err("a dynamic block with too many codes"));
    }
    let mut length_lengths = [0u8; 19];
    for &at in &CODE_LENGTH_ORDER[..length_count] {
        length_lengths[at] = bits.bits(3)? as u8;
    }
    let length_code = match Code::new(&length_lengths) {
        Ok(code) => code,
        Err(reason) => return Ok(Err(reason)),
    };
    let mut lengths = vec![0u8; literal_count + distance_count];
    let mut at = 0;
    while at < lengths.len() {
        let symbol = match length_code.decode(bits)? {
            Ok(symbol) => symbol,
            Err(reason) => return Ok(Err(reason)),
        };
        let (value, repeat) = match symbol {
            0..=15 => (symbol as u8, 1),
            16 => match at.checked_sub(1) {
                Some(before) => (lengths[before], 3 + bits.bits(2)? as usize),
                None => return Ok(Err("a repeat with nothing before it")),
            },
            17 => (0, 3 + bits.bits(3)? as usize),
            _ => (0, 11 + bits.bits(7)? as usize),
        };
        if at + repeat > lengths.len() {
            return Ok(Err("code lengths run past their count"));
        }
        lengths[at..at + repeat].fill(value);
        at += repeat;
    }
    if lengths[256] == 0 {
        return Ok(Err("a block without an end-of-block code"));
    }
    let (literal_lengths, distance_lengths) = lengths.split_at(literal_count);
    let codes = Code::new(literal_lengths).and_then(|l| Ok((l, Code::new(distance_lengths)?)));
    Ok(codes)
}

/// Decodes one block's symbols up to its end (or 32 KiB of output),
/// advancing `out` and marking the window bytes each copy reads.
fn symbols(
    bits: &mut Bits,
    literals: &Code,
    distances: &Code,
    used: &mut [bool],
    out: &mut usize,
) -> Result<Result<(), &'static str>, Short> {
    while *out < WINDOW {
        let symbol = match literals.decode(bits)? {
            Ok(symbol) => usize::from(symbol),
            Err(reason) => return Ok(Err(reason)),
        };
        if symbol < 256 {
            *out += 1;
            continue;
        }
        if symbol == 256 {
            return Ok(Ok(()));
        }
        let Some(&base) = LENGTH_BASE.get(symbol - 257) else {
            return Ok(Err("a length code past 285"));
        };
        let len = usize::from(base) + bits.bits(u32::from(LENGTH_EXTRA[symbol - 257]))? as usize;
        let code = match distances.decode(bits)? {
            Ok(code) => usize::from(code),
            Err(reason) => return Ok(Err(reason)),
        };
        let Some(&base) = DISTANCE_BASE.get(code) else {
            return Ok(Err("a distance code past 29"));
        };
        let distance = usize::from(base) + bits.bits(u32::from(DISTANCE_EXTRA[code]))? as usize;
        if distance > *out {
            // Reaches into the window: window byte `len - (distance - out)`
            // is the one just before the checkpoint's output.
            let back = distance - *out;
            let Some(first) = used.len().checked_sub(back) else {
                return Ok(Err("a distance that reaches before the window"));
            };
            let end = (first + len).min(used.len());
            used[first..end].fill(true);
        }
        *out += len;
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests;
