use super::*;
use sha2::Digest;
use std::io::Write;
use std::os::unix::fs::FileExt;

fn sample(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

fn write_temp(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(bytes).expect("write");
    f
}

fn check_random_reads(src: &LayerSource, data: &[u8]) {
    for &(off, len) in &[
        (0usize, 10usize),
        (5000, 3000),
        (100, 50),
        (data.len() - 7, 7),
        (77_777, 1),
    ] {
        let mut buf = vec![0; len];
        src.read_exact_at(off as u64, &mut buf).expect("read");
        assert_eq!(&buf[..], &data[off..off + len], "offset {off}");
    }
    let mut buf = [0u8; 8];
    assert!(matches!(
        src.read_exact_at(data.len() as u64 - 4, &mut buf),
        Err(SourceError::PastEnd { .. })
    ));
}

/// The indexing pass streams exactly `data`; reads after it are right.
fn index_and_check(src: &LayerSource, data: &[u8]) {
    let mut all = Vec::new();
    let mut pass = src.index_pass();
    pass.read_to_end(&mut all).expect("stream");
    assert!(all == data, "{} stream differs", src.codec());
    src.attach(pass.finish().expect("seek index"))
        .expect("attach");
    check_random_reads(src, data);
}

#[test]
fn plain_gzip_and_zstd_read_the_same_bytes() {
    let data = sample(200_000);
    let plain = write_temp(&data);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&data).expect("gzip");
    let gz = write_temp(&gz.finish().expect("gzip"));
    let zst = write_temp(&::zstd::encode_all(&data[..], 3).expect("zstd"));
    for (file, codec) in [
        (&plain, Codec::Plain),
        (&gz, Codec::Gzip),
        (&zst, Codec::Zstd),
    ] {
        let src = LayerSource::open(file.path()).expect("open");
        assert_eq!(src.codec(), codec);
        index_and_check(&src, &data);
    }
}

#[test]
fn concatenated_gzip_members_and_zstd_frames_read_as_one_stream() {
    let data = sample(100_000);
    let mut gz = Vec::new();
    let mut zst = Vec::new();
    // A skippable frame first, as pzstd writes.
    zst.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4]);
    for chunk in data.chunks(30_000) {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(chunk).expect("gzip");
        gz.extend(e.finish().expect("gzip"));
        zst.extend(::zstd::encode_all(chunk, 1).expect("zstd"));
    }
    for bytes in [gz, zst] {
        let file = write_temp(&bytes);
        let src = LayerSource::open(file.path()).expect("open");
        let mut pass = src.index_pass();
        io::copy(&mut pass, &mut io::sink()).expect("stream");
        src.attach(pass.finish().expect("seek index"))
            .expect("attach");
        check_random_reads(&src, &data);
    }
}

#[test]
fn bzip2_xz_and_lz4_read_the_same_bytes() {
    let data = sample(300_000);
    let mut bz = ::bzip2::write::BzEncoder::new(Vec::new(), ::bzip2::Compression::fast());
    bz.write_all(&data).expect("bzip2");
    let bz = write_temp(&bz.finish().expect("bzip2"));
    let mut xz = Vec::new();
    liblzma::read::XzEncoder::new(&data[..], 1)
        .read_to_end(&mut xz)
        .expect("xz");
    let xz = write_temp(&xz);
    let mut lz = lz4_flex::frame::FrameEncoder::new(Vec::new());
    lz.write_all(&data).expect("lz4");
    let lz = write_temp(&lz.finish().expect("lz4"));
    for (file, codec) in [(&bz, Codec::Bzip2), (&xz, Codec::Xz), (&lz, Codec::Lz4)] {
        let src = LayerSource::open(file.path()).expect("open");
        assert_eq!(src.codec(), codec);
        index_and_check(&src, &data);
    }
}

