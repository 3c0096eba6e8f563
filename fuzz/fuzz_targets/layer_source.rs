//! The decompression front ends: the input as a layer file, sniffed and
//! opened, indexed in one pass, then read at random through the seek index
//! that pass left; and its head decoded as `ls --peek` does.
#![no_main]

use layerfs::source::{LayerHead, LayerSource};
use layerfs::tar::{index_layer, index_prefix};
use layerfs_fuzz::MAX_DECOMPRESSED;
use layerfs_fuzz::{read_back_members, read_slice, scratch_dir, write_layer, Recorder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = write_layer("layer", data);
    if let Ok(mut source) = LayerSource::open(&path) {
        source.set_spill_dir(scratch_dir().to_path_buf());
        let mut pass = Recorder::new(source.index_pass(), MAX_DECOMPRESSED);
        let index = index_layer(&mut pass);
        let (pass, seen) = pass.into_parts();
        let seek = pass.finish();
        // A layer that indexes is mounted: every byte the pass saw must
        // read back the same at random.
        if let (Ok(index), Ok(seek)) = (index, seek) {
            source.attach(seek).expect("the pass's own seek index fits");
            let read = |offset: u64, dst: &mut [u8]| {
                source.read_exact_at(offset, dst)?;
                let mut want = vec![0; dst.len()];
                read_slice(&seen, offset, &mut want).expect("read inside what the pass saw");
                assert!(want == dst, "{} bytes at {offset} differ", dst.len());
                Ok::<(), layerfs::source::SourceError>(())
            };
            read_back_members(&index, read);
            for chunk in data.chunks(8).take(4) {
                let at = chunk
                    .iter()
                    .fold(0usize, |a, &b| a.wrapping_mul(251) ^ usize::from(b));
                let offset = at % (seen.len() + 1);
                let len = (at >> 8) % 70_000;
                let len = len.min(seen.len() - offset);
                let mut buf = vec![0; len];
                read(offset as u64, &mut buf)
                    .unwrap_or_else(|e| panic!("{len} bytes at {offset}: {e}"));
            }
        }
    }

    // The head of the same file, cut somewhere.
    let limit = data.len() * usize::from(data.get(data.len() / 2).copied().unwrap_or(0)) / 255;
    if let Ok(head) = LayerHead::open(&path, limit as u64) {
        let mut head = Recorder::new(head, MAX_DECOMPRESSED);
        let _ = index_prefix(&mut head);
        let (head, _) = head.into_parts();
        assert!(
            head.bytes_read() <= limit as u64,
            "read past the head's limit"
        );
    }
});
