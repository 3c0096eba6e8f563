//! Seeing a reader go through a directory's files in turn, and planning
//! which files to hand the kernel before it asks.
//!
//! A cold read of a small file is one FUSE round trip, and with the data on
//! disk one small read at a scattered place: a `tar -c` of 200k small files
//! through the mount took longer than from the extracted tree. But a tar
//! layer stores a directory's files one after the other, in the order its
//! listing shows them (both are by name), and the tree numbers a
//! directory's entries consecutively in that order (`tree::freeze`). So a
//! reader going through a directory reads inodes `n, n+1, n+2, ...`, which
//! lie end to end in the layer: the files after the one asked for can be
//! read in one large read and put in the kernel's page cache (`pusher.rs`),
//! and the reader's own reads of them then never leave the kernel.
//!
//! The kernel sends a read only for what is not cached, so once files are
//! pushed the daemon no longer sees the reader. Each chunk of pushed files
//! therefore leaves its first file out (the *trip*): the reader's read of
//! it says that it has reached that chunk, and the next chunk is planned
//! then, while it reads the rest of this one. At most two chunks lie
//! pushed and unread ahead of the reader: [`CHUNK_BYTES`] each.
//!
//! Only reads at a file's start count, and a stream starts only after
//! [`START_AFTER`] reads in order in one directory (or one read in order
//! after a directory read to its end): random reads never start one.
//!
//! A reader walking a tree lists each directory before it reads its files,
//! and the kernel can take a file's pages only once it knows the file's
//! inode, which the listing tells it. So while a walk is on, the listing
//! of a directory starts its stream ([`Detector::listed`]): the pusher
//! then works while the reader is still between the listing and its first
//! file, instead of starting at that file and racing the reader through
//! the directory. A read of a file pushed that way (the pusher was late)
//! shows that the reader is there; once listings have pushed
//! [`CHUNK_BYTES`] without one, the next listing's stream leaves its first
//! file out as its trip, and no listing starts a stream until a read shows
//! the reader again: a walk that stops reading files (a `find` after a
//! `tar`) has a few chunks at most pushed for it (under 20 MiB). A trip
//! per chunk rather than per directory saves the reader a round trip per
//! directory.

use std::collections::VecDeque;
use std::sync::{Condvar, MutexGuard};

use crate::tree::{Ino, NodeKind, Tree};

/// File bytes per planned chunk.
pub(super) const CHUNK_BYTES: u64 = 4 << 20;
/// Entries looked at per chunk at most, files or not: a directory of many
/// tiny files, or of subdirectories only, costs a bounded walk.
const CHUNK_ENTRIES: u64 = 1024;
/// Files larger than this are not pushed: the kernel reads them in large
/// requests by itself.
pub(super) const MAX_FILE: u64 = 1 << 20;
/// Reads in order, after the first, before a stream starts.
const START_AFTER: u32 = 2;
/// How far apart (in entries) two reads may be and still be in order:
/// a reader may skip a few entries (symlinks, files it filters out).
const GAP: u64 = 8;

/// What the detector needs to know of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Member {
    /// The directory holding it.
    pub(super) parent: Ino,
    /// Its size, if it is a regular file.
    pub(super) file_size: Option<u64>,
}

/// Inodes as the detector sees them (the tree; a table in tests).
pub(super) trait Members {
    /// `None` past the last inode.
    fn member(&self, ino: Ino) -> Option<Member>;
    /// The inode of directory `dir`'s first entry, if it has one.
    fn first_entry(&self, dir: Ino) -> Option<Ino>;
}

impl Members for Tree {
    fn member(&self, ino: Ino) -> Option<Member> {
        let node = self.node(ino)?;
        Some(Member {
            parent: node.parent(),
            file_size: (node.kind() == NodeKind::File).then_some(node.size),
        })
    }

    fn first_entry(&self, dir: Ino) -> Option<Ino> {
        self.entries(dir).first().map(|entry| entry.ino)
    }
}

/// Files to push: the files among inodes `first..=last`, except `trip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Plan {
    pub(super) first: Ino,
    pub(super) last: Ino,
    pub(super) trip: Option<Ino>,
    /// Bytes of the files pushed.
    pub(super) bytes: u64,
}

