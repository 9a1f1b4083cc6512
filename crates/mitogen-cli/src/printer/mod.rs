//! Printers: how results reach the user. The commands produce reports; a
//! printer chooses the format ([`human`] text or [`json`] lines), so each
//! format is defined in one place.

pub mod facts;
pub mod human;
pub mod invisible;
pub mod json;
pub mod log;
pub mod transfer;

use std::io;
use std::time::Duration;

use crate::bench::files::FilesReport;
use crate::bench::BenchReport;
use crate::run::TargetReport;

/// Something that writes reports to the terminal or a pipe.
pub trait Printer {
    /// Writes one target's result of `mitogen run`, as soon as it is known.
    fn target(&mut self, report: &TargetReport) -> io::Result<()>;

    /// Writes the summary of `mitogen run` after the last target (text, and
    /// only for more than one target; nothing in JSON, whose output is one
    /// object per target).
    fn summary(&mut self, _reports: &[TargetReport], _elapsed: Duration) -> io::Result<()> {
        Ok(())
    }

    /// Writes the result of `mitogen bench` against `target`.
    fn bench(&mut self, target: &str, report: &BenchReport) -> io::Result<()>;

    /// Writes the result of `mitogen bench --files-only` against `target`.
    fn bench_files(&mut self, target: &str, report: &FilesReport) -> io::Result<()>;

    /// Called once after the last report, e.g. to flush.
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The printer chosen by `--json`.
pub fn new(json: bool) -> Box<dyn Printer> {
    if json {
        Box::new(json::JsonPrinter::new(io::stdout()))
    } else {
        Box::new(human::HumanPrinter::new(io::stdout(), io::stderr()))
    }
}
