//! gzip random access, in the manner of zlib's `zran` example.
//!
//! deflate has no resume points of its own: every byte may refer back to
//! any of the 32 KiB before it, and blocks start at arbitrary bit offsets.
//! So while the indexing pass inflates the layer anyway, it stops at deflate
//! block boundaries (zlib's `Z_BLOCK`) and, about every [`pass::SPACING`]
//! bytes of output, notes a *checkpoint*: the decompressed offset, the
//! compressed position to the bit, and the 32 KiB of output before it (kept
//! deflate-compressed, since the index lives as long as the mount). A read
//! then primes a raw inflater with the odd bits, gives it the window as its
//! dictionary, and inflates forward from the last checkpoint at or before
//! its offset: a cold read inflates at most one span.
//!
//! gzip headers and trailers are read here rather than by zlib, so one raw
//! inflater runs through a whole multi-member file (pigz, bgzip) and can
//! start anywhere inside a member. The indexing pass checks each member's
//! CRC-32 and length; reads later trust the file they indexed.
//!
//! Sequential reads (FUSE asks for 128 KiB–1 MiB at a time) would each pay
//! for a cold start; instead a few inflaters are parked where their last
//! read ended and resumed by a read that starts at or after them, and a read
//! that arrives while the piece before it is still inflating on another
//! thread waits for that inflater.
//!
//! The files, lowest first: `zlib.rs` (zlib's raw inflate, the only
//! `unsafe` here), `deflate_scan.rs` (where a block could start), `input.rs`
//! (compressed bytes, offsets known), `index.rs` (checkpoints and their
//! encoding), `members.rs` (one inflater through headers, data and
//! trailers), `parallel.rs` (one member inflated on several cores),
//! `pass.rs` (the indexing pass), `access.rs` (reads) and `window_use.rs`
//! (which window bytes a checkpoint's stream uses, for an index that
//! travels).

mod access;
mod deflate_scan;
mod index;
mod input;
mod members;
mod parallel;
mod pass;
mod window_use;
mod zlib;

pub(crate) use access::access;
pub use index::GzipIndex;
pub(crate) use pass::index_pass;
pub(crate) use window_use::sparsen_windows;
pub use window_use::SparseCount;

#[cfg(test)]
mod tests;
