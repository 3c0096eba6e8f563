//! The cache as a whole: store and load through real files, every way an
//! entry can go bad, atomic writes, eviction and unusable directories.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::format::tests::every_kind;
use super::*;
use crate::source::LayerSource;
use crate::tar::{index_layer, DataLayout, Member, MemberKind};

fn cache_in(dir: &Path, max_bytes: u64) -> IndexCache {
    IndexCache::open(dir, max_bytes).expect("open cache")
}

/// A key for a made-up layer: tests that need no layer file.
fn fake_key(n: u64) -> LayerKey {
    LayerKey {
        size: 1000 + n,
        mtime_ns: 1_700_000_000_000_000_000,
        inode: n,
        device: 42,
        ends_hash: n.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        digest: None,
        offset: 0,
        verified: None,
    }
}

fn entry_path(cache: &IndexCache, key: &LayerKey) -> PathBuf {
    cache.dir().join(key.file_name())
}

fn set_mtime(path: &Path, time: SystemTime) {
    let file = fs::File::options().write(true).open(path).expect("open");
    file.set_modified(time).expect("set mtime");
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn stored_indexes_load_back_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = cache_in(dir.path(), DEFAULT_MAX_BYTES);
    let index = every_kind();
    for (n, seek) in [SeekIndex::Plain, SeekIndex::Gzip(Default::default())]
        .into_iter()
        .enumerate()
    {
        let key = fake_key(n as u64);
        assert!(cache.load(&key).is_none(), "miss before the store");
        cache.store(&key, &index, &seek).expect("store");
        let (back, seek_back) = cache.load(&key).expect("hit");
        assert_eq!(back.members, index.members);
        assert_eq!(seek_back, seek);
        // Storing again replaces the entry.
        cache.store(&key, &index, &seek).expect("store again");
        assert!(cache.load(&key).is_some());
    }
    assert_eq!(names_in(dir.path()).len(), 2, "{:?}", names_in(dir.path()));
}

#[test]
fn an_entry_spilled_to_a_file_as_it_grows_loads_back_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = cache_in(dir.path(), DEFAULT_MAX_BYTES);
    // Varied names and sizes: several spills of SPILL_AT, then a rest.
    let members: Vec<Member> = (0..150_000u64)
        .map(|i| {
            let mut m = Member::bare(
                format!("d{}/f-{i:x}", i % 97).as_bytes(),
                MemberKind::Regular,
            );
            m.data = DataLayout {
                offset: i * 1536,
                size: i % 5000,
                sparse: None,
            };
            m.mtime = 1_700_000_000 + (i % 13) as i64;
            m
        })
        .collect();
    let key = fake_key(7);
    let mut entry = cache.new_entry();
    assert!(
        entry.spill.is_some(),
        "the cache directory takes a spill file"
    );
    for batch in members.chunks(4096) {
        entry.push(batch);
    }
    assert!(
        entry.members.held() < SPILL_AT,
        "most of it went to the file"
    );
    cache
        .store_entry_of(&key, entry, &SeekIndex::Plain)
        .expect("store");
    let (back, _) = cache.load(&key).expect("hit");
    assert!(back.members == members, "members differ after the spill");
    // The same members stored whole make the same bytes.
    let whole_key = fake_key(8);
    let index = LayerIndex { members };
    cache
        .store(&whole_key, &index, &SeekIndex::Plain)
        .expect("store");
    let spilled = fs::read(entry_path(&cache, &key)).expect("read");
    let whole = fs::read(entry_path(&cache, &whole_key)).expect("read");
    // Only the identity (in the head) differs: compare from the members.
    assert_eq!(spilled.len(), whole.len());
    let tail = whole.len() - 1_000_000;
    assert_eq!(spilled[tail..], whole[tail..]);
}

