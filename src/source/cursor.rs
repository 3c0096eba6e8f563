//! The one reader of the binary indexes layerfs stores (gzip checkpoints,
//! frame and block tables, chunk tables, chunk sums), and the one error
//! their decoders return.
//!
//! Those bytes come back from a cache directory or a shipped bundle, so
//! they are untrusted: every read checks what is left and says `None`
//! rather than panicking, and each decoder turns that into its own error
//! (what it was reading is what the message should name). Integers are
//! little-endian, as every encoder here writes them; the cache's entry
//! format (`cache/format.rs`) reads its varints through the same cursor.

/// Why a stored seek index (see `seek.rs`) could not be decoded.
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("bad seek index: {0}")]
pub struct SeekDecodeError(pub &'static str);

/// A position in encoded bytes that only moves forward. Its reads are
/// `#[inline]`: the cache's varint loop calls them for every field of
/// every member, from other modules.
#[derive(Debug)]
pub(crate) struct ByteCursor<'a>(&'a [u8]);

impl<'a> ByteCursor<'a> {
    /// A cursor at the start of `bytes`.
    #[inline]
    pub(crate) fn new(bytes: &'a [u8]) -> ByteCursor<'a> {
        ByteCursor(bytes)
    }

    /// The next `n` bytes, if there are that many.
    #[inline]
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    /// The next `N` bytes as an array.
    #[inline]
    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    /// The next byte.
    #[inline]
    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    /// The next four bytes as a little-endian integer.
    #[inline]
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    /// The next eight bytes as a little-endian integer.
    #[inline]
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    /// The bytes not read yet.
    #[inline]
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.0
    }

    /// How many bytes are left: what a count read from the bytes is
    /// checked against before anything is allocated for it.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether everything was read (trailing bytes are refused).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_and_refuses_to_run_past_the_end() {
        let bytes = [7, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 9, 9];
        let mut r = ByteCursor::new(&bytes);
        assert_eq!(r.u8(), Some(7));
        assert_eq!(r.u32(), Some(1));
        assert_eq!(r.u64(), Some(2));
        assert_eq!(r.len(), 2);
        assert_eq!(r.u32(), None);
        // A failed read takes nothing.
        assert_eq!(r.rest(), &[9, 9]);
        assert_eq!(r.take(3), None);
        assert_eq!(r.array::<2>(), Some([9, 9]));
        assert!(r.is_empty());
        assert_eq!(r.u8(), None);
        assert_eq!(r.take(0), Some(&[][..]));
    }
}
