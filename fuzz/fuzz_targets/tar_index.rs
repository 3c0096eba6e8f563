//! The tar indexer on a plain byte stream: whole, in short reads, and as
//! the head of a layer (`ls --peek`); every regular member read back.
#![no_main]

use std::io::Cursor;

use layerfs::tar::{index_layer, index_prefix};
use layerfs_fuzz::{outcome, read_back_members, read_slice, Trickle};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = index_layer(&mut Cursor::new(data));
    // Short reads change nothing, errors and offsets included.
    let step = data.len() % 11 + 1;
    let trickled = index_layer(&mut Trickle::new(data, step));
    assert_eq!(outcome(&whole), outcome(&trickled), "reads of {step} bytes");

    let prefix = index_prefix(&mut Cursor::new(data));
    if let Ok(index) = &whole {
        let prefix = prefix.expect("a whole layer that indexes is a head that indexes");
        assert_eq!(prefix.index.members, index.members);
        read_back_members(index, |offset, dst| read_slice(data, offset, dst));

        // Any head of a layer that indexes lists a prefix of its members.
        let cut = data.len() * usize::from(data.last().copied().unwrap_or(0)) / 255;
        let head = index_prefix(&mut Cursor::new(&data[..cut]))
            .unwrap_or_else(|e| panic!("head of {cut} bytes: {e}"));
        let n = head.index.members.len();
        assert!(n <= index.members.len(), "head of {cut} bytes lists more");
        assert_eq!(
            head.index.members,
            index.members[..n],
            "head of {cut} bytes"
        );
        if head.complete {
            assert_eq!(n, index.members.len());
        }
    }
});