/// A layer with every member kind, a non-UTF-8 name and xattrs.
fn sample_tar() -> (Vec<u8>, Vec<u8>) {
    let contents: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
    let mut b = ::tar::Builder::new(Vec::new());
    let header = |kind: ::tar::EntryType, path: &[u8], size: u64| {
        let mut h = ::tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_path(OsStr::from_bytes(path)).expect("path");
        h.set_size(size);
        h.set_mode(0o644);
        h.set_uid(1000);
        h.set_gid(100);
        h.set_username("user").expect("uname");
        h.set_groupname("users").expect("gname");
        h.set_mtime(1_700_000_000);
        h
    };
    let mut h = header(::tar::EntryType::Directory, b"dir/", 0);
    h.set_cksum();
    b.append(&h, &[][..]).expect("dir");
    b.append_pax_extensions([("SCHILY.xattr.user.note", &b"hello"[..])])
        .expect("pax");
    let mut h = header(
        ::tar::EntryType::Regular,
        b"dir/file.bin",
        contents.len() as u64,
    );
    h.set_cksum();
    b.append(&h, &contents[..]).expect("file");
    let mut h = header(::tar::EntryType::Regular, b"dir/caf\xe9 \xff.txt", 3);
    h.set_cksum();
    b.append(&h, &b"abc"[..]).expect("latin-1 name");
    for (kind, path, link) in [
        (
            ::tar::EntryType::Symlink,
            &b"dir/link"[..],
            &b"file.bin"[..],
        ),
        (::tar::EntryType::Link, b"dir/hard", b"dir/file.bin"),
    ] {
        let mut h = header(kind, path, 0);
        h.set_link_name(OsStr::from_bytes(link)).expect("link");
        h.set_cksum();
        b.append(&h, &[][..]).expect("link");
    }
    for (kind, path) in [
        (::tar::EntryType::Char, &b"dev/null"[..]),
        (::tar::EntryType::Block, b"dev/sda"),
        (::tar::EntryType::Fifo, b"run/fifo"),
    ] {
        let mut h = header(kind, path, 0);
        h.set_device_major(8).expect("major");
        h.set_device_minor(1).expect("minor");
        h.set_cksum();
        b.append(&h, &[][..]).expect("special");
    }
    (b.into_inner().expect("finish tar"), contents)
}

/// A layer indexed from its bytes and the same layer loaded from the cache
/// give the same members and serve the same reads, whatever the codec: the
/// seek index passes through the cache as the source module made it.
#[test]
fn a_cached_layer_reads_like_a_freshly_indexed_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = cache_in(&dir.path().join("cache"), DEFAULT_MAX_BYTES);
    let (tar, contents) = sample_tar();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let zst = zstd::encode_all(&tar[..], 3).expect("zstd");
    for (name, bytes) in [("l.tar", tar.clone()), ("l.tar.gz", gz), ("l.tar.zst", zst)] {
        let path = dir.path().join(name);
        fs::write(&path, bytes).expect("write layer");
        let key = LayerKey::of_path(&path).expect("key");

        let fresh = LayerSource::open(&path).expect("open layer");
        let mut pass = fresh.index_pass();
        let index = index_layer(&mut pass).expect("index");
        let seek = pass.finish().expect("finish");
        assert!(cache.load(&key).is_none());
        cache.store(&key, &index, &seek).expect("store");

        let layer = LayerSource::open(&path).expect("reopen layer");
        let (loaded, loaded_seek) = cache.load(&key).expect("hit");
        assert_eq!(loaded.members, index.members, "{name}");
        let kinds: Vec<MemberKind> = loaded.members.iter().map(|m| m.kind).collect();
        for kind in [
            MemberKind::Regular,
            MemberKind::Directory,
            MemberKind::Symlink,
            MemberKind::Hardlink,
            MemberKind::CharDevice,
            MemberKind::BlockDevice,
            MemberKind::Fifo,
        ] {
            assert!(kinds.contains(&kind), "{name}: no {kind:?}");
        }
        assert!(loaded.members.iter().any(|m| !m.xattrs.is_empty()));
        layer.attach(loaded_seek).expect("attach");
        let file = find(&loaded.members, b"dir/file.bin");
        let mut buf = vec![0; contents.len()];
        let n = file
            .data
            .read_at(0, &mut buf, |at, dst| layer.read_exact_at(at, dst))
            .expect("read");
        assert_eq!(n, contents.len());
        assert!(buf == contents, "{name}: contents differ");
    }
}