impl Plan {
    /// Whether the plan has `ino` pushed (a file in it, not its trip).
    #[cfg(test)]
    fn pushes(&self, ino: Ino) -> bool {
        (self.first..=self.last).contains(&ino) && self.trip != Some(ino)
    }
}

/// What the detector tells the pusher after a read.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Advice {
    /// A new stream: what was planned before is dropped.
    pub(super) restart: bool,
    /// The reader read this file of the stream itself: the pusher is
    /// behind it, and pushing files up to it is too late.
    pub(super) reader_at: Option<Ino>,
    /// Chunks to push, in order.
    pub(super) plans: Vec<Plan>,
}

/// The plans a worker thread (the pusher, the open-ahead) has yet to
/// carry out, kept under its owner's lock: one queue type, so that both
/// threads drop a stale stream and stop the same way.
#[derive(Debug, Default)]
pub(super) struct PlanQueue {
    plans: VecDeque<Plan>,
    /// Bumped by each new stream: a plan being carried out is dropped.
    generation: u64,
    stop: bool,
}

impl PlanQueue {
    /// Takes the detector's advice: a new stream drops what was planned.
    pub(super) fn follow(&mut self, advice: &mut Advice) {
        if advice.restart {
            self.plans.clear();
            self.generation += 1;
        }
        self.plans.extend(advice.plans.drain(..));
    }

    /// The worker is to end; woken, it returns.
    pub(super) fn stop(&mut self) {
        self.stop = true;
    }

    pub(super) fn stopped(&self) -> bool {
        self.stop
    }

    /// Whether a plan taken in `generation` is still wanted.
    pub(super) fn current(&self, generation: u64) -> bool {
        !self.stop && self.generation == generation
    }
}

/// Waits on `wake` until the queue that `queue` finds in `state` holds a
/// plan, and takes it with its generation; `None` once the queue is
/// stopped.
pub(super) fn next_plan<S>(
    mut state: MutexGuard<'_, S>,
    wake: &Condvar,
    queue: fn(&mut S) -> &mut PlanQueue,
) -> Option<(Plan, u64)> {
    loop {
        let q = queue(&mut state);
        if q.stop {
            return None;
        }
        if let Some(plan) = q.plans.pop_front() {
            return Some((plan, q.generation));
        }
        state = wake.wait(state).unwrap_or_else(|p| p.into_inner());
    }
}

/// The stream being pushed.
#[derive(Debug, Clone, Copy)]
struct Stream {
    dir: Ino,
    /// The first inode planned.
    first: Ino,
    /// The last inode planned.
    frontier: Ino,
    /// The file left out of the last chunk, if any.
    trip: Option<Ino>,
    /// The directory has no entries after `frontier`.
    ended: bool,
}

/// Watches the reads that reach the daemon; see the module docs.
#[derive(Debug, Default)]
pub(super) struct Detector {
    /// The last read at a file's start.
    last: Option<Ino>,
    /// Reads in order before `last`, in a row.
    in_order: u32,
    /// `last`'s directory has no file after it.
    last_ended_dir: bool,
    stream: Option<Stream>,
    /// A reader is walking the tree: a read showed that it reads the
    /// files of the last stream's directory. The next listing of a
    /// directory starts a stream then.
    walking: bool,
    /// Bytes that listings had pushed since a read last showed the
    /// reader: past [`CHUNK_BYTES`], a listing's stream leaves its first
    /// file out as the trip, and the walk waits for it to be read.
    unconfirmed: u64,
}

