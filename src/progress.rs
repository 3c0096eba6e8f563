//! A progress bar on stderr for long-running commands (export, create,
//! diff): bytes, rate and time left.
//!
//! It appears only when stderr is a terminal, the user did not ask for
//! quiet, and the work has already taken a second, so quick runs, pipes and
//! logs never see it; it is erased when the work ends.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long work runs before the bar appears.
const SHOW_AFTER: Duration = Duration::from_secs(1);

/// Progress of a job measured in bytes.
#[derive(Debug)]
pub struct Progress {
    /// `None` when nothing is ever to be drawn.
    bar: Option<ProgressBar>,
    started: Instant,
    shown: bool,
}

impl Progress {
    /// A bar for `total` bytes labelled `label`; drawn only if stderr is a
    /// terminal and `quiet` is false.
    pub fn bytes(label: &str, total: u64, quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
            let style = ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(label.to_string());
            bar
        });
        Progress {
            bar,
            started: Instant::now(),
            shown: false,
        }
    }

    /// Records that `done` bytes of the total are done.
    pub fn set(&mut self, done: u64) {
        let Some(bar) = &self.bar else { return };
        bar.set_position(done);
        if !self.shown && self.started.elapsed() >= SHOW_AFTER {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            self.shown = true;
        }
    }

    /// Erases the bar.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
