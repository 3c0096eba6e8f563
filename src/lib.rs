//! layerfs: a stack of container-image layers as one read-only tree.
//!
//! The data flows through one module per stage, each depending only on the
//! ones before it:
//!
//! - [`digest`]: content digests, parsed once where they enter (the OCI
//!   rule) and passed on as [`digest::Digest`]; the sha256 that makes one;
//! - [`source`]: a layer file's bytes, plain or decompressed, by offset
//!   (codec-independent pieces below, one module per codec above them,
//!   one dispatch on top);
//! - [`tar`]: one pass over a layer's tar stream, recording each member's
//!   metadata and where its data lies (all tar dialect handling lives here);
//! - [`dir`]: a directory as a layer (an extracted layer, an overlayfs
//!   upper directory): its walk, as the members a tar of it would hold, and
//!   its files read in place; `author` writes layers from the same walk;
//! - [`tree`]: the layers merged bottom to top under the OCI whiteout and
//!   overlayfs rules into one immutable tree (all merge rules live here);
//! - [`cache`]: stores each layer's index on disk, so that mounting it again
//!   skips the pass over its bytes;
//! - [`image`]: an image (OCI layout, OCI archive, `docker save`) resolved
//!   to its layers, each a byte range of a file, with the digest it must have;
//! - [`registry`]: an image in a registry resolved to its layers, each a
//!   blob read lazily by HTTP Range requests;
//! - [`inputs`]: a command's layer arguments, images expanded, as layers to open;
//! - [`stack`]: opens and indexes a list of layer files and builds their tree
//!   (specs and opening, the stack itself, indexing, one work queue);
//! - [`bundle`]: a stack's stored indexes packed into one file to ship
//!   beside an image (`layerfs index export` / `import`);
//! - [`fuse`]: serves a [`stack::Stack`] through FUSE;
//! - [`export`]: streams the merged tree as one tar;
//! - [`extract`]: chosen paths of the merged tree, to stdout (`cat`) or a
//!   directory (`get`);
//! - [`author`]: writes a layer from a directory, whole (`create`) or as
//!   the changes from a stack's tree (`diff`);
//! - [`inspect`]: an image's layers: sizes, digests, entries, what each hides;
//! - [`usage`]: where a stack's bytes go: each layer's added and wasted
//!   file data, the largest directories and files (`inspect --usage`);
//! - [`list`]: lists the merged tree or one layer as stored, names shown
//!   through [`escape`];
//! - [`output`]: where a written layer goes: framed compression, digests,
//!   and a file put in place only when complete;
//! - [`progress`]: a progress bar for long commands, on terminals only;
//! - [`plural`]: counts in messages, "1 layer" and "2 layers";
//! - [`logging`]: log records to stderr, or to syslog from a background
//!   daemon;
//! - [`app`] and [`daemon`]: the commands behind the CLI, and running a
//!   mount in the background;
//! - [`fstab`]: layerfs as mount(8)'s `mount.fuse.layerfs` helper;
//! - [`snapshotter`]: containerd's snapshots service, containers started
//!   on layerfs mounts of images that were never pulled.
//!
//! `unsafe` code is denied everywhere but in the three modules that wrap C
//! calls, each of which allows it for itself: `sys` (the system calls the
//! standard library does not wrap), `source::gzip::zlib` (zlib's raw
//! inflate) and `extract::at` (the directory-relative calls `get` writes
//! with).
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod app;
pub mod author;
pub mod bundle;
pub mod cache;
pub mod compare;
pub mod daemon;
pub mod digest;
pub mod dir;
pub mod escape;
pub mod export;
pub mod extract;
pub mod fstab;
pub mod fuse;
pub mod image;
pub mod inputs;
pub mod inspect;
pub mod list;
pub mod logging;
pub mod output;
pub mod plural;
pub mod progress;
pub mod registry;
pub mod remote_index;
pub mod snapshotter;
pub mod source;
pub mod stack;
mod sys;
pub mod tar;
pub mod toc;
pub mod tree;
pub mod upper;
pub mod usage;