impl Detector {
    /// A read of file `ino` from its start reached the daemon.
    pub(super) fn missed(&mut self, members: &impl Members, ino: Ino) -> Advice {
        let Some(Member {
            parent,
            file_size: Some(_),
        }) = members.member(ino)
        else {
            return Advice::default();
        };
        if let Some(stream) = self.stream.filter(|s| s.dir == parent) {
            if stream.trip == Some(ino) {
                self.last = Some(ino);
                self.last_ended_dir = false;
                self.confirmed();
                return Advice {
                    plans: self.extend(members, false).into_iter().collect(),
                    ..Advice::default()
                };
            }
            if (stream.first..=stream.frontier).contains(&ino) {
                // Within what is planned: the pusher is behind, or the
                // kernel dropped pages. Nothing new to plan.
                self.last = Some(ino);
                self.confirmed();
                return Advice {
                    reader_at: Some(ino),
                    ..Advice::default()
                };
            }
        }
        // In order: a little after the last read, or a little after what
        // the stream planned (the reader had the rest cached), or the
        // first file of a directory after the last one was read to its end.
        let stream = self.stream;
        let after_stream =
            stream.is_some_and(|s| s.dir == parent && ino > s.frontier && ino - s.frontier <= GAP);
        let dir_done = self.last_ended_dir || stream.is_some_and(|s| s.ended);
        let in_order = after_stream
            || self.last.is_some_and(|prev| {
                follows(members, prev, ino, parent)
                    || (dir_done && first_file(members, ino, parent))
            });
        self.in_order = if in_order { self.in_order + 1 } else { 0 };
        self.last = Some(ino);
        self.last_ended_dir = last_file(members, ino, parent);
        if !in_order {
            self.stream = None;
            self.walking = false;
        }
        if self.in_order < START_AFTER || self.last_ended_dir {
            return Advice::default();
        }
        self.confirmed();
        self.stream = Some(Stream {
            dir: parent,
            first: ino + 1,
            frontier: ino,
            trip: None,
            ended: false,
        });
        let plans = [self.extend(members, true), self.extend(members, false)];
        Advice {
            restart: true,
            plans: plans.into_iter().flatten().collect(),
            reader_at: None,
        }
    }

    /// A read showed the reader going through the files pushed for it.
    fn confirmed(&mut self) {
        self.walking = true;
        self.unconfirmed = 0;
    }

    /// Directory `dir` was listed to its end: the kernel now knows its
    /// entries. While a walk is on, its stream starts now: whole, or once
    /// listings have pushed [`CHUNK_BYTES`] unconfirmed, with its first
    /// file left out as the trip; see the module docs.
    pub(super) fn listed(&mut self, members: &impl Members, dir: Ino) -> Advice {
        if !self.walking || self.stream.is_some_and(|s| s.dir == dir) {
            return Advice::default();
        }
        let Some(first) = members.first_entry(dir) else {
            return Advice::default();
        };
        let previous = self.stream.replace(Stream {
            dir,
            first,
            frontier: first.saturating_sub(1),
            trip: None,
            ended: false,
        });
        let whole = self.unconfirmed < CHUNK_BYTES;
        let plans: Vec<Plan> = match whole {
            // The chunk after a whole one has a trip, as a stream started
            // by reads has: a directory of many chunks goes on by its
            // trips.
            true => [self.extend(members, true), self.extend(members, false)]
                .into_iter()
                .flatten()
                .collect(),
            false => self.extend(members, false).into_iter().collect(),
        };
        if plans.is_empty() {
            // No file to push (a directory of directories): the walk goes
            // on through it, and the stream being pushed with it.
            self.stream = previous;
            return Advice::default();
        }
        self.unconfirmed += plans.iter().map(|p| p.bytes).sum::<u64>();
        if !whole {
            self.walking = false;
        }
        Advice {
            restart: true,
            plans,
            reader_at: None,
        }
    }

    /// Plans the stream's next chunk, `whole` or with its first file left
    /// out as the trip; ends the stream at its directory's end.
    fn extend(&mut self, members: &impl Members, whole: bool) -> Option<Plan> {
        let stream = self.stream.as_mut()?;
        if stream.ended {
            return None;
        }
        let first = stream.frontier + 1;
        let (mut bytes, mut files, mut trip) = (0u64, 0u32, None);
        let mut last = stream.frontier;
        for ino in first..first.saturating_add(CHUNK_ENTRIES) {
            let Some(member) = members.member(ino).filter(|m| m.parent == stream.dir) else {
                stream.ended = true;
                break;
            };
            last = ino;
            if let Some(size) = member.file_size.filter(|&s| s <= MAX_FILE) {
                if trip.is_none() && !whole && files == 0 {
                    trip = Some(ino);
                } else {
                    bytes += size;
                }
                files += 1;
                if bytes >= CHUNK_BYTES {
                    break;
                }
            }
        }
        stream.frontier = last;
        if !whole {
            stream.trip = trip;
        }
        if files == 0 {
            return None;
        }
        Some(Plan {
            first,
            last,
            trip,
            bytes,
        })
    }
}

