//! The reports of `mitogen copy` and `mitogen fetch`, in both formats: a
//! line per target and a summary for people, a JSON object per target for
//! programs (fields documented in docs/cli.md).

use std::io::{self, Write};
use std::time::Duration;

use serde::Serialize;

use super::human::{millis, visible, HumanPrinter};
use super::json::JsonPrinter;
use crate::transfer::{Totals, TransferReport, Verb};

/// Something that writes the reports of `copy` and `fetch`.
pub trait TransferPrinter {
    /// Writes one target's report, as soon as it is known.
    fn transfer(&mut self, verb: Verb, report: &TransferReport) -> io::Result<()>;

    /// Writes the summary after the last target (text only).
    fn summary(
        &mut self,
        verb: Verb,
        reports: &[TransferReport],
        elapsed: Duration,
    ) -> io::Result<()>;
}

/// The printer chosen by `--json`.
pub fn new(json: bool) -> Box<dyn TransferPrinter> {
    if json {
        Box::new(JsonPrinter::new(io::stdout()))
    } else {
        Box::new(HumanPrinter::new(io::stdout(), io::stderr()))
    }
}

/// A byte count for people: `512 B`, `3.4 KiB`, `1.0 GiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

fn plural(n: u64, one: &str) -> String {
    format!("{n} {one}{}", if n == 1 { "" } else { "s" })
}

/// `12 files (3.4 MiB), 5 unchanged, 2 dirs, 1 link`.
fn totals(t: &Totals) -> String {
    format!(
        "{} ({}), {} unchanged, {}, {}",
        plural(t.files, "file"),
        size(t.bytes),
        t.skipped,
        plural(t.dirs, "dir"),
        plural(t.links, "link")
    )
}

fn verb_word(verb: Verb) -> &'static str {
    match verb {
        Verb::Copy => "sent",
        Verb::Fetch => "fetched",
    }
}

impl<O: Write, E: Write> TransferPrinter for HumanPrinter<O, E> {
    fn transfer(&mut self, verb: Verb, r: &TransferReport) -> io::Result<()> {
        let label = &visible(&r.target);
        for e in &r.errors {
            // The message may carry what the target said (a path it named).
            writeln!(self.err, "[{label}] failed: {}", visible(&e.message))?;
        }
        self.err.flush()?;
        if r.done > 0 {
            let into = match &r.dest {
                Some(d) => format!(" into {d}"),
                None => String::new(),
            };
            let failed = match r.errors.len() {
                0 => String::new(),
                n => format!(" ({n} of {} paths failed)", n + r.done),
            };
            writeln!(
                self.out,
                "[{label}] {} {}{into} in {}{failed}",
                verb_word(verb),
                totals(&r.totals),
                millis(r.duration)
            )?;
        }
        self.out.flush()
    }

    fn summary(
        &mut self,
        verb: Verb,
        reports: &[TransferReport],
        elapsed: Duration,
    ) -> io::Result<()> {
        let failed = reports.iter().filter(|r| !r.errors.is_empty()).count();
        let sum = reports
            .iter()
            .fold(Totals::default(), |acc, r| acc.plus(&r.totals));
        writeln!(
            self.out,
            "{}, {} ok, {failed} failed: {} {} in {:.2} s",
            plural(reports.len() as u64, "target"),
            reports.len() - failed,
            verb_word(verb),
            totals(&sum),
            elapsed.as_secs_f64()
        )?;
        self.out.flush()
    }
}

/// One failure in the JSON record.
#[derive(Debug, Serialize)]
struct ErrorRecord<'a> {
    message: &'a str,
    /// The library's `FileErrorKind` (`NotFound`, `PermissionDenied`, ...);
    /// null when the failure is not about a file (the target unreachable).
    kind: Option<String>,
    context: Option<&'a str>,
    path: Option<&'a str>,
}

/// The JSON record of one target; the field names are part of the CLI's
/// interface (docs/cli.md).
#[derive(Debug, Serialize)]
struct TransferRecord<'a> {
    target: &'a str,
    ok: bool,
    dest: Option<&'a str>,
    files: u64,
    bytes: u64,
    skipped: u64,
    dirs: u64,
    links: u64,
    paths_done: usize,
    paths_failed: usize,
    error: Option<&'a str>,
    errors: Vec<ErrorRecord<'a>>,
    duration_ms: f64,
}

impl<'a> From<&'a TransferReport> for TransferRecord<'a> {
    fn from(r: &'a TransferReport) -> TransferRecord<'a> {
        TransferRecord {
            target: &r.target,
            ok: r.errors.is_empty(),
            dest: r.dest.as_deref(),
            files: r.totals.files,
            bytes: r.totals.bytes,
            skipped: r.totals.skipped,
            dirs: r.totals.dirs,
            links: r.totals.links,
            paths_done: r.done,
            paths_failed: r.errors.len(),
            error: r.errors.first().map(|e| e.message.as_str()),
            errors: r
                .errors
                .iter()
                .map(|e| ErrorRecord {
                    message: &e.message,
                    kind: e.kind.map(|k| format!("{k:?}")),
                    context: e.context.as_deref(),
                    path: e.path.as_deref(),
                })
                .collect(),
            duration_ms: (r.duration.as_secs_f64() * 1e6).round() / 1e3,
        }
    }
}

impl<W: Write> TransferPrinter for JsonPrinter<W> {
    fn transfer(&mut self, _verb: Verb, r: &TransferReport) -> io::Result<()> {
        self.line(&TransferRecord::from(r))
    }

    fn summary(&mut self, _: Verb, _: &[TransferReport], _: Duration) -> io::Result<()> {
        // One object per target and nothing else: a consumer sums them.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(256 << 20), "256.0 MiB");
    }

    #[test]
    fn human_line_and_summary() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let r = TransferReport {
            target: "web1".into(),
            dest: None,
            totals: Totals {
                files: 2,
                bytes: 2048,
                skipped: 1,
                dirs: 1,
                links: 0,
            },
            done: 1,
            errors: vec![],
            duration: Duration::from_millis(3),
        };
        let mut p = HumanPrinter::new(&mut out, &mut err);
        p.transfer(Verb::Copy, &r).unwrap();
        p.summary(Verb::Copy, &[r], Duration::from_millis(5))
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[web1] sent 2 files (2.0 KiB), 1 unchanged, 1 dir, 0 links in 3.0 ms\n\
             1 target, 1 ok, 0 failed: sent 2 files (2.0 KiB), 1 unchanged, 1 dir, 0 links in 0.01 s\n"
        );
        assert!(err.is_empty());
    }
}
