//! Progress on stderr while files move, when stderr is a terminal: a spinner
//! with the targets done, the bytes moved so far and the time. Nothing at
//! all otherwise, so logs and pipes get only the report lines.
//!
//! The library reports a transfer when it ends (`Transfer`), not while it
//! runs, so the bar advances per target, not per byte.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{TransferReport, Verb};

/// The progress line of one `copy` or `fetch`.
pub struct Progress {
    bar: ProgressBar,
    bytes: std::cell::Cell<u64>,
}

impl Progress {
    /// A progress line for `targets` targets: drawn on stderr if it is a
    /// terminal, hidden otherwise.
    pub fn new(verb: Verb, targets: usize) -> Progress {
        let bar = if std::io::stderr().is_terminal() {
            ProgressBar::with_draw_target(Some(targets as u64), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        let what = match verb {
            Verb::Copy => "copying",
            Verb::Fetch => "fetching",
        };
        if let Ok(style) = ProgressStyle::with_template(&format!(
            "{{spinner}} {what}: {{pos}}/{{len}} targets done, {{msg}} [{{elapsed}}]"
        )) {
            bar.set_style(style);
        }
        bar.set_message("0 B");
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress {
            bar,
            bytes: std::cell::Cell::new(0),
        }
    }

    /// Runs `f` (which prints) with the progress line out of the way.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    /// Counts one more target as done.
    pub fn done(&self, r: &TransferReport) {
        self.bytes.set(self.bytes.get() + r.totals.bytes);
        self.bar.inc(1);
        self.bar
            .set_message(crate::printer::transfer::size(self.bytes.get()));
    }

    /// Removes the progress line.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
