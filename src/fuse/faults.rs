//! Logging failed reads once per layer and kind of failure.
//!
//! A damaged or changed layer file fails every read that needs it, and a
//! busy reader (a `find -exec cat`, a build) can make thousands of them a
//! second: one log line per request would flood the log and hide the cause.
//! So the first failure of each kind on each layer is logged as an error,
//! naming the layer and the offset; the rest only at debug level.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::stack::StackError;
use crate::tree::Ino;

/// Which (layer, kind of failure) pairs have been logged.
#[derive(Debug, Default)]
pub(super) struct FaultLog {
    seen: Mutex<HashSet<(PathBuf, &'static str)>>,
}

impl FaultLog {
    /// Logs the failure of a read of inode `ino` at byte `offset`: as an
    /// error the first time its layer fails this way, else at debug level.
    pub(super) fn report(&self, ino: Ino, offset: u64, error: &StackError) {
        let (layer, kind) = match error {
            StackError::Source(e) => (e.path(), e.kind()),
            _ => (Path::new(""), "other"),
        };
        let first = self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((layer.to_path_buf(), kind));
        if first {
            log::error!(
                "read of inode {ino} at byte {offset}: {error} (logged once per layer and kind of failure; reads that fail the same way fail silently)"
            );
        } else {
            log::debug!("read of inode {ino} at byte {offset}: {error}");
        }
    }

    /// How many distinct failures were logged as errors.
    #[cfg(test)]
    fn logged(&self) -> usize {
        self.seen.lock().map_or(0, |seen| seen.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceError;

    fn truncated(path: &str, offset: u64) -> StackError {
        StackError::Source(SourceError::Truncated {
            path: path.into(),
            was: 100,
            now: 10,
            offset,
            len: 5,
        })
    }

    #[test]
    fn each_layer_and_kind_is_logged_once() {
        let log = FaultLog::default();
        log.report(5, 0, &truncated("a.tar", 20));
        log.report(6, 0, &truncated("a.tar", 40));
        assert_eq!(log.logged(), 1, "same layer, same kind");
        log.report(7, 0, &truncated("b.tar", 20));
        assert_eq!(log.logged(), 2, "another layer");
        let modified = StackError::Source(SourceError::Modified {
            path: "a.tar".into(),
            was: 100,
            now: 100,
            offset: 0,
            len: 1,
        });
        log.report(5, 0, &modified);
        assert_eq!(log.logged(), 3, "another kind");
    }
}