/// Whether `ino` (in `dir`) comes a little after `prev` in the same
/// directory.
fn follows(members: &impl Members, prev: Ino, ino: Ino, dir: Ino) -> bool {
    ino > prev && ino - prev <= GAP && members.member(prev).is_some_and(|m| m.parent == dir)
}

/// Whether no file of `dir` comes before `ino` (looking [`GAP`] entries
/// back at most).
fn first_file(members: &impl Members, ino: Ino, dir: Ino) -> bool {
    (1..=GAP).all(|k| {
        ino.checked_sub(k)
            .and_then(|i| members.member(i))
            .is_none_or(|m| m.parent != dir || m.file_size.is_none())
    }) && members
        .member(ino.saturating_sub(GAP + 1))
        .is_none_or(|m| m.parent != dir)
}

/// Whether no file of `dir` comes after `ino` (looking [`GAP`] entries
/// ahead at most).
fn last_file(members: &impl Members, ino: Ino, dir: Ino) -> bool {
    for next in ino + 1..=ino + GAP + 1 {
        match members.member(next) {
            Some(m) if m.parent == dir => {
                if m.file_size.is_some() {
                    return false;
                }
            }
            _ => return true,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_queue_drops_a_stale_stream_and_wakes_a_worker_to_stop() {
        let plan = |first| Plan {
            first,
            last: first + 3,
            trip: None,
            bytes: 4,
        };
        let lock = std::sync::Mutex::new(PlanQueue::default());
        let wake = Condvar::new();
        let mut advice = Advice {
            plans: vec![plan(10), plan(14)],
            ..Advice::default()
        };
        lock.lock().expect("lock").follow(&mut advice);
        let (taken, old) = next_plan(lock.lock().expect("lock"), &wake, |q| q).expect("a plan");
        assert_eq!(taken, plan(10));
        assert!(lock.lock().expect("lock").current(old));
        // A new stream: the plan left of the old one goes, the one being
        // carried out is no longer wanted.
        let mut advice = Advice {
            restart: true,
            plans: vec![plan(50)],
            ..Advice::default()
        };
        lock.lock().expect("lock").follow(&mut advice);
        assert!(!lock.lock().expect("lock").current(old));
        let (taken, new) = next_plan(lock.lock().expect("lock"), &wake, |q| q).expect("a plan");
        assert_eq!(taken, plan(50));
        assert_ne!(new, old);
        // A worker waiting on an empty queue returns once it is stopped.
        std::thread::scope(|scope| {
            let worker = scope.spawn(|| next_plan(lock.lock().expect("lock"), &wake, |q| q));
            std::thread::sleep(std::time::Duration::from_millis(20));
            lock.lock().expect("lock").stop();
            wake.notify_all();
            assert_eq!(worker.join().expect("worker"), None);
        });
        assert!(lock.lock().expect("lock").stopped());
    }

    /// Inodes 2.. as `(parent, file size or None)`; inode 1 is the root.
    struct Table(Vec<Member>);

    impl Table {
        /// Directories of `files` files of `size` bytes each, one after the
        /// other (as the tree numbers them: each directory's entries
        /// consecutive), under the root.
        fn dirs(files: &[usize], size: u64) -> (Table, Vec<Ino>) {
            let mut members = vec![Member {
                parent: 1,
                file_size: None,
            }];
            let mut dirs = Vec::new();
            for _ in files {
                members.push(Member {
                    parent: 1,
                    file_size: None,
                });
                dirs.push(members.len() as Ino);
            }
            for (d, &n) in dirs.iter().zip(files) {
                for _ in 0..n {
                    members.push(Member {
                        parent: *d,
                        file_size: Some(size),
                    });
                }
            }
            (Table(members), dirs)
        }

        /// The inodes of `dir`'s files.
        fn files_of(&self, dir: Ino) -> Vec<Ino> {
            (1..=self.0.len() as Ino)
                .filter(|&i| {
                    self.member(i)
                        .is_some_and(|m| m.parent == dir && m.file_size.is_some())
                })
                .collect()
        }
    }

    impl Members for Table {
        fn member(&self, ino: Ino) -> Option<Member> {
            self.0
                .get(usize::try_from(ino).ok()?.checked_sub(1)?)
                .copied()
        }

        fn first_entry(&self, dir: Ino) -> Option<Ino> {
            (1..=self.0.len() as Ino).find(|&i| self.member(i).is_some_and(|m| m.parent == dir))
        }
    }

    /// Reads `files` in turn as a reader would once pushed files are
    /// cached: only reads of files no plan pushed reach the detector.
    /// Returns the files that reached it and every plan.
    fn read_through(
        table: &Table,
        detector: &mut Detector,
        files: &[Ino],
    ) -> (Vec<Ino>, Vec<Plan>) {
        let (mut missed, mut all) = (Vec::new(), Vec::new());
        for &f in files {
            if all.iter().any(|p: &Plan| p.pushes(f)) {
                continue;
            }
            missed.push(f);
            let advice = detector.missed(table, f);
            if advice.restart {
                all.clear();
            }
            all.extend(advice.plans);
        }
        (missed, all)
    }

    #[test]
    fn reads_in_order_start_a_stream_and_trips_keep_it_going() {
        // 3000 files of 8 KiB: 512 to a chunk.
        let (table, dirs) = Table::dirs(&[3000], 8192);
        let files = table.files_of(dirs[0]);
        let mut detector = Detector::default();
        let (missed, plans) = read_through(&table, &mut detector, &files);
        // Three reads start it, then one read per chunk.
        assert_eq!(&missed[..3], &files[..3]);
        let per_chunk = (CHUNK_BYTES / 8192) as usize + 1;
        assert!(
            missed.len() <= 3 + files.len() / per_chunk + 1,
            "{} reads reached the daemon: {missed:?}",
            missed.len()
        );
        // Every file after the third is pushed or read, once.
        for f in &files[3..] {
            let pushed = plans.iter().filter(|p| p.pushes(*f)).count();
            assert_eq!(pushed + usize::from(missed.contains(f)), 1, "file {f}");
        }
    }

    #[test]
    fn random_reads_push_nothing() {
        let (table, dirs) = Table::dirs(&[200; 20], 4096);
        let mut detector = Detector::default();
        // A fixed pseudo-random walk over all files.
        let all: Vec<Ino> = dirs.iter().flat_map(|&d| table.files_of(d)).collect();
        let mut x = 12345u64;
        for _ in 0..2000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let f = all[(x >> 33) as usize % all.len()];
            let advice = detector.missed(&table, f);
            assert!(advice.plans.is_empty(), "read of {f} planned {advice:?}");
        }
    }

    #[test]
    fn reads_backwards_or_of_one_file_push_nothing() {
        let (table, dirs) = Table::dirs(&[100], 4096);
        let files = table.files_of(dirs[0]);
        let mut detector = Detector::default();
        for f in files.iter().rev() {
            assert_eq!(detector.missed(&table, *f), Advice::default());
        }
        for _ in 0..10 {
            assert_eq!(detector.missed(&table, files[50]), Advice::default());
        }
    }

    #[test]
    fn pushed_bytes_ahead_of_the_reader_stay_bounded() {
        // Files of 100 KiB: a chunk is 41 of them, at most 4 MiB + one.
        let (table, dirs) = Table::dirs(&[5000], 100 << 10);
        let files = table.files_of(dirs[0]);
        let mut detector = Detector::default();
        let mut planned: Vec<Plan> = Vec::new();
        for (n, &f) in files.iter().enumerate() {
            if planned.iter().any(|p| p.pushes(f)) {
                continue;
            }
            planned.extend(detector.missed(&table, f).plans);
            // Bytes planned beyond the file being read.
            let ahead: u64 = files[n + 1..]
                .iter()
                .filter(|&&g| planned.iter().any(|p| p.pushes(g)))
                .count() as u64
                * (100 << 10);
            assert!(
                ahead <= 2 * (CHUNK_BYTES + (100 << 10)),
                "{ahead} bytes planned ahead at file {n}"
            );
        }
        assert!(planned.len() > 10, "the stream stopped: {planned:?}");
    }

    #[test]
    fn a_stream_ends_with_its_directory_and_the_next_one_starts_at_once() {
        let (table, dirs) = Table::dirs(&[50, 50], 4096);
        let (a, b) = (table.files_of(dirs[0]), table.files_of(dirs[1]));
        let mut detector = Detector::default();
        let (missed, plans) = read_through(&table, &mut detector, &a);
        assert_eq!(missed, a[..3].to_vec());
        // Nothing of the next directory is planned from the first.
        assert!(plans.iter().all(|p| p.last <= *a.last().expect("files")));
        // A reader that read the first directory to its end starts on the
        // next one: its first read starts a stream at once.
        let advice = detector.missed(&table, b[0]);
        assert!(advice.restart);
        assert!(advice.plans[0].pushes(b[1]));
    }

    #[test]
    fn a_listing_during_a_walk_starts_its_directory_at_once() {
        let (table, dirs) = Table::dirs(&[50, 50, 50], 4096);
        let (a, b, c) = (
            table.files_of(dirs[0]),
            table.files_of(dirs[1]),
            table.files_of(dirs[2]),
        );
        let mut detector = Detector::default();
        read_through(&table, &mut detector, &a);
        let advice = detector.listed(&table, dirs[1]);
        assert!(advice.restart);
        assert_eq!(advice.plans.len(), 1, "{advice:?}");
        let plan = advice.plans[0];
        assert_eq!(plan.trip, None);
        assert!(b.iter().all(|&f| plan.pushes(f)), "{plan:?}");
        assert!(!plan.pushes(a[49]) && !plan.pushes(c[0]));
        // Listing it again (the kernel asks once more at the end) changes
        // nothing; the next listing starts the next directory.
        assert_eq!(detector.listed(&table, dirs[1]), Advice::default());
        let advice = detector.listed(&table, dirs[2]);
        assert!(c.iter().all(|&f| advice.plans[0].pushes(f)));
    }

    #[test]
    fn listings_push_a_bounded_amount_unless_the_reader_shows_up() {
        let (table, dirs) = Table::dirs(&[50; 40], 4096);
        let mut detector = Detector::default();
        // A walk that reads nothing (`find`, `ls -lR`).
        for &dir in &dirs {
            assert_eq!(detector.listed(&table, dir), Advice::default());
        }
        // Random reads do not make it a walk either.
        for f in [table.files_of(dirs[2])[7], table.files_of(dirs[0])[30]] {
            detector.missed(&table, f);
        }
        assert_eq!(detector.listed(&table, dirs[1]), Advice::default());
        // After a reader read in order, listings push whole directories up
        // to a chunk, then one with a trip, then nothing until the trip is
        // read.
        read_through(&table, &mut detector, &table.files_of(dirs[0]));
        let mut pushed = 0;
        let mut trip = None;
        for &dir in &dirs[1..] {
            let advice = detector.listed(&table, dir);
            if trip.is_some() {
                assert_eq!(advice, Advice::default());
                continue;
            }
            let plan = advice.plans[0];
            pushed += plan.bytes;
            trip = plan.trip;
        }
        assert!(
            (CHUNK_BYTES..=CHUNK_BYTES + 2 * 50 * 4096).contains(&pushed),
            "{pushed} bytes pushed"
        );
        let trip = trip.expect("a listing's stream left a trip");
        assert!(detector.missed(&table, trip).plans.is_empty());
        assert_eq!(detector.listed(&table, dirs[39]).plans.len(), 1);
    }

    #[test]
    fn a_directory_of_directories_keeps_the_walk_going() {
        // The root lists only directories.
        let (table, dirs) = Table::dirs(&[50, 50], 4096);
        let mut detector = Detector::default();
        read_through(&table, &mut detector, &table.files_of(dirs[0]));
        assert_eq!(detector.listed(&table, 1), Advice::default());
        assert_eq!(detector.listed(&table, dirs[1]).plans.len(), 1);
    }

    #[test]
    fn big_files_are_left_to_the_kernel() {
        let (table, dirs) = Table::dirs(&[20], MAX_FILE + 1);
        let files = table.files_of(dirs[0]);
        let mut detector = Detector::default();
        for f in &files {
            assert!(detector.missed(&table, *f).plans.is_empty());
        }
    }
}
