//! A progress bar on stderr for long-running commands (indexing layers,
//! export, create, diff): bytes, rate and time left.
//!
//! It appears only when stderr is a terminal, the user did not ask for
//! quiet, and the work has already taken a second (or the seconds in
//! [`DELAY_ENV`]), so quick runs, pipes and logs never see it; it names
//! what is worked on ([`label`]) and is erased as soon as all its bytes
//! are through (what follows, a merge or a flush, has no size to show: a
//! bar standing at 100% "ETA 0s" would only look stuck).

use std::io::IsTerminal;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::source::ReadMeter;

/// How long work runs before the bar appears, unless [`DELAY_ENV`] says.
const SHOW_AFTER: Duration = Duration::from_secs(1);
/// Seconds (a decimal number) of work before the bar appears: `0` shows
/// it at once, a large number never.
pub const DELAY_ENV: &str = "LAYERFS_PROGRESS_AFTER";
/// How often a bar following a [`ReadMeter`] looks at it.
const POLL: Duration = Duration::from_millis(50);

/// Progress of a job measured in bytes.
#[derive(Debug)]
pub struct Progress {
    /// `None` when nothing is ever to be drawn.
    bar: Option<ProgressBar>,
    started: Instant,
    show_after: Duration,
    shown: bool,
    /// All bytes were through and the bar was erased; more work (a grown
    /// total) brings it back.
    erased: bool,
}

