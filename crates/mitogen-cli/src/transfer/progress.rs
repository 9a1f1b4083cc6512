//! Progress on stderr while files move, when stderr is a terminal and the
//! output is not `--json`: the targets done, the bytes moved so far (of the
//! total when it is known, with a bar and an estimate of the time left),
//! the rate, and the time. Nothing at all otherwise, so logs and pipes get
//! only the report lines.
//!
//! The bytes come from the library's counter (`FileOptions::progress`),
//! which the transfers add to frame by frame; the line reads it whenever
//! indicatif's steady tick redraws it (every 50 ms), so a large file shows
//! its bytes moving, not only its target's end. What the counter counts is
//! what this process moves (see `mitogen::files::Progress`): on a copy, the
//! bytes it sends (once per run of targets behind a shared hop, which sends
//! them on); on a fetch, the bytes it writes.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use super::Verb;
use crate::printer::transfer::size;

/// What the progress line shows of the bytes: the library's counter and,
/// when known, the total the transfers are to move.
#[derive(Clone, Debug)]
pub struct Bytes {
    /// The counter given to every transfer of the command.
    pub counter: mitogen::files::Progress,
    /// The bytes there are to move, if known before they are listed (a
    /// copy's sources are scanned here; a fetch's are not known).
    pub total: Option<u64>,
    /// Whether a line may be drawn at all (not with `--json`).
    pub shown: bool,
}

/// How far back the rate looks: long enough to smooth a frame's burst,
/// short enough to follow a link that slows down.
const RATE_WINDOW: Duration = Duration::from_secs(3);

/// The counter's recent readings, for the rate.
struct Meter {
    bytes: Bytes,
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

impl Meter {
    /// The bytes part of the line, reading the counter now.
    fn text(&self) -> String {
        let now = Instant::now();
        let moved = self.bytes.counter.bytes();
        let rate = {
            let mut s = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
            s.push_back((now, moved));
            // Keep one reading older than the window as its start.
            while s.len() > 2 && s.get(1).is_some_and(|(t, _)| now - *t >= RATE_WINDOW) {
                s.pop_front();
            }
            s.front().and_then(|&(t, b)| {
                let dt = (now - t).as_secs_f64();
                (dt >= 0.25).then(|| moved.saturating_sub(b) as f64 / dt)
            })
        };
        line(moved, self.bytes.total, rate)
    }
}

/// `1.2 GiB of 3.0 GiB [===>      ] 85.3 MiB/s, ETA 0:21` with a total,
/// `1.2 GiB, 85.3 MiB/s` without; the rate (bytes a second) and the time
/// left only once there is a rate. Kept short so that the line fits most
/// terminals; one that wraps is still cleared whole (indicatif counts the
/// rows it takes).
pub fn line(moved: u64, total: Option<u64>, rate: Option<f64>) -> String {
    const WIDTH: u64 = 10;
    let mut out = size(moved);
    if let Some(total) = total {
        // The total counts every file as new; a transfer may move more (a
        // fan-out pushed directly when its hop could not stage), so the
        // bar stops full rather than overflowing.
        let total = total.max(moved);
        let filled = if total == 0 {
            WIDTH
        } else {
            ((moved as u128 * WIDTH as u128) / total as u128) as u64
        };
        let _ = write!(out, " of {} [", size(total));
        for i in 0..WIDTH {
            out.push(match i.cmp(&filled) {
                std::cmp::Ordering::Less => '=',
                std::cmp::Ordering::Equal => '>',
                std::cmp::Ordering::Greater => ' ',
            });
        }
        out.push(']');
    }
    if let Some(rate) = rate {
        let _ = write!(
            out,
            "{}{}/s",
            if total.is_some() { " " } else { ", " },
            size(rate as u64)
        );
        if let Some(total) = total.filter(|&t| t > moved) {
            if rate >= 1.0 {
                let secs = ((total - moved) as f64 / rate).ceil() as u64;
                let _ = write!(out, ", ETA {}", clock(secs));
            }
        }
    }
    out
}

/// `0:21`, `12:05`, `3:02:09`.
fn clock(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// The progress line of one `copy` or `fetch`.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A progress line for `targets` targets: drawn on stderr if `bytes`
    /// allows it and stderr is a terminal, hidden otherwise.
    pub fn new(verb: Verb, targets: usize, bytes: Bytes) -> Progress {
        let bar = if bytes.shown && std::io::stderr().is_terminal() {
            ProgressBar::with_draw_target(Some(targets as u64), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        let what = match verb {
            Verb::Copy => "copying",
            Verb::Fetch => "fetching",
        };
        let meter = Arc::new(Meter {
            bytes,
            samples: Mutex::new(VecDeque::new()),
        });
        let style = ProgressStyle::with_template(&format!(
            "{{spinner}} {what}: {{pos}}/{{len}} targets done, {{moved}} [{{elapsed}}]"
        ));
        if let Ok(style) = style {
            bar.set_style(style.with_key(
                "moved",
                move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&meter.text());
                },
            ));
        }
        // 20 redraws a second (indicatif's own limit): a local copy moves
        // a GiB in about 0.4 s, and the line should show it under way.
        bar.enable_steady_tick(Duration::from_millis(50));
        Progress { bar }
    }

    /// Runs `f` (which prints) with the progress line out of the way.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    /// Counts one more target as done.
    pub fn done(&self) {
        self.bar.inc(1);
    }

    /// Removes the progress line.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bytes_read_well_with_and_without_a_total() {
        assert_eq!(line(0, None, None), "0 B");
        assert_eq!(
            line(3 << 29, None, Some(85.3 * 1048576.0)),
            "1.5 GiB, 85.3 MiB/s"
        );
        assert_eq!(
            line(1 << 30, Some(4 << 30), Some((1 << 20) as f64)),
            "1.0 GiB of 4.0 GiB [==>       ] 1.0 MiB/s, ETA 51:12"
        );
        assert_eq!(
            line(1 << 30, Some(3 << 30), Some((100 << 10) as f64)),
            "1.0 GiB of 3.0 GiB [===>      ] 100.0 KiB/s, ETA 5:49:32"
        );
        assert_eq!(line(0, Some(1 << 20), None), "0 B of 1.0 MiB [>         ]");
        // Done, or past a total that was too low: a full bar, no ETA.
        assert_eq!(
            line(5 << 20, Some(4 << 20), Some(1e6)),
            "5.0 MiB of 5.0 MiB [==========] 976.6 KiB/s"
        );
        assert_eq!(line(0, Some(0), None), "0 B of 0 B [==========]");
    }
}
