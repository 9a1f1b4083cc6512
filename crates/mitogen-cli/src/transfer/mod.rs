//! `mitogen copy` and `mitogen fetch`: the operator's file commands, on top
//! of the library's `files` (push, fetch, `push_all`).
//!
//! Both go the same way ([`execute`]): connect the targets, at most `-j N`
//! at once (shared hops once, held for the whole command; a target that is
//! also another's hop first), then move the files in one thread per
//! *group* (for `copy`, all the targets behind one shared first hop form a
//! group, so `push_all` stages the bytes there once whatever N is, and
//! pushes from it at most N at once; every other target is a group of its
//! own), and hand each target's [`TransferReport`] to the printer as soon as
//! its group is done ([`schedule`]). [`copy`] and [`fetch`] only say what a
//! group does.

pub mod args;
pub mod copy;
pub mod fetch;
mod progress;
mod schedule;

use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use mitogen::files::{FileErrorKind, Transfer};
use mitogen::{ConnectOptions, Context, Router, Target};

use crate::fleet::holds::Holds;

use crate::printer::transfer::TransferPrinter;

/// Which command a report is of (for the words of the text output).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// `mitogen copy`: files sent to the target.
    Copy,
    /// `mitogen fetch`: files fetched from the target.
    Fetch,
}

/// What the transfers to or from one target did, summed over its paths.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Regular files written.
    pub files: u64,
    /// Content bytes written.
    pub bytes: u64,
    /// Files and links left alone: the destination already had them.
    pub skipped: u64,
    /// Directories made or found.
    pub dirs: u64,
    /// Symbolic links made.
    pub links: u64,
}

impl Totals {
    fn add(&mut self, t: &Transfer) {
        self.files += t.files;
        self.bytes += t.bytes;
        self.skipped += t.skipped;
        self.dirs += t.dirs;
        self.links += t.links;
    }

    /// The sum of `self` and `other`.
    pub fn plus(mut self, other: &Totals) -> Totals {
        self.files += other.files;
        self.bytes += other.bytes;
        self.skipped += other.skipped;
        self.dirs += other.dirs;
        self.links += other.links;
        self
    }
}

/// One failed path (or a target that could not be reached).
#[derive(Clone, Debug)]
pub struct Failure {
    /// The whole message, naming the context (hop) and path.
    pub message: String,
    /// The library's kind of file error; `None` for a failure that is not
    /// about a file (the target could not be connected, a transport error).
    pub kind: Option<FileErrorKind>,
    /// The context the path is in (the master's own name for a local path).
    pub context: Option<String>,
    /// The path concerned.
    pub path: Option<String>,
}

impl Failure {
    /// A failure that is not about a file (the target or a hop on its way
    /// could not be connected).
    pub fn other(message: String) -> Failure {
        Failure {
            message,
            kind: None,
            context: None,
            path: None,
        }
    }

    /// Whether this failure is about the target rather than a file: it
    /// could not be reached, or its connection went away mid-transfer
    /// (exit status 3).
    pub fn is_target_lost(&self) -> bool {
        matches!(self.kind, None | Some(FileErrorKind::Interrupted))
    }
}

impl From<mitogen::Error> for Failure {
    fn from(e: mitogen::Error) -> Failure {
        match e {
            mitogen::Error::File(f) => Failure {
                message: f.to_string(),
                kind: Some(f.kind),
                context: Some(f.context),
                path: Some(f.path),
            },
            e => Failure {
                message: e.to_string(),
                kind: None,
                context: None,
                path: None,
            },
        }
    }
}

/// What happened with one target.
#[derive(Clone, Debug)]
pub struct TransferReport {
    /// The target as given (numbered `#N` when repeated, as `mitogen run`).
    pub target: String,
    /// Where a fetch put this target's files (`None` for a copy).
    pub dest: Option<String>,
    /// What the successful transfers did.
    pub totals: Totals,
    /// Paths that succeeded.
    pub done: usize,
    /// Paths that failed, or the one reason the target could not be reached.
    pub errors: Vec<Failure>,
    /// From the start of the command until this target's last transfer ended.
    pub duration: Duration,
}

impl TransferReport {
    fn new(target: String, dest: Option<String>, results: Vec<Outcome>) -> Self {
        let mut r = TransferReport {
            target,
            dest,
            totals: Totals::default(),
            done: 0,
            errors: Vec::new(),
            duration: Duration::ZERO,
        };
        for result in results {
            match result {
                Ok(t) => {
                    r.totals.add(&t);
                    r.done += 1;
                }
                Err(e) => r.errors.push(e),
            }
        }
        r
    }
}

/// The exit status for a set of reports: 3 when a target could not be
/// reached or was lost, else 1 when a transfer failed, else 0 (see
/// `mitogen copy --help`).
pub fn exit_status<'a>(reports: impl IntoIterator<Item = &'a TransferReport>) -> u8 {
    let mut status = 0;
    for r in reports {
        if r.errors.iter().any(Failure::is_target_lost) {
            return 3;
        }
        if !r.errors.is_empty() {
            status = 1;
        }
    }
    status
}

/// The result of one path: what was moved, or why not.
pub type Outcome = Result<Transfer, Failure>;

