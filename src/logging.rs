//! Where log records go: stderr, in env_logger's format and under its
//! `RUST_LOG` filter; or, once a background daemon without a log file has
//! let go of the terminal, syslog (facility daemon, ident `layerfs`), so
//! that what it warns about while serving (a layer changed under the
//! mount, a full cache disk) is kept somewhere.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};

use log::{Level, Log, Metadata, Record};

use crate::sys;

/// Set once records are to go to syslog instead of stderr.
static TO_SYSLOG: AtomicBool = AtomicBool::new(false);

/// Routes records to stderr or syslog; filters as `RUST_LOG` (or the
/// default level) says in both cases.
struct Router {
    stderr: env_logger::Logger,
}

impl Log for Router {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.stderr.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !self.stderr.matches(record) {
            return;
        }
        if TO_SYSLOG.load(Ordering::Relaxed) {
            sys::syslog(priority(record.level()), &syslog_message(record));
        } else {
            self.stderr.log(record);
        }
    }

    fn flush(&self) {
        self.stderr.flush();
    }
}

/// Installs the logger: records at `default_level` and above (`error`,
/// `warn`, `info`, `debug`), or as `RUST_LOG` says, go to stderr as
/// `[LEVEL message]`. Only the first call in a process takes effect.
pub fn init(default_level: &str) {
    let stderr = env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(format!("{default_level},fuser=error")),
    )
    .format_timestamp(None)
    .format_target(false)
    .build();
    let max = stderr.filter();
    if log::set_boxed_logger(Box::new(Router { stderr })).is_ok() {
        log::set_max_level(max);
    }
}

/// From now on, records go to syslog (facility daemon, ident `layerfs`,
/// with the pid): for a daemon whose stderr no longer leads anywhere.
pub fn to_syslog() {
    sys::open_syslog();
    TO_SYSLOG.store(true, Ordering::Relaxed);
}

/// The syslog priority of a log level (the facility comes from openlog).
fn priority(level: Level) -> libc::c_int {
    match level {
        Level::Error => libc::LOG_ERR,
        Level::Warn => libc::LOG_WARNING,
        Level::Info => libc::LOG_INFO,
        Level::Debug | Level::Trace => libc::LOG_DEBUG,
    }
}

/// The record's message as syslog takes it: a C string, so a NUL byte
/// (from a layer's member name, say) is shown as `\0` rather than cutting
/// the message short.
fn syslog_message(record: &Record) -> CString {
    let text = record.args().to_string().replace('\0', "\\0");
    CString::new(text).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(Level::Error), libc::LOG_ERR);
        assert_eq!(priority(Level::Warn), libc::LOG_WARNING);
        assert_eq!(priority(Level::Info), libc::LOG_INFO);
        assert_eq!(priority(Level::Debug), libc::LOG_DEBUG);
        assert_eq!(priority(Level::Trace), libc::LOG_DEBUG);
    }

    #[test]
    fn messages_keep_their_text_and_show_nul_bytes() {
        let message = |args: std::fmt::Arguments| {
            syslog_message(&Record::builder().args(args).level(Level::Warn).build())
        };
        assert_eq!(
            message(format_args!("l.tar (layer {}): bad header", 2)).to_bytes(),
            b"l.tar (layer 2): bad header"
        );
        assert_eq!(message(format_args!("a{}b", '\0')).to_bytes(), b"a\\0b");
    }
}
