//! Recognising a layer's codec from its magic bytes.

use std::fmt;
use std::path::Path;

use super::SourceError;

/// How many leading bytes tell every codec's magic apart.
pub(super) const SNIFF_BYTES: usize = 8;

/// How a layer file's bytes are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// An uncompressed tar archive.
    Plain,
    /// gzip, one member or several concatenated (pigz, bgzip).
    Gzip,
    /// zstd, one frame or several, possibly led by skippable frames (pzstd).
    Zstd,
    /// bzip2, one stream or several concatenated (pbzip2).
    Bzip2,
    /// xz, one stream or several, of one block or many (`xz -T`, pixz).
    Xz,
    /// lz4 frame format, one frame or several.
    Lz4,
}

impl Codec {
    /// Short lower-case name, as used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Plain => "tar",
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
            Codec::Bzip2 => "bzip2",
            Codec::Xz => "xz",
            Codec::Lz4 => "lz4",
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the first bytes of a file say it is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sniffed {
    /// A codec layerfs reads.
    Known(Codec),
    /// A compression format recognised but not read by layerfs.
    Unsupported(&'static str),
}

/// Classifies a file from its first bytes (at least 4 wanted; fewer means a
/// tiny file, which can only be a plain tar or nothing).
///
/// Anything without a compression magic is taken to be a plain tar; whether it
/// really is one is for the tar parser to say, since v7 tar headers carry no
/// magic of their own.
pub(crate) fn sniff(head: &[u8]) -> Sniffed {
    match head {
        [0x1f, 0x8b, ..] => Sniffed::Known(Codec::Gzip),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Sniffed::Known(Codec::Zstd),
        // zstd skippable frames (magic 0x184D2A50..=0x184D2A5F, little-endian),
        // which pzstd and the seekable format put in front of the data frames.
        [b0, 0x2a, 0x4d, 0x18, ..] if b0 & 0xf0 == 0x50 => Sniffed::Known(Codec::Zstd),
        [b'B', b'Z', b'h', ..] => Sniffed::Known(Codec::Bzip2),
        [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Sniffed::Known(Codec::Xz),
        [0x04, 0x22, 0x4d, 0x18, ..] => Sniffed::Known(Codec::Lz4),
        [0x5d, 0x00, 0x00, ..] => Sniffed::Unsupported("lzma"),
        [0x1f, 0x9d, ..] => Sniffed::Unsupported("compress (.Z)"),
        _ => Sniffed::Known(Codec::Plain),
    }
}

/// The codec a layer's first bytes (up to [`SNIFF_BYTES`]) name, or why
/// the layer cannot be read.
pub(super) fn codec_of(path: &Path, head: &[u8]) -> Result<Codec, SourceError> {
    match sniff(head) {
        Sniffed::Known(codec) => Ok(codec),
        Sniffed::Unsupported(codec) => Err(SourceError::UnsupportedCodec {
            path: path.to_path_buf(),
            codec,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_compression_magics() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), Sniffed::Known(Codec::Gzip));
        assert_eq!(
            sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Sniffed::Known(Codec::Zstd)
        );
        assert_eq!(
            sniff(&[0x50, 0x2a, 0x4d, 0x18]),
            Sniffed::Known(Codec::Zstd)
        );
        assert_eq!(
            sniff(&[0x5e, 0x2a, 0x4d, 0x18]),
            Sniffed::Known(Codec::Zstd)
        );
        assert_eq!(sniff(b"BZh91AY"), Sniffed::Known(Codec::Bzip2));
        assert_eq!(
            sniff(&[0xfd, b'7', b'z', b'X', b'Z', 0]),
            Sniffed::Known(Codec::Xz)
        );
        assert_eq!(sniff(&[0x04, 0x22, 0x4d, 0x18]), Sniffed::Known(Codec::Lz4));
        assert_eq!(sniff(&[0x5d, 0, 0, 0x80]), Sniffed::Unsupported("lzma"));
        assert_eq!(
            sniff(&[0x1f, 0x9d, 0x90]),
            Sniffed::Unsupported("compress (.Z)")
        );
    }

    #[test]
    fn anything_else_is_left_to_the_tar_parser() {
        assert_eq!(sniff(b"etc/passwd\0"), Sniffed::Known(Codec::Plain));
        assert_eq!(sniff(&[]), Sniffed::Known(Codec::Plain));
        // Not a skippable frame: wrong high nibble.
        assert_eq!(
            sniff(&[0x60, 0x2a, 0x4d, 0x18]),
            Sniffed::Known(Codec::Plain)
        );
    }
}
