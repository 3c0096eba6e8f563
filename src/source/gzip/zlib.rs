//! A small safe wrapper over zlib's raw inflate (zlib-rs's implementation of
//! the zlib C API), for what flate2 does not expose: stopping at deflate block boundaries (`Z_BLOCK`), learning how
//! many bits of the last input byte are unused there (`data_type`), and
//! resuming mid-stream from such a point (`inflatePrime` plus
//! `inflateSetDictionary`). Those are what gzip random access is built on
//! (see `members.rs` and `parallel.rs`).
//!
//! All of layerfs's `unsafe` code for zlib lives in this file.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::os::raw::{c_int, c_uint};

use libz_rs_sys as z;

/// How far one [`Inflater::inflate`] call may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Flush {
    /// As far as input and output allow.
    None,
    /// Also stop right after each deflate block ends, so the caller can
    /// note a place to resume from later.
    Block,
}

/// What one [`Inflater::inflate`] call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Inflated {
    /// Input bytes used (some bits of the last one may still be unused).
    pub(super) consumed: usize,
    /// Output bytes written.
    pub(super) produced: usize,
    /// The deflate stream ended; what follows it is not deflate data.
    pub(super) stream_end: bool,
    /// The call stopped right after a block that was not the stream's last
    /// one: a place a raw inflater can resume from, given the 32 KiB
    /// before it and the unused bits below.
    pub(super) block_end: bool,
    /// How many high bits of the last consumed input byte are unused (0–7).
    pub(super) unused_bits: u8,
}

/// A raw-deflate inflater (no zlib or gzip wrapper: the caller reads
/// headers and trailers itself, which is what lets one inflater cross gzip
/// members and start in the middle of one).
pub(super) struct Inflater {
    /// Boxed because zlib's state points back at the `z_stream` and refuses
    /// calls through any other address: it must never move.
    strm: Box<z::z_stream>,
}

// SAFETY: the z_stream and the state zlib allocated for it are owned by this
// value alone (the raw pointers in it point into that state or are only set
// for the duration of one call), and zlib keeps no thread-local or global
// state per stream, so moving the whole to another thread is sound. No
// `Sync`: every use takes `&mut self`.
unsafe impl Send for Inflater {}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater").finish_non_exhaustive()
    }
}

impl Inflater {
    /// A raw inflater with the largest window (32 KiB), as gzip uses.
    pub(super) fn new_raw() -> io::Result<Inflater> {
        let mut strm = Box::new(z::z_stream {
            next_in: std::ptr::null_mut(),
            avail_in: 0,
            total_in: 0,
            next_out: std::ptr::null_mut(),
            avail_out: 0,
            total_out: 0,
            msg: std::ptr::null_mut(),
            state: std::ptr::null_mut(),
            // zlib's own allocator.
            zalloc: None,
            zfree: None,
            opaque: std::ptr::null_mut(),
            data_type: 0,
            adler: 0,
            reserved: 0,
        });
        let size = c_int::try_from(std::mem::size_of::<z::z_stream>())
            .map_err(|_| io::Error::other("z_stream size does not fit a C int"))?;
        // SAFETY: `strm` is a valid, initialised z_stream at a stable heap
        // address; zlibVersion returns a static string; the size is that of
        // the struct the binding declares, which zlib checks against its own.
        let ret = unsafe { z::inflateInit2_(&mut *strm, -15, z::zlibVersion(), size) };
        if ret != z::Z_OK {
            // Init failed: zlib freed what it allocated and `state` is
            // null, so there is nothing for Drop to end.
            return Err(zlib_error(ret, &strm));
        }
        Ok(Inflater { strm })
    }

    /// Forgets the current stream so the next byte fed starts a new one
    /// (the next gzip member); the window is emptied.
    pub(super) fn reset(&mut self) -> io::Result<()> {
        // SAFETY: the stream was initialised by `new_raw` and not ended.
        let ret = unsafe { z::inflateReset(&mut *self.strm) };
        self.check(ret)
    }

    /// Inserts the `bits` (0–7) low bits of `value` as if they were the
    /// unused rest of the previous input byte: how a resume point that
    /// falls inside a byte is entered.
    pub(super) fn prime(&mut self, bits: u8, value: u8) -> io::Result<()> {
        if bits == 0 {
            return Ok(());
        }
        // SAFETY: the stream was initialised by `new_raw` and not ended; zlib
        // validates `bits` (at most 16) itself.
        let ret =
            unsafe { z::inflatePrime(&mut *self.strm, c_int::from(bits), c_int::from(value)) };
        self.check(ret)
    }

