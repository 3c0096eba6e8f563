//! Stored trees and seek indexes as the index cache reads them back from
//! disk: arbitrary bytes must be refused or give a tree that walks, never
//! a panic, a loop or a huge allocation.
#![no_main]

use layerfs::source::SeekIndex;
use layerfs::tree::Tree;
use layerfs_fuzz::listing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = Tree::decode(data) {
        let listed = listing(&tree);
        // Names need not be sorted or clean in bytes that were never
        // written by layerfs: lookups may miss, but must not panic.
        for entry in &listed {
            let _ = tree.lookup_path(&entry.path);
        }
        let mut stored = Vec::new();
        tree.encode(&mut stored);
        let again = Tree::decode(&stored).expect("a decoded tree stores and loads");
        assert_eq!(listing(&again), listed);
    }
    if let Ok(seek) = SeekIndex::decode(data) {
        let mut stored = Vec::new();
        seek.encode(&mut stored);
        let again = SeekIndex::decode(&stored).expect("a decoded seek index stores and loads");
        assert_eq!(again, seek);
    }
});
