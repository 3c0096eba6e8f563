//! Random access to a gzip layer: a read inflates forward from the last
//! checkpoint at or before its offset, or resumes an inflater a read
//! before it parked.

use std::fmt;
use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::index::GzipIndex;
use super::input::corrupt;
use super::members::{Cursor, Event, ACCESS_INPUT, SKIP_BUFFER};
use super::zlib::Flush;
use crate::source::access::{Access, DecodeCounter};
use crate::source::region::Region;

/// Parked inflaters per layer: enough for a few files read sequentially at
/// once, few enough that an idle layer holds well under a MiB.
const PARKED: usize = 4;

/// The longest a read waits for another read's inflater before starting
/// from a checkpoint itself (a cold start costs a few milliseconds).
const MAX_WAIT: Duration = Duration::from_millis(200);

/// Random access to a gzip layer through its checkpoints.
pub(crate) fn access(
    file: Arc<Region>,
    file_len: u64,
    index: GzipIndex,
    counter: Arc<DecodeCounter>,
) -> io::Result<Box<dyn Access>> {
    if index.checkpoints.last().is_some_and(|c| c.input > file_len) {
        return Err(corrupt("gzip index points past the end of the file"));
    }
    Ok(Box::new(GzipAccess {
        file,
        file_len,
        index,
        parking: Mutex::new(Parking::default()),
        returned: Condvar::new(),
        counter,
    }))
}

pub(super) struct GzipAccess {
    pub(super) file: Arc<Region>,
    pub(super) file_len: u64,
    pub(super) index: GzipIndex,
    pub(super) parking: Mutex<Parking>,
    /// Signalled whenever a read ends (and maybe parked its cursor).
    pub(super) returned: Condvar,
    pub(super) counter: Arc<DecodeCounter>,
}

/// The inflaters between reads, and where the ones in use will stop.
#[derive(Default)]
pub(super) struct Parking {
    /// Inflaters left where a read ended, for the next read to resume.
    idle: Vec<Cursor>,
    /// Where each read now inflating will end. The kernel's readahead sends
    /// the next piece of a file while the previous one is still being
    /// inflated on another thread; that read had better wait for the
    /// inflater than start over from a checkpoint.
    pub(super) busy: Vec<u64>,
}

impl fmt::Debug for GzipAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GzipAccess")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// A read in progress, registered in [`Parking::busy`] until dropped.
struct Busy<'a> {
    access: &'a GzipAccess,
    end: u64,
}

impl Busy<'_> {
    /// Ends the read, parking its inflater (evicting the one furthest back
    /// if all places are taken).
    fn park(self, cursor: Cursor) {
        let mut parking = self.access.lock();
        if parking.idle.len() >= PARKED {
            if let Some(lowest) = parking
                .idle
                .iter()
                .enumerate()
                .min_by_key(|(_, c)| c.pos)
                .map(|(i, _)| i)
            {
                parking.idle.swap_remove(lowest);
            }
        }
        parking.idle.push(cursor);
        // Dropping `self` next unregisters the read and wakes waiters; the
        // lock is released first so they find the cursor at once.
        drop(parking);
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let mut parking = self.access.lock();
        if let Some(i) = parking.busy.iter().position(|&e| e == self.end) {
            parking.busy.swap_remove(i);
        }
        drop(parking);
        self.access.returned.notify_all();
    }
}

impl GzipAccess {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Parking> {
        self.parking.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a read of `offset..end` and takes the parked inflater
    /// furthest along at or before `offset` but not behind `floor` (where
    /// the checkpoint would start), waiting for one that a read in
    /// progress will leave there. `None`: start from the checkpoint.
    fn check_out(&self, offset: u64, end: u64, floor: u64) -> (Busy<'_>, Option<Cursor>) {
        let usable = |pos: u64| (floor..=offset).contains(&pos);
        let deadline = Instant::now() + MAX_WAIT;
        let mut parking = self.lock();
        loop {
            let best = parking
                .idle
                .iter()
                .enumerate()
                .filter(|(_, c)| usable(c.pos))
                .max_by_key(|(_, c)| c.pos)
                .map(|(i, _)| i);
            let cursor = best.map(|i| parking.idle.swap_remove(i));
            // Reads never wait while registered, so waiting here cannot
            // form a cycle.
            if cursor.is_some() || !parking.busy.iter().any(|&e| usable(e)) {
                parking.busy.push(end);
                return (Busy { access: self, end }, cursor);
            }
            // Bounded, in case reads keep ending in range but others take
            // their inflaters first.
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                parking.busy.push(end);
                return (Busy { access: self, end }, None);
            }
            parking = match self.returned.wait_timeout(parking, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Inflates into `out` until it is full; `UnexpectedEof` if the stream
    /// ends first.
    fn fill(&self, cursor: &mut Cursor, out: &mut [u8]) -> io::Result<()> {
        let mut filled = 0;
        while filled < out.len() {
            match cursor.step(&mut out[filled..], Flush::None)? {
                Event::Data { produced, .. } => {
                    filled += produced;
                    self.counter.add(produced as u64);
                }
                Event::End => return Err(io::ErrorKind::UnexpectedEof.into()),
                Event::MemberStart | Event::MemberEnd { .. } => {}
            }
        }
        Ok(())
    }
}

impl Access for GzipAccess {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        if self.index.end.is_some_and(|len| end > len) {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let checkpoint = self.index.checkpoint_before(offset);
        let floor = checkpoint.map_or(0, |c| c.out);
        let (busy, parked) = self.check_out(offset, end, floor);
        let mut cursor = match (parked, checkpoint) {
            (Some(cursor), _) => cursor,
            (None, Some(c)) => {
                log::trace!("gzip: cold read at {offset} from the checkpoint at {floor}");
                Cursor::at_checkpoint(Arc::clone(&self.file), self.file_len, c)?
            }
            (None, None) => {
                Cursor::at_start(Arc::clone(&self.file), self.file_len, ACCESS_INPUT, false)?
            }
        };
        if cursor.pos < offset {
            let mut scratch = vec![0; SKIP_BUFFER];
            while cursor.pos < offset {
                let n = usize::try_from(offset - cursor.pos)
                    .map_or(SKIP_BUFFER, |n| n.min(SKIP_BUFFER));
                self.fill(&mut cursor, &mut scratch[..n])?;
            }
        }
        self.fill(&mut cursor, buf)?;
        busy.park(cursor);
        Ok(())
    }
}