#[test]
fn an_unusable_spill_dir_falls_back_to_decoding_per_read() {
    let data = sample(100_000);
    let zst = write_temp(&::zstd::encode_all(&data[..], 3).expect("zstd"));
    let mut src = LayerSource::open(zst.path()).expect("open");
    let dir = tempfile::tempdir().expect("dir");
    // A regular file where the directory should be.
    let not_a_dir = dir.path().join("cache");
    std::fs::write(&not_a_dir, b"").expect("file");
    src.set_spill_dir(not_a_dir);
    let mut pass = src.index_pass();
    io::copy(&mut pass, &mut io::sink()).expect("stream");
    src.attach(pass.finish().expect("seek index"))
        .expect("attach");
    let mut buf = [0u8; 10];
    src.read_exact_at(50_000, &mut buf)
        .expect("read without the cache");
    assert_eq!(&buf[..], &data[50_000..50_010]);
    assert_eq!(src.decoded_bytes(), 50_010);
    // Reading on resumes the same decoder: linear, not quadratic.
    src.read_exact_at(50_010, &mut buf).expect("read on");
    assert_eq!(&buf[..], &data[50_010..50_020]);
    assert_eq!(src.decoded_bytes(), 50_020);
    // A read behind it starts again, and is right too.
    src.read_exact_at(5, &mut buf).expect("read behind");
    assert_eq!(&buf[..], &data[5..15]);
}

/// A layer source over `bytes`, indexed, with its spill dir set.
fn indexed(bytes: &[u8], spill: &Path) -> (tempfile::NamedTempFile, LayerSource) {
    let file = write_temp(bytes);
    let mut src = LayerSource::open(file.path()).expect("open");
    src.set_spill_dir(spill.to_path_buf());
    let mut pass = src.index_pass();
    io::copy(&mut pass, &mut io::sink()).expect("stream");
    src.attach(pass.finish().expect("seek index"))
        .expect("attach");
    (file, src)
}

/// `data` as one gzip member and as one zstd frame.
fn gzip_and_zstd(data: &[u8]) -> [Vec<u8>; 2] {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).expect("gzip");
    [
        gz.finish().expect("gzip"),
        ::zstd::encode_all(data, 3).expect("zstd"),
    ]
}