impl Progress {
    /// A bar for `total` bytes labelled `label`; drawn only if stderr is a
    /// terminal and `quiet` is false.
    pub fn bytes(label: &str, total: u64, quiet: bool) -> Progress {
        let bar = will_draw(quiet).then(|| {
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
        Progress::with_bar(bar, show_after(std::env::var(DELAY_ENV).ok().as_deref()))
    }

    fn with_bar(bar: Option<ProgressBar>, show_after: Duration) -> Progress {
        Progress {
            bar,
            started: Instant::now(),
            show_after,
            shown: false,
            erased: false,
        }
    }

    /// Records that `done` bytes of the total are done; all of them erases
    /// the bar.
    pub fn set(&mut self, done: u64) {
        let Some(bar) = &self.bar else { return };
        if bar.length().is_some_and(|total| total > 0 && done >= total) {
            if !self.erased {
                bar.finish_and_clear();
                self.erased = true;
            }
            return;
        }
        if self.erased {
            bar.reset();
            self.erased = false;
        }
        bar.set_position(done);
        if !self.shown && self.started.elapsed() >= self.show_after {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            self.shown = true;
        }
    }

    /// Changes the total, for work that learns its size as it goes.
    pub fn set_total(&mut self, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
        }
    }

    /// Erases the bar.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A bar's label: `verb` and what it works on, named by the last component
/// of each argument (a layer file, a directory, an image or registry
/// reference: `alpine:3.19`), the first and how many more.
pub fn label(verb: &str, args: &[impl AsRef<Path>]) -> String {
    /// Longer names are cut, so that the bar keeps its room.
    const NAME_CHARS: usize = 32;
    let Some(first) = args.first() else {
        return verb.to_string();
    };
    let first = first.as_ref();
    let name = first
        .file_name()
        .unwrap_or(first.as_os_str())
        .to_string_lossy();
    let mut text = format!("{verb} ");
    if name.chars().count() > NAME_CHARS {
        text.extend(name.chars().take(NAME_CHARS - 1));
        text.push('…');
    } else {
        text.push_str(&name);
    }
    if args.len() > 1 {
        text.push_str(&format!(" +{} more", args.len() - 1));
    }
    text
}

/// Whether a bar may ever be drawn: on a terminal, unless asked for quiet.
fn will_draw(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

/// The delay [`DELAY_ENV`]'s value asks for; the default if it is unset or
/// not a number of seconds.
fn show_after(setting: Option<&str>) -> Duration {
    setting
        .and_then(|s| s.trim().parse::<f64>().ok())
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .unwrap_or(SHOW_AFTER)
}

/// A bar that follows a [`ReadMeter`] from a thread of its own: for work
/// (indexing several layers at once) that counts its progress but cannot
/// draw. Nothing is drawn until the meter expects some bytes. Dropping it
/// stops the thread and erases the bar, so an error path cannot leave it
/// behind.
#[derive(Debug)]
pub struct MeterBar {
    /// Dropped to stop the thread.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MeterBar {
    /// Follows `meter` under `label`; without a terminal, or with `quiet`,
    /// starts no thread at all.
    pub fn follow(label: &str, meter: &Arc<ReadMeter>, quiet: bool) -> MeterBar {
        if !will_draw(quiet) {
            return MeterBar {
                stop: None,
                thread: None,
            };
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let meter = Arc::clone(meter);
        let mut progress = Progress::bytes(label, 0, quiet);
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(POLL) {
                    let total = meter.total();
                    if total > 0 {
                        progress.set_total(total);
                        progress.set(meter.done().min(total));
                    }
                }
                progress.finish();
            });
        match thread {
            Ok(thread) => MeterBar {
                stop: Some(stop),
                thread: Some(thread),
            },
            Err(e) => {
                log::debug!("no progress bar: {e}");
                MeterBar {
                    stop: None,
                    thread: None,
                }
            }
        }
    }

    /// Whether a thread follows the meter (there is a terminal to draw on).
    pub fn is_following(&self) -> bool {
        self.thread.is_some()
    }

    /// Erases the bar and waits until it is gone.
    pub fn finish(self) {}
}

impl Drop for MeterBar {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_comes_from_the_environment_or_defaults_to_a_second() {
        assert_eq!(show_after(None), SHOW_AFTER);
        assert_eq!(show_after(Some("0")), Duration::ZERO);
        assert_eq!(show_after(Some(" 2.5 ")), Duration::from_millis(2500));
        for bad in ["", "soon", "-1", "NaN", "inf"] {
            assert_eq!(show_after(Some(bad)), SHOW_AFTER, "{bad:?}");
        }
    }

    #[test]
    fn labels_name_the_first_argument_and_count_the_rest() {
        assert_eq!(label("index", &["/l/base.tar.gz"]), "index base.tar.gz");
        assert_eq!(
            label("index", &["a.tar", "ghcr.io/x/app:1", "c"]),
            "index a.tar +2 more"
        );
        assert_eq!(label("export", &[] as &[&str]), "export");
        let long = "x".repeat(40);
        let cut = label("index", &[long.as_str()]);
        assert_eq!(cut.chars().count(), "index ".len() + 32, "{cut}");
    }

    #[test]
    fn the_bar_is_erased_once_all_its_bytes_are_through() {
        let bar = ProgressBar::with_draw_target(Some(100), ProgressDrawTarget::hidden());
        let mut progress = Progress::with_bar(Some(bar.clone()), Duration::ZERO);
        progress.set(50);
        assert!(!bar.is_finished());
        assert_eq!(bar.position(), 50);
        progress.set(100);
        assert!(bar.is_finished(), "a bar at 100% stays up");
        progress.set_total(200);
        progress.set(150);
        assert!(!bar.is_finished(), "more work did not bring the bar back");
        assert_eq!(bar.position(), 150);
        progress.finish();
        assert!(bar.is_finished());
    }

    #[test]
    fn quiet_or_without_a_terminal_nothing_follows_the_meter() {
        let meter = Arc::new(ReadMeter::default());
        let bar = MeterBar::follow("index", &meter, true);
        assert!(!bar.is_following());
        bar.finish();
        // cargo test captures stderr into a pipe: not a terminal.
        if !std::io::stderr().is_terminal() {
            assert!(!MeterBar::follow("index", &meter, false).is_following());
        }
    }
}
