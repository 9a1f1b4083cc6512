//! `mitogen run`: connect the targets, at most `--forks` at once, run the
//! command in each, and hand each target's report to a printer as soon as it
//! is complete. A target's `--timeout` counts from its own start, not from
//! the command's: one that waited for a slot is not charged for the wait.
//!
//! The fleet part ([`each`]: connect with one first call, the limit, the
//! timeouts, the held hops, the progress line) does not care which call it
//! makes: `mitogen facts` makes its own through it.

use std::collections::HashMap;
use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mitogen::builtins::{run_command, CommandOutput};
use mitogen::{ConnectOptions, Context, PendingCall, Router, Target};

use crate::args::{RunArgs, SessionArgs};
use crate::fleet::holds::{is_a_hop_of_another, Holds};
use crate::fleet::progress::Progress;
use crate::printer::Printer;

/// Extra time the main thread allows a target's own thread, past the target's
/// deadline, to report its own (more precise) timeout before declaring one.
const REPORT_GRACE: Duration = Duration::from_millis(200);

/// What happened on one target: by default, of `mitogen run`'s command.
#[derive(Debug)]
pub struct TargetReport<T = CommandOutput> {
    /// The target as the user wrote it (with `#N` appended when the same
    /// target was given more than once).
    pub target: String,
    /// The call's result, or why there is none.
    pub outcome: Outcome<T>,
    /// From the start of connecting until the command's result arrived.
    pub duration: Duration,
}

/// The result of one target.
#[derive(Debug)]
pub enum Outcome<T = CommandOutput> {
    /// The call returned: the command ran (whatever its exit status).
    Ran(T),
    /// The target could not be connected or the call could not be made.
    Failed(String),
    /// `--timeout` ran out before the call's result arrived.
    TimedOut,
}

impl<T> Outcome<T> {
    /// Why there is no result, if there is none.
    pub fn error(&self) -> Option<String> {
        match self {
            Outcome::Ran(_) => None,
            Outcome::Failed(e) => Some(e.clone()),
            Outcome::TimedOut => Some("timed out".into()),
        }
    }
}

/// The process exit status for a set of reports (see `mitogen run --help`).
pub fn exit_status<'a>(reports: impl IntoIterator<Item = &'a TargetReport>) -> u8 {
    let mut status = 0;
    for r in reports {
        match &r.outcome {
            Outcome::Failed(_) | Outcome::TimedOut => return 3,
            Outcome::Ran(out) if !out.success() => status = 1,
            Outcome::Ran(_) => {}
        }
    }
    status
}