fn find<'a>(members: &'a [Member], path: &[u8]) -> &'a Member {
    members
        .iter()
        .find(|m| m.path == path)
        .unwrap_or_else(|| panic!("no member {}", String::from_utf8_lossy(path)))
}

/// Changes the bytes of a stored entry.
type Damage = dyn Fn(&mut Vec<u8>);

/// Each kind of damage: the entry is refused, deleted, and the next store
/// works again.
#[test]
fn bad_entries_are_misses_and_are_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = cache_in(dir.path(), DEFAULT_MAX_BYTES);
    let key = fake_key(1);
    let index = every_kind();
    let path = entry_path(&cache, &key);
    let damages: [(&str, &Damage); 7] = [
        ("flipped payload byte", &|b| {
            let at = b.len() - 10;
            b[at] ^= 1;
        }),
        ("truncated", &|b| b.truncate(b.len() / 2)),
        ("truncated header", &|b| b.truncate(20)),
        ("empty", &|b| b.clear()),
        ("trailing garbage", &|b| b.extend_from_slice(b"junk")),
        ("other version", &|b| {
            b[12..16].copy_from_slice(&99u32.to_le_bytes())
        }),
        ("bad magic", &|b| b[..4].copy_from_slice(b"NOPE")),
    ];
    for (what, damage) in damages {
        cache.store(&key, &index, &SeekIndex::Plain).expect("store");
        let mut bytes = fs::read(&path).expect("read entry");
        damage(&mut bytes);
        fs::write(&path, &bytes).expect("damage");
        assert!(cache.load(&key).is_none(), "{what}");
        assert!(!path.exists(), "{what}: entry kept");
    }
    cache.store(&key, &index, &SeekIndex::Plain).expect("store");
    assert!(cache.load(&key).is_some());
}

/// An entry found under a key's name but written for another identity (a
/// hash collision) is refused and removed.
#[test]
fn an_entry_of_another_layer_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = cache_in(dir.path(), DEFAULT_MAX_BYTES);
    let (mine, other) = (fake_key(1), fake_key(2));
    cache
        .store(&other, &every_kind(), &SeekIndex::Plain)
        .expect("store");
    fs::rename(entry_path(&cache, &other), entry_path(&cache, &mine)).expect("rename");
    assert!(cache.load(&mine).is_none());
    assert!(!entry_path(&cache, &mine).exists());
}

/// Rewriting a layer changes its key: the old entry is no longer found,
/// and a fresh one is stored beside it.
#[test]
fn a_rewritten_layer_misses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = cache_in(&dir.path().join("cache"), DEFAULT_MAX_BYTES);
    let layer = dir.path().join("layer.tar");
    fs::write(&layer, b"version one").expect("write");
    set_mtime(&layer, SystemTime::UNIX_EPOCH + Duration::from_secs(1_000));
    let old = LayerKey::of_path(&layer).expect("key");
    cache
        .store(&old, &every_kind(), &SeekIndex::Plain)
        .expect("store");
    assert!(cache.load(&old).is_some());

    for (bytes, mtime) in [
        (&b"version one, longer"[..], 1_000),
        (b"version one", 2_000),
    ] {
        fs::write(&layer, bytes).expect("rewrite");
        set_mtime(&layer, SystemTime::UNIX_EPOCH + Duration::from_secs(mtime));
        let new = LayerKey::of_path(&layer).expect("key");
        assert_ne!(new, old);
        assert!(cache.load(&new).is_none());
    }
}