/// What one group's thread gets: its members' indices and contexts.
pub type Members<'a> = &'a [(usize, Context)];

/// How a group's work hands in a member's report before the whole group is
/// done (`copy`: each target as its last push ends): the member's place in
/// [`Members`], its destination and one result per path. A member told
/// this way is printed at once; what the work returns for it later is not
/// printed again.
pub type Early<'a> = &'a (dyn Fn(usize, Option<String>, Vec<Outcome>) + Sync);

/// Runs `work` for the targets under the concurrency limit `forks`
/// ([`schedule`]: at most `forks` targets connecting or moving files at
/// once; targets with equal `group_of` keys in one job are served together,
/// `None` alone), and prints each target's report as it comes. `work`
/// returns, for each member in order, its destination (for the report) and
/// one result per path, and may hand in a member's report before that
/// ([`Early`]). Returns the exit status.
#[allow(clippy::too_many_arguments)]
pub fn execute<W>(
    router: &Router,
    verb: Verb,
    targets: &[Target],
    options: &ConnectOptions,
    forks: usize,
    group_of: impl Fn(&Target) -> Option<String> + Sync,
    work: W,
    printer: &mut dyn TransferPrinter,
) -> anyhow::Result<u8>
where
    W: Fn(Members, Early) -> Vec<(Option<String>, Vec<Outcome>)> + Sync,
{
    let started = Instant::now();
    let labels = crate::run::labels(targets);
    let progress = progress::Progress::new(verb, targets.len());
    let mut reports: Vec<Option<TransferReport>> = targets.iter().map(|_| None).collect();
    let emit = |i: usize,
                mut r: TransferReport,
                reports: &mut Vec<Option<TransferReport>>,
                printer: &mut dyn TransferPrinter| {
        r.duration = started.elapsed();
        progress.suspend(|| printer.transfer(verb, &r))?;
        progress.done(&r);
        reports[i] = Some(r);
        std::io::Result::Ok(())
    };

    let holds = Holds::new(router, options, targets);
    let plan = schedule::Plan {
        targets,
        labels: &labels,
        holds: &holds,
        group_of,
        work,
        kept: Mutex::new(Vec::new()),
        forks,
    };
    // copy's work is one `push_all` per group, which bounds its own pushes
    // (`fan_out`) and stages the bytes once per group: a first hop's
    // targets are one job. fetch's work is a thread per target: jobs of N.
    let jobs = schedule::jobs(targets, forks, verb == Verb::Copy);
    let (tx, rx) = mpsc::channel::<(usize, TransferReport)>();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let (plan, jobs) = (&plan, &jobs);
        s.spawn(move || plan.run(jobs, forks, tx));
        // A thread that panicked drops its sender without a report: its
        // targets are reported below.
        for (i, report) in rx {
            if reports[i].is_none() {
                emit(i, report, &mut reports, printer)?;
            }
        }
        Ok(())
    })?;
    for (i, label) in labels.iter().enumerate() {
        if reports[i].is_none() {
            let report = TransferReport::new(label.clone(), None, vec![Err(thread_died())]);
            emit(i, report, &mut reports, printer)?;
        }
    }
    progress.finish();
    // Every file is in: the contexts other targets ran through go now,
    // deepest first, and the held hops after them.
    let mut kept = plan.kept.into_inner().unwrap_or_else(|e| e.into_inner());
    kept.sort_by_key(|(depth, _)| std::cmp::Reverse(*depth));
    for (_, c) in kept {
        c.dismiss();
    }
    holds.release();
    let reports: Vec<TransferReport> = reports.into_iter().flatten().collect();
    printer.summary(verb, &reports, started.elapsed())?;
    Ok(exit_status(&reports))
}

fn thread_died() -> Failure {
    Failure::other("internal error: the target's thread ended without a report".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mitogen::files::FileError;

    fn report(errors: Vec<mitogen::Error>) -> TransferReport {
        let errors = errors.into_iter().map(|e| Err(e.into())).collect();
        TransferReport::new("t".into(), None, errors)
    }

    fn file_error(kind: FileErrorKind) -> mitogen::Error {
        mitogen::Error::File(FileError::new(kind, "web1", "/srv/x", ""))
    }

    #[test]
    fn exit_status_ranks_lost_targets_above_failed_files() {
        assert_eq!(exit_status(&[report(vec![])]), 0);
        let missing = report(vec![file_error(FileErrorKind::NotFound)]);
        assert_eq!(exit_status([&report(vec![]), &missing]), 1);
        let lost = report(vec![file_error(FileErrorKind::Interrupted)]);
        assert_eq!(exit_status([&missing, &lost]), 3);
        let unreachable = report(vec![mitogen::Error::RouterShutdown]);
        assert_eq!(exit_status([&unreachable, &missing]), 3);
    }

    #[test]
    fn a_failure_keeps_the_context_and_path() {
        let f = Failure::from(file_error(FileErrorKind::PermissionDenied));
        assert_eq!(f.kind, Some(FileErrorKind::PermissionDenied));
        assert_eq!(f.context.as_deref(), Some("web1"));
        assert_eq!(f.path.as_deref(), Some("/srv/x"));
        assert!(f.message.contains("web1") && f.message.contains("/srv/x"));
    }
}