/// Labels for the targets, unique even when a target is repeated, so output
/// lines can be told apart.
pub(crate) fn labels(targets: &[Target]) -> Vec<String> {
    let mut count: HashMap<String, usize> = HashMap::new();
    for t in targets {
        *count.entry(t.to_string()).or_default() += 1;
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    targets
        .iter()
        .map(|t| {
            let text = t.to_string();
            if count[&text] == 1 {
                return text;
            }
            let n = seen.entry(text.clone()).or_default();
            *n += 1;
            format!("{text}#{n}")
        })
        .collect()
}

/// Connects target `i` (through its held hops) and makes the call there,
/// within `--timeout` of `begun` if one is set. Returns the report and the
/// context (to be shut down after reporting).
fn run_one<T: Reply>(
    sh: &Shared<T>,
    i: usize,
    begun: Instant,
) -> (TargetReport<T>, Option<Context>) {
    let target = &sh.targets[i];
    let report = |outcome| TargetReport {
        target: sh.labels[i].clone(),
        outcome,
        duration: begun.elapsed(),
    };
    if let Err(e) = sh.holds.ready(target) {
        return (report(Outcome::Failed(e)), None);
    }
    let (ctx, pending) = match (sh.call)(&sh.router, target, &sh.options) {
        Ok(x) => x,
        Err(e) => return (report(Outcome::Failed(e.to_string())), None),
    };
    let result = match sh.timeout {
        Some(t) => pending.get_timeout((begun + t).saturating_duration_since(Instant::now())),
        None => pending.get(),
    };
    let outcome = match result {
        Ok(out) => Outcome::Ran(out),
        Err(mitogen::Error::Timeout(_)) => Outcome::TimedOut,
        Err(e) => Outcome::Failed(e.to_string()),
    };
    (report(outcome), Some(ctx))
}

/// Connects a target and makes the one call of the command, with it: the
/// call travels with the context's configuration (`Router::connect_call`),
/// so over a slow link it costs no round trip of its own.
pub type Call<T> = Box<
    dyn Fn(&Router, &Target, &ConnectOptions) -> mitogen::Result<(Context, PendingCall<T>)>
        + Send
        + Sync,
>;

/// What a [`Call`] returns: anything a remote function may.
pub trait Reply: serde::Serialize + serde::de::DeserializeOwned + Send + 'static {}

impl<T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static> Reply for T {}

/// What every target's thread shares.
struct Shared<T> {
    router: Router,
    holds: Holds,
    options: ConnectOptions,
    targets: Vec<Target>,
    labels: Vec<String>,
    call: Call<T>,
    timeout: Option<Duration>,
    /// Contexts another target may still run through (`web1` of
    /// `web1/sudo`): dismissed at the end, deepest first.
    kept: Mutex<Vec<(usize, Context)>>,
}

/// Starts target `i`, begun at `begun`, in a thread of its own, which sends
/// its report to `tx` and then lets its context go.
fn start<T: Reply>(
    shared: &Arc<Shared<T>>,
    i: usize,
    begun: Instant,
    tx: mpsc::Sender<(usize, TargetReport<T>)>,
) -> std::io::Result<()> {
    let shared = shared.clone();
    std::thread::Builder::new()
        .name(format!("run:{}", shared.labels[i]))
        .spawn(move || {
            let sh = &*shared;
            let target = &sh.targets[i];
            let run = || run_one(sh, i, begun);
            let Ok((report, ctx)) = std::panic::catch_unwind(AssertUnwindSafe(run)) else {
                let _ = tx.send((i, thread_died(&sh.labels[i], begun)));
                return;
            };
            let timed_out = matches!(report.outcome, Outcome::TimedOut);
            // Report first: shutting the context down is not the user's wait.
            let _ = tx.send((i, report));
            let Some(ctx) = ctx else { return };
            if timed_out {
                // A timed-out command may run forever: kill at once.
                let _ = ctx.shutdown_timeout(Duration::ZERO);
            } else if is_a_hop_of_another(&sh.targets, i) {
                lock(&sh.kept).push((target.hops().len(), ctx));
            } else {
                // Its result is in: told to go, and not waited for (an
                // acknowledgement would carry nothing, and cost a round
                // trip).
                ctx.dismiss();
            }
        })
        .map(drop)
}

/// Runs the command on the targets, at most `--forks` at once (the next
/// starts as soon as one reports), printing each report as it completes;
/// returns the exit status.
pub fn run(router: &Router, args: RunArgs, printer: &mut dyn Printer) -> anyhow::Result<u8> {
    let started = Instant::now();
    let fleet = Fleet::of(args.targets, &args.session, args.timeout, args.json)?;
    let argv = args.command;
    let call: Call<CommandOutput> = Box::new(move |router, target, options| {
        router.connect_call(target, options, run_command, (argv.clone(),))
    });
    let reports = each(router, fleet, call, |r| printer.target(r))?;
    printer.summary(&reports, started.elapsed())?;
    printer.finish()?;
    Ok(exit_status(&reports))
}

/// The targets of a command and how to go through them.
pub struct Fleet {
    /// The targets, in order.
    pub targets: Vec<Target>,
    /// How hops are made (ssh options, passwords).
    pub options: ConnectOptions,
    /// `--timeout`: the most each target may take, from its own start.
    pub timeout: Option<Duration>,
    /// `-j`: at most this many targets at once.
    pub forks: usize,
    /// Whether the progress line is wanted (not with `--json`; drawn only on
    /// a terminal).
    pub progress: bool,
}

impl Fleet {
    /// The fleet of a command's (prepared) targets, its `--timeout`, and
    /// the session options they share; no progress line with `--json`.
    pub fn of(
        targets: Vec<Target>,
        session: &SessionArgs,
        timeout: Option<Duration>,
        json: bool,
    ) -> anyhow::Result<Fleet> {
        let options = session
            .connect
            .connect_options(&targets.iter().collect::<Vec<_>>())?;
        Ok(Fleet {
            targets,
            options,
            timeout,
            forks: session.fleet.forks,
            progress: !json,
        })
    }
}

/// Makes `call` on every target of `fleet`, at most `forks` at once (the
/// next starts as soon as one reports; shared hops held for the whole
/// command), handing each report to `report` as it completes, with the
/// progress line out of the way. Returns the reports in the targets' order
/// once every context it started has been let go.
pub fn each<T: Reply>(
    router: &Router,
    fleet: Fleet,
    call: Call<T>,
    mut report: impl FnMut(&TargetReport<T>) -> io::Result<()>,
) -> io::Result<Vec<TargetReport<T>>> {
    let labels = labels(&fleet.targets);
    let n = fleet.targets.len();
    let shared = Arc::new(Shared {
        router: router.clone(),
        holds: Holds::new(router, &fleet.options, &fleet.targets),
        options: fleet.options,
        targets: fleet.targets,
        labels,
        call,
        timeout: fleet.timeout,
        kept: Mutex::new(Vec::new()),
    });
    let progress = Progress::new(n, fleet.progress);
    let forks = fleet.forks.max(1);
    let mut reports: Vec<Option<TargetReport<T>>> = (0..n).map(|_| None).collect();
    let mut emit = |i: usize, r: TargetReport<T>| -> io::Result<()> {
        progress.suspend(|| report(&r))?;
        progress.done(&r);
        reports[i] = Some(r);
        Ok(())
    };
    let (tx, rx) = mpsc::channel::<(usize, TargetReport<T>)>();
    // Targets started and not reported yet, with their start.
    let mut running: Vec<(usize, Instant)> = Vec::new();
    let mut next = 0;
    // A target silent past its own deadline (stuck connecting) is reported
    // timed out here, and its slot given to the next: its thread is left
    // behind, its late report ignored.
    let expiry = |begun: Instant| shared.timeout.map(|t| begun + t + REPORT_GRACE);
    loop {
        while running.len() < forks && next < n {
            let (i, begun) = (next, Instant::now());
            next += 1;
            match start(&shared, i, begun, tx.clone()) {
                Ok(()) => running.push((i, begun)),
                // Out of threads (a process limit): this target fails, the
                // others go on as slots free.
                Err(e) => {
                    let report = TargetReport {
                        target: shared.labels[i].clone(),
                        outcome: Outcome::Failed(format!("cannot start a thread for it: {e}")),
                        duration: begun.elapsed(),
                    };
                    emit(i, report)?;
                }
            }
        }
        if running.is_empty() {
            break;
        }
        let soonest = running.iter().filter_map(|(_, b)| expiry(*b)).min();
        let got = match soonest {
            Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            // Never disconnected: this thread holds a sender.
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match got {
            Ok((i, report)) => {
                if let Some(k) = running.iter().position(|(j, _)| *j == i) {
                    running.swap_remove(k);
                    emit(i, report)?;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                let (late, on): (Vec<_>, Vec<_>) = running
                    .iter()
                    .partition(|(_, b)| expiry(*b).is_some_and(|at| at <= now));
                running = on;
                for (i, begun) in late {
                    let report = TargetReport {
                        target: shared.labels[i].clone(),
                        outcome: Outcome::TimedOut,
                        duration: begun.elapsed(),
                    };
                    emit(i, report)?;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    progress.finish();
    let reports: Vec<TargetReport<T>> = reports.into_iter().flatten().collect();
    let mut kept = std::mem::take(&mut *lock(&shared.kept));
    kept.sort_by_key(|(depth, _)| std::cmp::Reverse(*depth));
    for (_, c) in kept {
        c.dismiss();
    }
    shared.holds.release();
    Ok(reports)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn thread_died<T>(label: &str, begun: Instant) -> TargetReport<T> {
    TargetReport {
        target: label.to_owned(),
        outcome: Outcome::Failed(
            "internal error: the target's thread ended without a report".into(),
        ),
        duration: begun.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ran(code: Option<i32>) -> TargetReport {
        TargetReport {
            target: "t".into(),
            outcome: Outcome::Ran(CommandOutput {
                code,
                signal: None,
                stdout: vec![],
                stderr: vec![],
            }),
            duration: Duration::ZERO,
        }
    }

    #[test]
    fn exit_status_ranks_failures_above_nonzero_exits() {
        assert_eq!(exit_status(&[ran(Some(0)), ran(Some(0))]), 0);
        assert_eq!(exit_status(&[ran(Some(0)), ran(Some(7))]), 1);
        assert_eq!(exit_status(&[ran(None)]), 1);
        let failed = TargetReport {
            target: "t".into(),
            outcome: Outcome::Failed("x".into()),
            duration: Duration::ZERO,
        };
        assert_eq!(exit_status(&[ran(Some(1)), failed]), 3);
    }

    #[test]
    fn repeated_targets_get_numbered_labels() {
        let t: Vec<Target> = ["local", "web1", "local"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(labels(&t), ["local#1", "web1", "local#2"]);
    }
}