/// A writer that died mid-entry leaves only a temporary file, which no
/// load reads and a later store removes once it is stale.
#[test]
fn half_written_entries_are_never_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = cache_in(dir.path(), DEFAULT_MAX_BYTES);
    let key = fake_key(1);
    let index = every_kind();
    let full = format::encode(&key.identity(), &index, &SeekIndex::Plain);
    let stale = dir.path().join(format!("{TEMP_PREFIX}1.0"));
    let fresh = dir.path().join(format!("{TEMP_PREFIX}1.1"));
    for temp in [&stale, &fresh] {
        fs::write(temp, &full[..full.len() / 2]).expect("partial");
    }
    set_mtime(&stale, SystemTime::now() - Duration::from_secs(3600));
    assert!(cache.load(&key).is_none());

    cache.store(&key, &index, &SeekIndex::Plain).expect("store");
    assert!(cache.load(&key).is_some());
    assert!(!stale.exists(), "stale temp file kept");
    assert!(
        fresh.exists(),
        "a temp file still being written was removed"
    );
    assert_eq!(
        names_in(dir.path()),
        vec![
            fresh
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            key.file_name()
        ]
    );
}

/// Old entries go first; a hit makes an entry new again; files that are not
/// entries are left alone; an index bigger than the bound is not written.
#[test]
fn eviction_keeps_the_most_recently_used_under_the_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = every_kind();
    let entry_len = format::encode(&fake_key(0).identity(), &index, &SeekIndex::Plain).len() as u64;
    let cache = cache_in(dir.path(), 3 * entry_len);
    fs::write(
        dir.path().join("notes.txt"),
        vec![0; 10 * entry_len as usize],
    )
    .expect("foreign");

    let start = SystemTime::now() - Duration::from_secs(1000);
    for n in 0..3 {
        let key = fake_key(n);
        cache.store(&key, &index, &SeekIndex::Plain).expect("store");
        set_mtime(
            &entry_path(&cache, &key),
            start + Duration::from_secs(n * 10),
        );
    }
    // Entry 0 is the oldest, but a hit bumps it: 1 goes instead.
    assert!(cache.load(&fake_key(0)).is_some());
    cache
        .store(&fake_key(3), &index, &SeekIndex::Plain)
        .expect("store");
    let present: Vec<bool> = (0..4)
        .map(|n| entry_path(&cache, &fake_key(n)).exists())
        .collect();
    assert_eq!(present, [true, false, true, true]);
    assert!(dir.path().join("notes.txt").exists());

    let small = cache_in(dir.path(), entry_len - 1);
    assert!(matches!(
        small.store(&fake_key(9), &index, &SeekIndex::Plain),
        Err(CacheError::TooLarge { .. })
    ));
    assert!(!entry_path(&small, &fake_key(9)).exists());
}

/// A mount whose tree is stored needs only each layer's seek index: it
/// reads the start of the entry, never the members (damage there goes
/// unnoticed by it and is refused by a full load), and a damaged start is
/// refused. Identities from tiny to longer than the first read take one
/// read, two, or the whole entry.
#[test]
fn a_seek_index_loads_without_the_members() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = cache_in(dir.path(), DEFAULT_MAX_BYTES);
    let index = every_kind();
    // Identities of 16 bytes, 65,502 (the lengths fit the first 64 KiB
    // read, the rest does not) and 70,009.
    for (n, digest_len) in [7, 65_493, 70_000].into_iter().enumerate() {
        let key = fake_key(n as u64).with_digest("d".repeat(digest_len));
        let path = entry_path(&cache, &key);
        cache.store(&key, &index, &SeekIndex::Plain).expect("store");
        let mut bytes = fs::read(&path).expect("read entry");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).expect("damage the members");
        assert_eq!(
            cache.load_seek(&key),
            Some(SeekIndex::Plain),
            "{digest_len}"
        );
        assert!(cache.load(&key).is_none(), "{digest_len}: damage unseen");

        // The identity, then the head's checksum (after the identity, its
        // varint length, and the one-byte plain seek index and its length).
        let identity_len = 9 + digest_len;
        let varint_len = (usize::BITS - identity_len.leading_zeros()).div_ceil(7) as usize;
        for at in [40, format::HEADER_LEN + varint_len + identity_len + 2] {
            cache.store(&key, &index, &SeekIndex::Plain).expect("store");
            let mut bytes = fs::read(&path).expect("read entry");
            bytes[at] ^= 1;
            fs::write(&path, &bytes).expect("damage the head");
            assert!(cache.load_seek(&key).is_none(), "{digest_len} at {at}");
            assert!(!path.exists(), "{digest_len} at {at}: damaged entry kept");
        }
    }
}