    /// Gives the 32 KiB (or fewer, near a stream's start) of output that
    /// preceded the resume point, which later back-references may copy from.
    pub(super) fn set_dictionary(&mut self, window: &[u8]) -> io::Result<()> {
        if window.is_empty() {
            return Ok(());
        }
        let len = c_uint::try_from(window.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "dictionary too large"))?;
        // SAFETY: the stream was initialised by `new_raw`; zlib only reads
        // `len` bytes from the pointer, which `window` provides, and copies
        // them into its own window before returning.
        let ret = unsafe { z::inflateSetDictionary(&mut *self.strm, window.as_ptr(), len) };
        self.check(ret)
    }

    /// Inflates from `input` into `output`. A call that can make no
    /// progress (input exhausted, or `output` empty) returns zero counts;
    /// corrupt data is `InvalidData`.
    pub(super) fn inflate(
        &mut self,
        input: &[u8],
        output: &mut [u8],
        flush: Flush,
    ) -> io::Result<Inflated> {
        let avail_in = c_uint::try_from(input.len()).unwrap_or(c_uint::MAX);
        let avail_out = c_uint::try_from(output.len()).unwrap_or(c_uint::MAX);
        let strm = &mut *self.strm;
        // zlib never writes through next_in; the binding's type is just not
        // const.
        strm.next_in = input.as_ptr().cast_mut();
        strm.avail_in = avail_in;
        strm.next_out = output.as_mut_ptr();
        strm.avail_out = avail_out;
        let flush = match flush {
            Flush::None => z::Z_NO_FLUSH,
            Flush::Block => z::Z_BLOCK,
        };
        // SAFETY: the stream was initialised by `new_raw` and not ended;
        // next_in/avail_in describe memory readable for the whole call and
        // next_out/avail_out memory writable for it (both borrowed from the
        // slices above, and the counts are clamped to their lengths).
        let ret = unsafe { z::inflate(strm, flush) };
        let consumed = (avail_in - strm.avail_in) as usize;
        let produced = (avail_out - strm.avail_out) as usize;
        // The pointers must not outlive the borrowed slices.
        strm.next_in = std::ptr::null_mut();
        strm.avail_in = 0;
        strm.next_out = std::ptr::null_mut();
        strm.avail_out = 0;
        let data_type = strm.data_type;
        let stream_end = match ret {
            z::Z_OK => false,
            z::Z_STREAM_END => true,
            // No progress possible: the caller decides whether that means
            // "feed more" or "truncated".
            z::Z_BUF_ERROR => false,
            z::Z_NEED_DICT => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "deflate stream asks for a preset dictionary",
                ))
            }
            _ => return Err(zlib_error(ret, &self.strm)),
        };
        Ok(Inflated {
            consumed,
            produced,
            stream_end,
            block_end: !stream_end && data_type & 128 != 0 && data_type & 64 == 0,
            unused_bits: (data_type & 7) as u8,
        })
    }

    fn check(&self, ret: c_int) -> io::Result<()> {
        if ret == z::Z_OK {
            Ok(())
        } else {
            Err(zlib_error(ret, &self.strm))
        }
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: the stream was initialised by `new_raw` (a failed init
        // never builds an Inflater) and is ended only here, once.
        unsafe {
            z::inflateEnd(&mut *self.strm);
        }
    }
}

/// Turns a zlib return code, and the message zlib left, into an io::Error.
fn zlib_error(ret: c_int, strm: &z::z_stream) -> io::Error {
    let msg = if strm.msg.is_null() {
        None
    } else {
        // SAFETY: a non-null `msg` points at a static NUL-terminated string
        // inside zlib.
        Some(
            unsafe { CStr::from_ptr(strm.msg) }
                .to_string_lossy()
                .into_owned(),
        )
    };
    let kind = match ret {
        z::Z_DATA_ERROR => io::ErrorKind::InvalidData,
        z::Z_MEM_ERROR => io::ErrorKind::OutOfMemory,
        _ => io::ErrorKind::Other,
    };
    let text = match msg {
        Some(m) => format!("zlib: {m}"),
        None => format!("zlib error {ret}"),
    };
    io::Error::new(kind, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn deflate_raw(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).expect("deflate");
        e.finish().expect("deflate")
    }

    #[test]
    fn inflates_raw_deflate_and_reports_the_end() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 97) as u8).collect();
        let packed = deflate_raw(&data);
        let mut z = Inflater::new_raw().expect("init");
        let mut out = vec![0; data.len() + 10];
        let r = z.inflate(&packed, &mut out, Flush::None).expect("inflate");
        assert!(r.stream_end);
        assert_eq!(r.consumed, packed.len());
        assert_eq!(&out[..r.produced], &data[..]);
    }

    #[test]
    fn garbage_is_invalid_data_and_no_input_is_no_progress() {
        let mut z = Inflater::new_raw().expect("init");
        let mut out = [0u8; 64];
        let r = z.inflate(&[], &mut out, Flush::Block).expect("no progress");
        assert_eq!((r.consumed, r.produced, r.stream_end), (0, 0, false));
        let err = z
            .inflate(&[0xff; 16], &mut out, Flush::None)
            .expect_err("garbage");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        z.reset().expect("reset");
        let packed = deflate_raw(b"hello");
        let r = z
            .inflate(&packed, &mut out, Flush::None)
            .expect("after reset");
        assert_eq!(&out[..r.produced], b"hello");
    }
}
