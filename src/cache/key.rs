//! What identifies a layer file to the cache: enough to notice that the
//! file changed since its index was stored, cheap enough to compute on
//! every mount (a stat and two 64 KiB reads).

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use crate::digest::Digest;

/// How much of each end of the file goes into [`LayerKey::ends_hash`].
/// Layers rewritten in place with the same size and a restored mtime almost
/// always differ in their first or last bytes (tar headers, the gzip
/// trailer's CRC and length, the zstd frame checksum).
const END_BYTES: u64 = 64 * 1024;

/// Tags the two forms of [`LayerKey::identity`], so that they can never
/// encode to the same bytes.
const IDENTITY_STAT: u8 = b'S';
const IDENTITY_DIGEST: u8 = b'D';

/// A layer file's identity.
///
/// Without a digest, a stored index is valid for a file with the same size,
/// modification time, inode, device and first and last bytes: replacing the
/// file, rewriting it or touching it gives another key, so the old entry is
/// simply never found again (and ages out of the cache). With a digest (a
/// sha256 from an image manifest, which the caller vouches for), the digest
/// and the size alone identify the layer, so the same blob found under
/// another path or copied elsewhere still hits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerKey {
    /// File size in bytes (the compressed size for a compressed layer).
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Inode number.
    pub inode: u64,
    /// Device the inode lives on.
    pub device: u64,
    /// Hash of the first and last 64 KiB of the file (the whole file if it
    /// is smaller than 128 KiB).
    pub ends_hash: u64,
    /// Content digest (e.g. `sha256:…`), when the caller knows it.
    pub digest: Option<String>,
    /// Where the layer starts in the file: 0 for a layer file, the data
    /// offset of a layer stored inside an image archive (then `size` is the
    /// member's length, and the ends hashed are the member's).
    pub offset: u64,
    /// The digest the layer's bytes were checked against before its index
    /// was stored: an entry under this key exists only if the check passed,
    /// so finding it means the layer need not be hashed again.
    pub verified: Option<String>,
}

impl LayerKey {
    /// The key of the layer file at `path`.
    pub fn of_path(path: &Path) -> io::Result<LayerKey> {
        LayerKey::of_file(&File::open(path)?)
    }

    /// The key of an open layer file: stats it and hashes both ends.
    ///
    /// Taking the open file rather than a path lets a caller key exactly
    /// the inode it indexes, even if the path is replaced meanwhile.
    pub fn of_file(file: &File) -> io::Result<LayerKey> {
        let size = file.metadata()?.len();
        LayerKey::of_range(file, 0, size)
    }

    /// The key of the `size` bytes of `file` from `offset`: a layer stored
    /// inside an image archive. Two layers of one archive differ in their
    /// range even though they share the file's inode and mtime.
    pub fn of_range(file: &File, offset: u64, size: u64) -> io::Result<LayerKey> {
        let meta = file.metadata()?;
        let mut hash = Fnv64::new();
        let mut buf = vec![0; END_BYTES as usize];
        // Head, then the tail that does not overlap it: a file of up to
        // 128 KiB is hashed whole, each byte once.
        let head_len = size.min(END_BYTES);
        let tail_start = size.saturating_sub(END_BYTES).max(head_len);
        for (start, len) in [(0, head_len), (tail_start, size - tail_start)] {
            let chunk = buf.get_mut(..len as usize).unwrap_or_default();
            let at = offset
                .checked_add(start)
                .ok_or(io::ErrorKind::InvalidInput)?;
            file.read_exact_at(chunk, at)?;
            hash.write(chunk);
        }
        Ok(LayerKey {
            size,
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            inode: meta.ino(),
            device: meta.dev(),
            ends_hash: hash.finish(),
            digest: None,
            offset,
            verified: None,
        })
    }

    /// The key of a remote blob: its digest and size alone, so that its
    /// stored index serves every machine sharing the cache. An entry is
    /// stored under it only once the blob was checked against the digest.
    pub fn of_blob(digest: &Digest, size: u64) -> LayerKey {
        LayerKey {
            size,
            mtime_ns: 0,
            inode: 0,
            device: 0,
            ends_hash: 0,
            digest: Some(digest.to_string()),
            offset: 0,
            verified: Some(digest.to_string()),
        }
    }