/// A tree is written out as it is encoded: what is read back is the same
/// tree, and one over the bound leaves nothing behind, not even a
/// temporary file.
#[test]
fn a_streamed_tree_entry_loads_back_and_respects_the_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tree, _) = Tree::build([every_kind()]);
    let mut encoded = Vec::new();
    tree.encode(&mut encoded);
    let keys = [fake_key(1), fake_key(2)];
    let cache = cache_in(dir.path(), DEFAULT_MAX_BYTES);
    cache.store_tree(&keys, &tree).expect("store");
    let back = cache.load_tree(&keys).expect("load");
    assert!(back.reads_in_place(), "the stored tree was copied");
    let mut again = Vec::new();
    back.encode(&mut again);
    assert_eq!(again, encoded);
    let stored = format::encode_tree(&key::stack_identity(&keys), &tree);
    assert_eq!(
        fs::read(dir.path().join(key::stack_file_name(&keys))).expect("read"),
        stored
    );

    let small_dir = tempfile::tempdir().expect("tempdir");
    let small = cache_in(small_dir.path(), stored.len() as u64 - 1);
    assert!(matches!(
        small.store_tree(&keys, &tree),
        Err(CacheError::TooLarge { .. })
    ));
    assert_eq!(fs::read_dir(small_dir.path()).expect("list").count(), 0);
}

#[test]
fn an_unusable_directory_is_refused_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("file");
    fs::write(&file, b"").expect("write");
    for bad in [file.join("cache"), file.clone()] {
        let err = IndexCache::open(&bad, DEFAULT_MAX_BYTES).expect_err("opened");
        assert!(matches!(err, CacheError::CreateDir { .. }), "{err}");
        assert!(err.to_string().contains(&*bad.to_string_lossy()), "{err}");
    }
    // A nested directory is created, private to the user.
    let nested = dir.path().join("a/b/layerfs");
    cache_in(&nested, DEFAULT_MAX_BYTES);
    let mode = fs::metadata(&nested).expect("stat").permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o700
    );
    assert!(names_in(&nested).is_empty(), "probe file left behind");
}

#[test]
fn after_a_failed_write_nothing_more_is_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache_dir = dir.path().join("cache");
    let cache = cache_in(&cache_dir, DEFAULT_MAX_BYTES);
    // The directory vanishing stands for a disk that filled up after open.
    fs::remove_dir(&cache_dir).expect("remove the cache dir");
    let err = cache
        .store(&fake_key(1), &every_kind(), &SeekIndex::Plain)
        .expect_err("no directory to write in");
    assert!(err.to_string().contains("storing nothing more"), "{err}");
    fs::create_dir(&cache_dir).expect("recreate");
    cache
        .store(&fake_key(2), &every_kind(), &SeekIndex::Plain)
        .expect("a later store is skipped quietly");
    assert!(names_in(&cache_dir).is_empty(), "nothing was written");
}

#[test]
fn the_default_directory_follows_xdg() {
    let some = |s: &str| Some(s.into());
    assert_eq!(
        dir_from(some("/x/cache"), some("/home/u")),
        Some(PathBuf::from("/x/cache/layerfs"))
    );
    assert_eq!(
        dir_from(some("relative"), some("/home/u")),
        Some(PathBuf::from("/home/u/.cache/layerfs"))
    );
    assert_eq!(
        dir_from(None, some("/home/u")),
        Some(PathBuf::from("/home/u/.cache/layerfs"))
    );
    assert_eq!(dir_from(some(""), some("")), None);
    assert_eq!(dir_from(None, None), None);
}

#[test]
fn only_entry_names_count_as_entries() {
    assert!(is_entry_name(&fake_key(1).file_name()));
    for name in [
        "0123456789abcdef.id",
        "0123456789abcdeg.idx",
        "abc.idx",
        ".idx",
        "x",
    ] {
        assert!(!is_entry_name(name), "{name}");
    }
}

