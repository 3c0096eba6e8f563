//! The one place that names every codec module: what the layer source
//! (`reader.rs`) and the head reader (`head.rs`) ask of a codec goes
//! through the three matches here. Adding a codec is a module beside the
//! others, its [`Codec`] variant and magic (`codec.rs`), its [`SeekIndex`]
//! variant (`seek.rs`), and one line in each match below.

use std::io::{self, BufRead, Read};
use std::path::Path;
use std::sync::Arc;

use super::access::{map_index, Access, DecodeCounter, IndexingDecoder};
use super::chunk_table::{self, ChunkCodec};
use super::codec::Codec;
use super::region::Region;
use super::seek::SeekIndex;
use super::{bzip2, gzip, lz4, xz, zstd};

/// The indexing pass of a compressed layer, `len` bytes of `file`; `None`
/// for a plain tar, which the layer source passes over itself (seeking
/// over member data rather than decoding it).
pub(super) fn index_pass(
    codec: Codec,
    file: Arc<Region>,
    len: u64,
) -> Option<Box<dyn IndexingDecoder<SeekIndex>>> {
    Some(match codec {
        Codec::Plain => return None,
        Codec::Gzip => map_index(gzip::index_pass(file, len), SeekIndex::Gzip),
        Codec::Zstd => map_index(zstd::index_pass(file, len), SeekIndex::Zstd),
        Codec::Bzip2 => map_index(bzip2::index_pass(file, len), SeekIndex::Bzip2),
        Codec::Xz => map_index(xz::index_pass(file, len), SeekIndex::Xz),
        Codec::Lz4 => map_index(lz4::index_pass(file, len), SeekIndex::Lz4),
    })
}

/// Why [`access`] gave no reads.
pub(super) enum AccessError {
    /// The index is not one of this codec's (a stored index of another
    /// layer, or of a layer since replaced).
    Misfit(SeekIndex),
    /// The codec refused the index, or could not start.
    Io(io::Error),
}

/// Reads at decompressed offsets of a `codec` layer through `seek`, what
/// its indexing pass learned; layers without resume points spill what
/// they decode into `spill_dir`.
pub(super) fn access(
    codec: Codec,
    seek: SeekIndex,
    file: Arc<Region>,
    len: u64,
    counter: Arc<DecodeCounter>,
    spill_dir: &Path,
) -> Result<Box<dyn Access>, AccessError> {
    let spill = spill_dir;
    let access: io::Result<Box<dyn Access>> = match (codec, seek) {
        (Codec::Plain, SeekIndex::Plain) => Ok(Box::new(PlainAccess(file))),
        (Codec::Gzip, SeekIndex::Gzip(index)) => gzip::access(file, len, index, counter),
        (Codec::Zstd, SeekIndex::Zstd(index)) => zstd::access(file, len, index, counter, spill),
        (Codec::Bzip2, SeekIndex::Bzip2(index)) => bzip2::access(file, len, index, counter, spill),
        (Codec::Xz, SeekIndex::Xz(index)) => xz::access(file, len, index, counter, spill),
        (Codec::Lz4, SeekIndex::Lz4(index)) => lz4::access(file, len, index, counter, spill),
        (Codec::Gzip, SeekIndex::Chunks(table)) => {
            chunk_table::access(file, len, table, ChunkCodec::Gzip, counter)
        }
        (Codec::Zstd, SeekIndex::Chunks(table)) => {
            chunk_table::access(file, len, table, ChunkCodec::Zstd, counter)
        }
        (_, seek) => return Err(AccessError::Misfit(seek)),
    };
    access.map_err(AccessError::Io)
}

/// A streaming decoder of a `codec` layer's bytes, read in order from
/// `bytes`: what reads a layer's head (`head.rs`), where nothing may be
/// read out of order.
pub(super) fn stream_decoder(
    codec: Codec,
    bytes: impl BufRead + Send + 'static,
) -> io::Result<Box<dyn Read + Send>> {
    match codec {
        Codec::Plain => Ok(Box::new(bytes)),
        Codec::Gzip => Ok(Box::new(flate2::bufread::MultiGzDecoder::new(bytes))),
        Codec::Zstd => zstd::stream_decoder(bytes),
        Codec::Bzip2 => Ok(bzip2::stream_decoder(bytes)),
        Codec::Xz => xz::stream_reader(bytes),
        Codec::Lz4 => Ok(lz4::stream_decoder(bytes)),
    }
}

/// Plain tars: the file is the stream.
#[derive(Debug)]
struct PlainAccess(Arc<Region>);

impl Access for PlainAccess {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
}

/// Makes the windows of a gzip layer's checkpoints in `seek` sparse where
/// that is proven safe, for an index that travels (see
/// `gzip/window_use.rs`); a seek index of another codec, which has no
/// windows, is left as it is.
pub fn sparsen_windows(
    seek: &mut SeekIndex,
    blob: &dyn super::remote::BlobFetch,
) -> io::Result<gzip::SparseCount> {
    match seek {
        SeekIndex::Gzip(index) => gzip::sparsen_windows(index, blob),
        SeekIndex::Summed(inner, _) => sparsen_windows(inner, blob),
        _ => Ok(gzip::SparseCount::default()),
    }
}
