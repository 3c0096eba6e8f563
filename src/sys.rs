//! The few system calls the standard library does not wrap. Every `unsafe`
//! block for them is in this file, each with the reason it is sound.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Once;

/// Signals that end a foreground mount (`TERMINATING`) and the one the
/// session thread raises when the kernel ends the session (`SESSION_ENDED`).
pub const TERMINATING: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];
/// Raised by the session thread when the filesystem was unmounted.
pub const SESSION_ENDED: i32 = libc::SIGUSR1;

/// A set of signals blocked in this thread, to be waited for with [`SignalSet::wait`].
pub struct SignalSet(libc::sigset_t);

impl SignalSet {
    /// Blocks `signals` in the calling thread (and in threads it spawns
    /// afterwards), so that they are only ever taken by [`SignalSet::wait`].
    pub fn block(signals: &[i32]) -> io::Result<SignalSet> {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t owned by this frame.
        unsafe { libc::sigemptyset(&mut set) };
        for &sig in signals {
            // SAFETY: as above; `sig` is a valid signal number from libc.
            unsafe { libc::sigaddset(&mut set, sig) };
        }
        // SAFETY: `set` is initialised; a null old-set pointer is allowed.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(SignalSet(set))
    }

    /// Waits for one of the blocked signals and returns it.
    pub fn wait(&self) -> io::Result<i32> {
        let mut sig: libc::c_int = 0;
        // SAFETY: the set is initialised and `sig` is a valid out pointer.
        let rc = unsafe { libc::sigwait(&self.0, &mut sig) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(sig)
    }
}

/// Sends `sig` to this process.
pub fn raise_in_process(sig: i32) {
    // SAFETY: kill(2) on our own pid with a valid signal has no memory effects.
    unsafe { libc::kill(libc::getpid(), sig) };
}

/// Starts a new session, so that the daemon no longer belongs to the
/// terminal's process group and a Ctrl-C in the shell does not reach it.
pub fn detach_from_terminal() -> io::Result<()> {
    // SAFETY: setsid(2) takes no arguments and only changes process state.
    if unsafe { libc::setsid() } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Points standard input at /dev/null and standard output and error at
/// `log` (or /dev/null): the daemon must not hold the caller's terminal or
/// pipes open once the mount is ready.
pub fn redirect_stdio(log: Option<&std::fs::File>) -> io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let out = log.map_or(null.as_raw_fd(), AsRawFd::as_raw_fd);
    for (from, to) in [(null.as_raw_fd(), 0), (out, 1), (out, 2)] {
        // SAFETY: both descriptors are open for the duration of the call;
        // dup2 replaces `to` atomically.
        if unsafe { libc::dup2(from, to) } == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// mount(2): mounts `source` of type `fs_type` at `target`.
pub fn mount(
    source: &str,
    target: &Path,
    fs_type: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let c = |text: &[u8]| {
        CString::new(text)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "contains a NUL byte"))
    };
    let (source, target) = (c(source.as_bytes())?, c(target.as_os_str().as_bytes())?);
    let (fs_type, data) = (c(fs_type.as_bytes())?, c(data.as_bytes())?);
    // SAFETY: every pointer is a valid NUL-terminated string that outlives
    // the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fs_type.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Unmounts `path` with umount2(2), detaching it lazily if asked. The last
/// component is never followed (a mountpoint is not a symlink), so a mount
/// whose daemon is stopped is not asked anything.
pub fn umount(path: &Path, lazy: bool) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let flags = libc::UMOUNT_NOFOLLOW | if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::umount2(c_path.as_ptr(), flags) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Maps a whole file read-only, for reading a stored index in place.
///
/// Mapping is only sound while nobody changes the file: a mapped file
/// that shrinks raises SIGBUS in whoever touches the lost pages, which
/// would kill a mount's daemon. The index cache guarantees that for its
/// own entries: they are written under a temporary name and renamed into
/// place, never written again, removing one only unlinks the name (the
/// mapped inode stays intact), and it maps only files that are regular,
/// owned by this user and 0600 (`cache/private.rs`), so that nobody but
/// this user and root can truncate them. The cache does not copy an entry
/// into memory instead: a stack's tree is read in place for as long as the
/// mount lives, and as page cache it is shared by every mount of the stack
/// and reclaimable, where a copy would cost each mount the tree's size in
/// memory that cannot be reclaimed (30 MB for 200k files). A user who
/// truncates their own entry under their own mount can as well kill the
/// daemon outright, as git's mapped pack files can be.
pub fn map_readonly(file: &std::fs::File) -> io::Result<memmap2::Mmap> {
    // SAFETY: see above: cache entries are immutable once visible.
    unsafe { memmap2::Mmap::map(file) }
}

/// Tells the kernel that the `len` bytes of `file` from `offset` will not
/// be read again soon, so that their page-cache pages can be freed now.
pub fn drop_from_page_cache(file: &std::fs::File, offset: u64, len: u64) -> io::Result<()> {
    advise(file, offset, len, libc::POSIX_FADV_DONTNEED)
}

/// Asks the kernel to start reading the `len` bytes of `file` from
/// `offset` into the page cache now, without waiting for them: one large
/// request instead of the read-ahead window at a time.
pub fn read_into_page_cache(file: &std::fs::File, offset: u64, len: u64) -> io::Result<()> {
    advise(file, offset, len, libc::POSIX_FADV_WILLNEED)
}

fn advise(file: &std::fs::File, offset: u64, len: u64, advice: libc::c_int) -> io::Result<()> {
    let too_big = || io::Error::new(io::ErrorKind::InvalidInput, "range past 2^63");
    let offset = i64::try_from(offset).map_err(|_| too_big())?;
    let len = i64::try_from(len).map_err(|_| too_big())?;
    // SAFETY: posix_fadvise only reads its integer arguments.
    let rc =
        unsafe { libc::posix_fadvise(std::os::fd::AsRawFd::as_raw_fd(file), offset, len, advice) };
    match rc {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// Whether `file` lives on a filesystem stacked on others (overlayfs,
/// FUSE, ecryptfs), which counts towards the kernel's limit on stacking:
/// the depth a FUSE mount must allow to pass reads through to it.
pub fn is_stacked_fs(file: &std::fs::File) -> io::Result<bool> {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: fstatfs(2) fills `st` from an open fd and is read below only
    // if it succeeded.
    if unsafe { libc::fstatfs(std::os::fd::AsRawFd::as_raw_fd(file), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: initialised by the successful call above.
    let kind = unsafe { st.assume_init() }.f_type;
    Ok(matches!(
        kind,
        libc::OVERLAYFS_SUPER_MAGIC | libc::FUSE_SUPER_MAGIC | libc::ECRYPTFS_SUPER_MAGIC
    ))
}

/// Lowers the calling thread's CPU priority to `nice` (Linux sets it per
/// thread): work that may wait for an idle core.
pub fn lower_thread_priority(nice: libc::c_int) -> io::Result<()> {
    // SAFETY: gettid and setpriority take and return plain integers.
    let rc = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// How many of the pages of `file` in `offset..offset + len` are in the
/// page cache, and how many pages that range spans.
pub fn cached_pages(file: &std::fs::File, offset: u64, len: u64) -> io::Result<(u64, u64)> {
    // SAFETY: sysconf only reads its argument.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .ok()
        .filter(|&p| p.is_power_of_two())
        .ok_or_else(|| io::Error::other("no page size"))?;
    // Windows of 1 GiB: a map of that much costs nothing until touched,
    // and its residency vector is 256 KiB.
    const WINDOW: u64 = 1 << 30;
    let mut at = offset & !(page - 1);
    let end = offset.saturating_add(len);
    let (mut cached, mut pages) = (0u64, 0u64);
    let mut residency = Vec::new();
    while at < end {
        let span = (end - at).min(WINDOW);
        let span_usize = usize::try_from(span).map_err(io::Error::other)?;
        // SAFETY: the map is never read through (mincore only asks the
        // kernel about it), so another program truncating the file cannot
        // fault this process.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(at)
                .len(span_usize)
                .map(file)?
        };
        residency.clear();
        residency.resize(span_usize.div_ceil(page as usize), 0u8);
        // SAFETY: the vector holds one byte per page of the mapping, as
        // mincore(2) writes.
        let rc = unsafe {
            libc::mincore(
                map.as_ptr() as *mut libc::c_void,
                span_usize,
                residency.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        cached += residency.iter().filter(|&&b| b & 1 == 1).count() as u64;
        pages += residency.len() as u64;
        at += span;
    }
    Ok((cached, pages))
}

/// Returns the heap memory malloc holds but no longer uses to the system.
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks glibc's own free lists.
    unsafe { libc::malloc_trim(0) };
}

/// Opens the connection to syslog for the daemon: ident `layerfs`, the pid
/// in each message, facility daemon.
pub fn open_syslog() {
    // SAFETY: the ident is a static C string, which openlog(3) requires to
    // stay valid for as long as syslog is used.
    unsafe { libc::openlog(c"layerfs".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
}

/// Sends one message to syslog at `priority`.
pub fn syslog(priority: libc::c_int, message: &std::ffi::CStr) {
    // SAFETY: the format is a static "%s" taking exactly the one C string
    // passed, which is NUL-terminated and outlives the call.
    unsafe { libc::syslog(priority, c"%s".as_ptr(), message.as_ptr()) };
}

/// Sends `signal` to process `pid` with kill(2).
pub fn signal(pid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: kill(2) takes plain integers.
    if unsafe { libc::kill(pid, signal) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The real user and group ids (the owner a FUSE mount records).
pub fn real_ids() -> (u32, u32) {
    // SAFETY: getuid(2) and getgid(2) take no arguments and cannot fail.
    unsafe { (libc::getuid(), libc::getgid()) }
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Slots for the paths [`RemovedOnSignal`] watches: one per output being
/// written at once (a command writes one), with room to spare.
const DOOMED_SLOTS: usize = 8;

/// The paths a terminating signal removes, as C strings leaked by
/// [`RemovedOnSignal::register`]. Whoever swaps a pointer out owns it: the
/// guard frees it, the signal handler only unlinks it (the process is
/// ending), so neither ever sees memory the other freed.
static DOOMED: [AtomicPtr<libc::c_char>; DOOMED_SLOTS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; DOOMED_SLOTS];

/// Installs the handler once, on the first registration.
static REMOVAL_HANDLER: Once = Once::new();

/// A file (an output's temporary name) removed if SIGINT, SIGTERM or
/// SIGHUP ends the process before the guard is dropped: Rust runs no
/// destructor when a signal kills it, so an interrupted `export -o` would
/// leave gigabytes behind.
///
/// The handler only unlinks the registered paths (unlink(2) is
/// async-signal-safe, and the paths were built before), restores the
/// default action and raises the signal again, so the process still dies
/// of it and its parent sees which. A signal that was ignored when the
/// first path was registered (`nohup`, a background job) stays ignored.
pub struct RemovedOnSignal {
    slot: Option<usize>,
}

impl RemovedOnSignal {
    /// Watches `path`, which should be absolute (the handler cannot know
    /// what a relative one was relative to). With every slot taken, or a
    /// NUL in the path, the file is not watched: it costs the clean-up,
    /// never the output.
    pub fn register(path: &Path) -> RemovedOnSignal {
        REMOVAL_HANDLER.call_once(install_removal_handler);
        let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
            return RemovedOnSignal { slot: None };
        };
        let raw = c_path.into_raw();
        for (n, slot) in DOOMED.iter().enumerate() {
            let null = std::ptr::null_mut();
            if slot
                .compare_exchange(null, raw, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                return RemovedOnSignal { slot: Some(n) };
            }
        }
        // SAFETY: `raw` comes from `into_raw` above and was never published.
        drop(unsafe { CString::from_raw(raw) });
        RemovedOnSignal { slot: None }
    }
}

impl Drop for RemovedOnSignal {
    fn drop(&mut self) {
        let Some(slot) = self.slot.and_then(|n| DOOMED.get(n)) else {
            return;
        };
        let raw = slot.swap(std::ptr::null_mut(), Ordering::SeqCst);
        if !raw.is_null() {
            // SAFETY: only `register` stores pointers, each from
            // `CString::into_raw`; the swap made this guard its only owner.
            drop(unsafe { CString::from_raw(raw) });
        }
    }
}

/// Points SIGINT, SIGTERM and SIGHUP at [`remove_then_die`], except those
/// already ignored.
fn install_removal_handler() {
    for &sig in &TERMINATING {
        // SAFETY: sigaction is plain data; a null new action only reads
        // the current one into `old`.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: as above; `old` is a valid out pointer.
        if unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } != 0
            || old.sa_sigaction == libc::SIG_IGN
        {
            continue;
        }
        // SAFETY: zeroed is a valid sigaction (no flags, empty mask once
        // sigemptyset has run).
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = remove_then_die as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: `action.sa_mask` is a valid sigset_t owned by this frame.
        unsafe { libc::sigemptyset(&mut action.sa_mask) };
        // SAFETY: the handler is an `extern "C" fn(c_int)` that only makes
        // async-signal-safe calls; a null old-action pointer is allowed.
        unsafe { libc::sigaction(sig, &action, std::ptr::null_mut()) };
    }
}

/// The signal handler: unlinks every registered path, then dies of `sig`.
extern "C" fn remove_then_die(sig: libc::c_int) {
    for slot in &DOOMED {
        let raw = slot.swap(std::ptr::null_mut(), Ordering::SeqCst);
        if !raw.is_null() {
            // SAFETY: unlink(2) is async-signal-safe; `raw` is a
            // NUL-terminated path leaked by `register`, owned here since
            // the swap and never freed (the process is ending).
            unsafe { libc::unlink(raw) };
        }
    }
    // SAFETY: signal(2) and raise(3) are async-signal-safe. The signal is
    // blocked while its handler runs, so it is delivered, with its default
    // action, as the handler returns.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Ends the process as SIGPIPE's default action does (the shell sees
/// status 141), for a write that found its reader gone: Rust ignores
/// SIGPIPE, so the write only failed with EPIPE, and a message about it
/// would be noise after `| head`.
pub fn die_of_sigpipe() -> ! {
    // SAFETY: signal(2), sigset manipulation on a local set, and
    // pthread_sigmask with a null old-set pointer have no memory effects
    // beyond their arguments.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(libc::SIGPIPE);
    }
    // Only reached if the signal could not be delivered.
    std::process::exit(128 + libc::SIGPIPE)
}

/// The effective uid: whose files the cache may trust.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    unsafe { libc::geteuid() }
}