    /// The same key, for a layer whose bytes were checked against `digest`
    /// before indexing (see [`LayerKey::verified`]).
    pub fn with_verified(mut self, digest: impl Into<String>) -> LayerKey {
        self.verified = Some(digest.into());
        self
    }

    /// The same key, identified by `digest` (and the size) from now on.
    pub fn with_digest(mut self, digest: impl Into<String>) -> LayerKey {
        self.digest = Some(digest.into());
        self
    }

    /// The bytes a stored entry must echo to be valid for this key.
    ///
    /// The size stays in the digest form as a guard: a digest that names a
    /// layer's uncompressed contents would otherwise match the same layer
    /// compressed differently, whose seek index does not fit.
    pub(super) fn identity(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        match &self.digest {
            Some(digest) => {
                out.push(IDENTITY_DIGEST);
                out.extend_from_slice(&self.size.to_le_bytes());
                out.extend_from_slice(digest.as_bytes());
                // A blob checked against something other than its own
                // digest (the table of contents it was indexed from) is
                // another entry; keys checked against the digest stay
                // what they were.
                if let Some(verified) = self.verified.as_ref().filter(|v| *v != digest) {
                    out.push(b'V');
                    out.extend_from_slice(verified.as_bytes());
                }
            }
            None => {
                out.push(IDENTITY_STAT);
                out.extend_from_slice(&self.size.to_le_bytes());
                out.extend_from_slice(&self.mtime_ns.to_le_bytes());
                out.extend_from_slice(&self.inode.to_le_bytes());
                out.extend_from_slice(&self.device.to_le_bytes());
                out.extend_from_slice(&self.ends_hash.to_le_bytes());
                // Tagged and only when set, after the fixed-size fields
                // above: the keys of whole, unverified files stay what they
                // were, so their stored entries still hit.
                if self.offset != 0 {
                    out.push(b'R');
                    out.extend_from_slice(&self.offset.to_le_bytes());
                }
                if let Some(verified) = &self.verified {
                    out.push(b'V');
                    out.extend_from_slice(verified.as_bytes());
                }
            }
        }
        out
    }

    /// The entry's file name in the cache directory: a hash of the
    /// identity, so that no part of a digest string ever reaches a path.
    /// A collision is harmless: the entry echoes the full identity, and a
    /// mismatch is a miss.
    pub fn file_name(&self) -> String {
        let mut hash = Fnv64::new();
        hash.write(&self.identity());
        format!("{:016x}.{}", hash.finish(), super::ENTRY_EXTENSION)
    }
}

/// The revision of the merge rules (`src/tree/build.rs`, `whiteout.rs`),
/// part of every stored tree's identity: bumped when a rule changes, so a
/// tree merged under the old rules is merged again, never shown.
/// 2: names over 255 bytes and runaway symlink resolution are left out.
const MERGE_RULES: &[u8] = b"stack, merge rules 2";

/// The bytes a stored tree entry must echo: the merge rules, then every
/// layer's identity, in stack order, each with its length.
pub(super) fn stack_identity(keys: &[LayerKey]) -> Vec<u8> {
    let mut out = MERGE_RULES.to_vec();
    for key in keys {
        let identity = key.identity();
        out.extend_from_slice(&(identity.len() as u64).to_le_bytes());
        out.extend_from_slice(&identity);
    }
    out
}

/// The tree entry's file name for a stack: a hash of its identity.
pub(super) fn stack_file_name(keys: &[LayerKey]) -> String {
    let mut hash = Fnv64::new();
    hash.write(&stack_identity(keys));
    format!("{:016x}.{}", hash.finish(), super::TREE_EXTENSION)
}

