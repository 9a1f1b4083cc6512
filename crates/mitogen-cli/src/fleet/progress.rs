//! The progress line of `mitogen run` across many targets, on stderr when it
//! is a terminal (and not with `--json`): targets done of all, how many are
//! running and have failed so far, and the time. Nothing at all otherwise,
//! so that logs and pipes get only the report lines. Every report is
//! printed with the line out of the way ([`Progress::suspend`]), so the two
//! never share a line.

use std::cell::Cell;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::run::{Outcome, TargetReport};

/// The progress line of one `run`.
pub struct Progress {
    bar: ProgressBar,
    total: usize,
    done: Cell<usize>,
    failed: Cell<usize>,
}

impl Progress {
    /// A progress line for `targets` targets: drawn on stderr when `wanted`
    /// and stderr is a terminal, hidden otherwise.
    pub fn new(targets: usize, wanted: bool) -> Progress {
        let bar = if wanted && std::io::stderr().is_terminal() {
            ProgressBar::with_draw_target(Some(targets as u64), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} running: {pos}/{len} targets done, {msg} [{elapsed}]",
        ) {
            bar.set_style(style);
        }
        let p = Progress {
            bar,
            total: targets,
            done: Cell::new(0),
            failed: Cell::new(0),
        };
        p.message();
        p.bar.enable_steady_tick(Duration::from_millis(120));
        p
    }

    fn message(&self) {
        self.bar
            .set_message(format!("{} failed", self.failed.get()));
    }

    /// Runs `f` (which prints) with the progress line out of the way.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    /// Counts one more target as done.
    pub fn done<T>(&self, r: &TargetReport<T>) {
        if !matches!(r.outcome, Outcome::Ran(_)) {
            self.failed.set(self.failed.get() + 1);
        }
        self.done.set(self.done.get() + 1);
        self.bar.inc(1);
        self.message();
        debug_assert!(self.done.get() <= self.total);
    }

    /// Removes the progress line.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