#[test]
fn a_truncated_layer_serves_what_is_before_the_cut() {
    let data = super::super::test_support::far_data(300_000);
    let [gz, zst] = gzip_and_zstd(&data);
    let spill = tempfile::tempdir().expect("dir");
    for bytes in [data.clone(), gz, zst] {
        let (file, src) = indexed(&bytes, spill.path());
        file.as_file()
            .set_len(bytes.len() as u64 / 2)
            .expect("truncate");
        let mut buf = vec![0u8; 1000];
        src.read_exact_at(1000, &mut buf).expect("before the cut");
        assert_eq!(buf, data[1000..2000], "{:?}", src.codec());
        let err = src
            .read_exact_at(299_000, &mut buf)
            .expect_err("past the cut");
        assert!(matches!(err, SourceError::Truncated { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(&file.path().display().to_string()) && msg.contains("299000"),
            "{msg}"
        );
        // Known unreachable now: refused without decoding again.
        let decoded = src.decoded_bytes();
        assert!(src.read_exact_at(299_500, &mut buf).is_err());
        assert_eq!(src.decoded_bytes(), decoded, "{:?}", src.codec());
        src.read_exact_at(0, &mut buf)
            .expect("before the cut, again");
        assert_eq!(buf, data[..1000]);
    }
}

#[test]
fn a_layer_modified_in_place_serves_nothing_more() {
    let data = super::super::test_support::far_data(100_000);
    let spill = tempfile::tempdir().expect("dir");
    let (file, src) = indexed(&data, spill.path());
    let mut buf = [0u8; 100];
    src.read_exact_at(50_000, &mut buf).expect("intact");
    // Same size, new bytes: only the mtime tells.
    file.as_file()
        .write_all_at(&[0u8; 100], 50_000)
        .expect("overwrite");
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(2);
    file.as_file().set_modified(later).expect("mtime");
    for offset in [50_000, 0, 99_000] {
        let err = src.read_exact_at(offset, &mut buf).expect_err("modified");
        assert!(matches!(err, SourceError::Modified { .. }), "{err:?}");
    }
}

#[test]
fn compressed_damage_under_the_old_mtime_is_a_decode_error() {
    let data = super::super::test_support::far_data(300_000);
    let spill = tempfile::tempdir().expect("dir");
    for bytes in gzip_and_zstd(&data) {
        let (file, src) = indexed(&bytes, spill.path());
        let mtime = file.as_file().metadata().and_then(|m| m.modified());
        let garbage: Vec<u8> = (0..bytes.len() / 4)
            .map(|i| (i * 131 % 256) as u8)
            .collect();
        file.as_file()
            .write_all_at(&garbage, bytes.len() as u64 / 3)
            .expect("damage");
        file.as_file()
            .set_modified(mtime.expect("mtime"))
            .expect("restore mtime");
        // The whole stream, so the read must decode through the damage.
        let mut all = vec![0u8; data.len()];
        let err = src.read_exact_at(0, &mut all).expect_err("damaged");
        assert!(matches!(err, SourceError::Corrupt { .. }), "{err:?}");
    }
}

#[test]
fn a_range_of_a_file_reads_as_a_layer_of_its_own() {
    let data = sample(150_000);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&data).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let zst = ::zstd::encode_all(&data[..], 3).expect("zstd");
    for (layer, codec) in [
        (&data, Codec::Plain),
        (&gz, Codec::Gzip),
        (&zst, Codec::Zstd),
    ] {
        // Junk on both sides that would break any codec reading it.
        let mut file = vec![0xa5; 1000];
        file.extend_from_slice(layer);
        file.extend_from_slice(&[0x5a; 777]);
        let file = write_temp(&file);
        let len = layer.len() as u64;
        let src = LayerSource::open_range(file.path(), 1000, len).expect("open");
        assert_eq!(
            (src.codec(), src.offset(), src.file_len()),
            (codec, 1000, len)
        );
        index_and_check(&src, &data);
        let expected: [u8; 32] = sha2::Sha256::digest(layer).into();
        assert_eq!(src.sha256(None).expect("hash"), expected);
        let err = LayerSource::open_range(file.path(), 1000, len + 778).expect_err("too long");
        assert!(err.to_string().contains("offset 1000"), "{err}");
    }
}

#[test]
fn metered_passes_count_every_byte_of_the_layer_file_once() {
    // A member far larger than the read buffer, so the plain pass
    // seeks over most of it, then a small one; the tar crate's output
    // ends right after its two end blocks.
    let mut builder = tar::Builder::new(Vec::new());
    for (name, len) in [("big", 3 * INPUT_BUFFER + 100), ("small", 10)] {
        let mut header = tar::Header::new_ustar();
        header.set_size(len as u64);
        header.set_cksum();
        builder
            .append_data(&mut header, name, &sample(len)[..])
            .expect("append");
    }
    let tar = builder.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    let gz = gz.finish().expect("gzip");
    for layer in [&tar, &gz] {
        let file = write_temp(layer);
        let src = LayerSource::open(file.path()).expect("open");
        let meter = Arc::new(ReadMeter::default());
        let mut pass = src.index_pass_metered(Some(&meter));
        let index = crate::tar::index_layer(&mut pass).expect("index");
        assert_eq!(index.members.len(), 2);
        pass.finish().expect("finish");
        assert_eq!(meter.done(), layer.len() as u64, "{:?}", src.codec());
        src.sha256(Some(&meter)).expect("hash");
        assert_eq!(meter.done(), 2 * layer.len() as u64);
        // Reads once the pass is over are not indexing.
        src.attach(SeekIndex::Plain).ok();
        let mut byte = [0u8; 1];
        src.read_exact_at(0, &mut byte).ok();
        assert_eq!(meter.done(), 2 * layer.len() as u64);
    }
}

#[test]
fn plain_stream_skips_by_seeking() {
    let data = sample(10_000);
    let file = write_temp(&data);
    let src = LayerSource::open(file.path()).expect("open");
    let mut s = src.index_pass();
    let mut b = [0u8; 4];
    s.read_exact(&mut b).expect("read");
    assert_eq!(s.skip(1000).expect("skip"), 1000);
    s.read_exact(&mut b).expect("read");
    assert_eq!(&b, &data[1004..1008]);
    assert_eq!(s.skip(1_000_000).expect("skip"), 10_000 - 1008);
}

#[test]
fn unsupported_codecs_and_directories_are_refused() {
    let lzma = write_temp(&[0x5d, 0, 0, 0x80, 0, 0xff, 0xff, 0xff]);
    let err = LayerSource::open(lzma.path()).expect_err("lzma refused");
    assert!(
        err.to_string()
            .contains("lzma compression is not supported"),
        "{err}"
    );
    let dir = tempfile::tempdir().expect("dir");
    assert!(matches!(
        LayerSource::open(dir.path()),
        Err(SourceError::NotALayer { .. })
    ));
}
