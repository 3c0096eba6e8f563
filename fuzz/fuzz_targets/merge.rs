//! The merge of 1-4 layers: the input split into tar layers, opened as a
//! stack (indexed and merged as a mount does), its tree walked, stored and
//! loaded back, exported as one tar, and that tar indexed and opened again.
#![no_main]

use std::io::Cursor;
use std::path::PathBuf;

use layerfs::export::export_tree;
use layerfs::stack::{Stack, StackOptions};
use layerfs::tar::{index_layer, TarWriter};
use layerfs::tree::Tree;
use layerfs_fuzz::{listing, scratch_dir, split_layers, write_layer, MAX_DECOMPRESSED};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let paths: Vec<PathBuf> = split_layers(flags, rest)
        .iter()
        .enumerate()
        .map(|(i, bytes)| write_layer(&format!("merge-{i}"), bytes))
        .collect();
    let options = StackOptions {
        cache: None,
        spill_dir: Some(scratch_dir().to_path_buf()),
        record_removals: flags & 0x80 != 0,
        meter: None,
    };
    let Ok(stack) = Stack::open(&paths, &options) else {
        return;
    };
    let tree = stack.tree();
    let listed = listing(tree);

    // What the index cache stores loads back as the same tree.
    let mut stored = Vec::new();
    tree.encode(&mut stored);
    let loaded = Tree::decode(&stored).expect("a stored tree loads");
    assert_eq!(listing(&loaded), listed, "stored and loaded trees differ");
    let mut again = Vec::new();
    loaded.encode(&mut again);
    assert!(again == stored, "a loaded tree stores differently");

    // Sparse files may declare terabytes of holes; exporting them is
    // right but not what this target is for.
    if tree.file_bytes() > MAX_DECOMPRESSED {
        return;
    }
    let archive = export(&stack);
    let index = index_layer(&mut Cursor::new(&archive)).expect("an export indexes");
    let (copy, warnings) = Tree::build([index]);
    assert_eq!(warnings, [], "an export merges without warnings");
    assert_eq!(listing(&copy), listed, "an export holds the same tree");

    // Exporting the export changes nothing.
    let path = write_layer("merge-export", &archive);
    let reopened = Stack::open(&[path], &options).expect("an export opens as a layer");
    assert!(
        export(&reopened) == archive,
        "an export exports differently"
    );
});

fn export(stack: &Stack) -> Vec<u8> {
    let mut writer = TarWriter::new(Vec::new());
    export_tree(stack, &mut writer, &mut |_| {}).expect("a stack that opened exports");
    writer.finish().expect("an archive in memory")
}
