//! One of the tree's flat arrays, either built in memory or read in place
//! from stored bytes (a mapped cache entry).
//!
//! A remount used to copy every record of a stored tree into fresh heap
//! arrays: 30 MB of pages to allocate and zero for a 200k-entry tree, which
//! took longer than reading the entry. In place, the records are the page
//! cache's pages; only a check of every record remains (see `persist.rs`).

use std::sync::Arc;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Bytes a table can be read from in place, shared by all the tables of a
/// tree (a mapped cache entry, or any byte buffer).
pub type Backing = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// An array of `T`: owned, or `len` records at byte `start` of `backing`.
pub(super) enum Table<T> {
    Owned(Vec<T>),
    Shared {
        backing: Backing,
        start: usize,
        len: usize,
    },
}

impl<T: FromBytes + IntoBytes + Immutable + KnownLayout> Table<T> {
    /// The `len` records at byte `start` of `backing`, read in place when
    /// they are aligned for `T` there, else copied; `None` if they do not
    /// fit.
    pub(super) fn of_bytes(backing: &Backing, start: usize, len: usize) -> Option<Table<T>> {
        let records = (**backing).as_ref().get(start..)?;
        if <[T]>::ref_from_prefix_with_elems(records, len).is_ok() {
            return Some(Table::Shared {
                backing: Arc::clone(backing),
                start,
                len,
            });
        }
        copy_records(records, len).map(Table::Owned)
    }

    /// How many records.
    pub(super) fn len(&self) -> usize {
        match self {
            Table::Owned(records) => records.len(),
            Table::Shared { len, .. } => *len,
        }
    }

    /// Bytes of memory the records take: the owned array's capacity, or
    /// the stored bytes read in place.
    pub(super) fn memory_bytes(&self) -> usize {
        let records = match self {
            Table::Owned(records) => records.capacity(),
            Table::Shared { len, .. } => *len,
        };
        records * std::mem::size_of::<T>()
    }

    /// The records.
    pub(super) fn as_slice(&self) -> &[T] {
        match self {
            Table::Owned(records) => records,
            Table::Shared {
                backing,
                start,
                len,
            } => (**backing)
                .as_ref()
                .get(*start..)
                .and_then(|bytes| <[T]>::ref_from_prefix_with_elems(bytes, *len).ok())
                .map_or(&[], |(records, _)| records),
        }
    }
}

/// `len` records copied out of `bytes`, whatever their alignment.
fn copy_records<T: FromBytes + IntoBytes>(bytes: &[u8], len: usize) -> Option<Vec<T>> {
    let size = std::mem::size_of::<T>().checked_mul(len)?;
    let bytes = bytes.get(..size)?;
    let mut records = T::new_vec_zeroed(len).ok()?;
    records.as_mut_bytes().copy_from_slice(bytes);
    Some(records)
}

impl<T> std::fmt::Debug for Table<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Table::Owned(records) => write!(f, "Table::Owned({} records)", records.len()),
            Table::Shared { start, len, .. } => {
                write!(f, "Table::Shared({len} records at {start})")
            }
        }
    }
}