/// A layer shaped like the shared benchmark's (PAX tar of small files in a
/// three-level tree, `root` owner, one mtime), with 60-byte paths.
fn benchmark_like(files: usize) -> LayerIndex {
    let mut members = Vec::with_capacity(files);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut offset = 0u64;
    let exts = [
        "c", "h", "py", "txt", "so", "json", "md", "bin", "conf", "html",
    ];
    for i in 0..files {
        let r = next();
        let word: String = (0..3 + r % 10)
            .map(|k| char::from(b'a' + ((r >> (8 + 3 * k)) % 25) as u8))
            .collect();
        // Files are sorted by directory in the benchmark's tars.
        let dir = i * 2000 / files.max(1);
        let path = format!(
            "usr/lib/python3/site-packages/pkg{:02}/mod{:02}/{word}-{i:06}.{}",
            dir / 20,
            dir % 20,
            exts[(r >> 40) as usize % exts.len()]
        );
        let size = (r >> 20) % 16_385;
        members.push(Member {
            path: path.into_bytes(),
            kind: MemberKind::Regular,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            mtime_nsec: 0,
            link_target: Vec::new(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: Vec::new(),
            data: DataLayout {
                offset: offset + 512,
                size,
                sparse: None,
            },
            header_offset: offset,
        });
        offset += 512 + size.div_ceil(512) * 512;
    }
    LayerIndex { members }
}

/// The budget: at most 150 bytes of index per entry.
#[test]
fn benchmark_like_entries_fit_the_size_budget() {
    let index = benchmark_like(20_000);
    let mean_path = index.members.iter().map(|m| m.path.len()).sum::<usize>() / 20_000;
    assert!((55..=65).contains(&mean_path), "paths of {mean_path} bytes");
    let bytes = format::encode(b"k", &index, &SeekIndex::Plain);
    let per_entry = bytes.len() / 20_000;
    assert!(per_entry <= 150, "{per_entry} bytes per entry");
}

#[test]
fn a_stack_with_a_directory_never_stores_or_loads_a_merged_tree() {
    use crate::stack::{IndexOrigin, LayerSpec, Stack, StackOptions};
    let tmp = tempfile::tempdir().expect("tempdir");
    let (tar, _) = sample_tar();
    let layer = tmp.path().join("layer.tar");
    fs::write(&layer, tar).expect("write layer");
    let dir = tmp.path().join("upper");
    fs::create_dir(&dir).expect("mkdir");
    fs::write(dir.join("one"), "1").expect("write");
    let cache_dir = tmp.path().join("cache");
    let specs = [LayerSpec::file(&layer), LayerSpec::directory(&dir)];
    let open = || {
        let options = StackOptions {
            cache: Some(cache_in(&cache_dir, 1 << 30)),
            ..StackOptions::default()
        };
        Stack::open_specs(&specs, &options).expect("open stack")
    };
    let names = |stack: &Stack| {
        let mut names = Vec::new();
        stack
            .tree()
            .walk(|path, _, _| {
                names.push(String::from_utf8_lossy(path).into_owned());
                Ok::<(), ()>(())
            })
            .expect("walk");
        names
    };
    let first = open();
    assert_eq!(first.origins(), [IndexOrigin::Indexed; 2]);
    assert!(names(&first).contains(&"one".to_string()));
    let key = LayerKey::of_range(&fs::File::open(&layer).expect("open"), 0, {
        fs::metadata(&layer).expect("stat").len()
    })
    .expect("key");
    // The tar's own index is stored; nothing else (no merged tree).
    assert_eq!(names_in(&cache_dir), [key.file_name()]);
    fs::write(dir.join("two"), "2").expect("write");
    let second = open();
    assert_eq!(
        second.origins(),
        [IndexOrigin::Cache, IndexOrigin::Indexed],
        "the tar from its stored index, the directory walked again"
    );
    let now = names(&second);
    assert!(now.contains(&"one".to_string()) && now.contains(&"two".to_string()));
    assert_eq!(names_in(&cache_dir), [key.file_name()]);
}