/// 64-bit FNV-1a: a few lines, no dependency, and good enough to tell
/// files apart (nothing here defends against a crafted collision; the
/// echoed identity does that for the file name).
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Fnv64 {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(path: &Path, bytes: &[u8]) {
        let mut f = File::create(path).expect("create");
        f.write_all(bytes).expect("write");
    }

    #[test]
    fn fnv_matches_the_reference_vectors() {
        for (input, expected) in [
            (&b""[..], 0xcbf2_9ce4_8422_2325),
            (b"a", 0xaf63_dc4c_8601_ec8c),
            (b"foobar", 0x8594_4171_f739_67e8),
        ] {
            let mut h = Fnv64::new();
            h.write(input);
            assert_eq!(h.finish(), expected, "{input:?}");
        }
    }

    #[test]
    fn the_key_follows_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("layer.tar");
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        write(&path, &big);
        let key = LayerKey::of_path(&path).expect("key");
        assert_eq!(key.size, 300_000);
        assert_eq!(LayerKey::of_path(&path).expect("key"), key, "stable");

        // Same size, mtime restored, one byte changed in the middle: only
        // a change inside the hashed ends is seen, by design.
        let mtime = std::fs::metadata(&path)
            .expect("stat")
            .modified()
            .expect("mtime");
        let set_mtime = |p: &Path| {
            let f = File::options().write(true).open(p).expect("open");
            f.set_modified(mtime).expect("set mtime");
        };
        let mut middle = big.clone();
        middle[150_000] ^= 1;
        write(&path, &middle);
        set_mtime(&path);
        assert_eq!(LayerKey::of_path(&path).expect("key"), key);
        for at in [0, 65_535, 300_000 - 65_536, 299_999] {
            let mut changed = big.clone();
            changed[at] ^= 1;
            write(&path, &changed);
            set_mtime(&path);
            let other = LayerKey::of_path(&path).expect("key");
            assert_ne!(other.ends_hash, key.ends_hash, "byte {at}");
            assert_ne!(other.file_name(), key.file_name(), "byte {at}");
        }

        // A small file is hashed whole; an empty one has a key too.
        for len in [0usize, 1, 100_000] {
            write(&path, &big[..len]);
            assert_eq!(LayerKey::of_path(&path).expect("key").size, len as u64);
        }
        assert!(LayerKey::of_path(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn ranges_of_one_file_and_verification_give_other_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("archive.tar");
        write(&path, &[7u8; 4096]);
        let file = File::open(&path).expect("open");
        let whole = LayerKey::of_file(&file).expect("key");
        let first = LayerKey::of_range(&file, 0, 1024).expect("key");
        let second = LayerKey::of_range(&file, 1024, 1024).expect("key");
        // Same bytes, same length, same inode: only the offset tells them apart.
        assert_eq!(first.ends_hash, second.ends_hash);
        assert_ne!(first.file_name(), second.file_name());
        assert_ne!(whole.file_name(), first.file_name());
        assert_eq!(LayerKey::of_range(&file, 0, 4096).expect("key"), whole);
        let verified = whole.clone().with_verified("sha256:0123");
        assert_ne!(verified.file_name(), whole.file_name());
        assert!(
            LayerKey::of_range(&file, 4000, 1024).is_err(),
            "past the end"
        );
    }

    #[test]
    fn a_digest_alone_names_the_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        write(&a, b"same bytes");
        write(&b, b"same bytes");
        let key_a = LayerKey::of_path(&a).expect("key");
        let key_b = LayerKey::of_path(&b).expect("key");
        assert_ne!(key_a.file_name(), key_b.file_name(), "other inode");
        let digest = "sha256:0123";
        let (key_a, key_b) = (key_a.with_digest(digest), key_b.with_digest(digest));
        assert_eq!(key_a.file_name(), key_b.file_name());
        assert_eq!(key_a.identity(), key_b.identity());
        let other = key_b.clone().with_digest("sha256:4567");
        assert_ne!(other.file_name(), key_a.file_name());
        // Checked against its digest, the same entry; against a table of
        // contents, another.
        let checked = key_a.clone().with_verified(digest);
        assert_eq!(checked.file_name(), key_a.file_name());
        let by_toc = key_a.clone().with_verified("estargz:sha256:89ab");
        assert_ne!(by_toc.file_name(), key_a.file_name());
        assert!(key_a.file_name().ends_with(".idx"));
    }
}
