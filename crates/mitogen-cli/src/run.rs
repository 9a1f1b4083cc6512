//! `mitogen run`: connect every target at once, run the command in each, and
//! hand each target's report to a printer as soon as it is complete.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mitogen::builtins::{run_command, CommandOutput};
use mitogen::{ConnectOptions, Context, Router, Target};

use crate::args::RunArgs;
use crate::printer::Printer;

/// Extra time the main thread allows a target's own thread, past the target's
/// deadline, to report its own (more precise) timeout before declaring one.
const REPORT_GRACE: Duration = Duration::from_millis(200);

/// What happened on one target.
#[derive(Debug)]
pub struct TargetReport {
    /// The target as the user wrote it (with `#N` appended when the same
    /// target was given more than once).
    pub target: String,
    /// The command's result, or why there is none.
    pub outcome: Outcome,
    /// From the start of connecting until the command's result arrived.
    pub duration: Duration,
}

/// The result of one target.
#[derive(Debug)]
pub enum Outcome {
    /// The command ran (whatever its exit status).
    Ran(CommandOutput),
    /// The target could not be connected or the command could not be started.
    Failed(String),
    /// `--timeout` ran out before the command's result arrived.
    TimedOut,
}

impl Outcome {
    /// Why there is no command result, if there is none.
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

/// Connects `target` and runs `argv` there, within `deadline` if one is set.
/// Returns the report and the context (to be shut down after reporting).
fn run_one(
    router: &Router,
    target: &Target,
    options: &ConnectOptions,
    label: String,
    argv: Vec<String>,
    deadline: Option<Instant>,
) -> (TargetReport, Option<Context>) {
    let started = Instant::now();
    let report = |outcome| TargetReport {
        target: label.clone(),
        outcome,
        duration: started.elapsed(),
    };
    // The command travels with the context's configuration: over a slow
    // link, no round trip of its own.
    let (ctx, pending) = match router.connect_call(target, options, run_command, (argv,)) {
        Ok(x) => x,
        Err(e) => return (report(Outcome::Failed(e.to_string())), None),
    };
    let result = match deadline {
        Some(d) => pending.get_timeout(d.saturating_duration_since(Instant::now())),
        None => pending.get(),
    };
    let outcome = match result {
        Ok(out) => Outcome::Ran(out),
        Err(mitogen::Error::Timeout(_)) => Outcome::TimedOut,
        Err(e) => Outcome::Failed(e.to_string()),
    };
    (report(outcome), Some(ctx))
}

/// Runs the command on every target concurrently, printing each report as it
/// completes; returns the exit status.
pub fn run(router: &Router, args: RunArgs, printer: &mut dyn Printer) -> anyhow::Result<u8> {
    let started = Instant::now();
    let deadline = args.timeout.map(|t| started + t);
    let labels = labels(&args.targets);
    let options = args
        .connect
        .connect_options(&args.targets.iter().collect::<Vec<_>>())?;
    let (tx, rx) = mpsc::channel::<(usize, TargetReport)>();
    let mut workers = Vec::with_capacity(args.targets.len());
    for (i, (target, label)) in args
        .targets
        .into_iter()
        .zip(labels.iter().cloned())
        .enumerate()
    {
        let (router, argv, tx) = (router.clone(), args.command.clone(), tx.clone());
        let options = options.clone();
        let worker = std::thread::Builder::new()
            .name(format!("run:{label}"))
            .spawn(move || {
                let (report, ctx) = run_one(&router, &target, &options, label, argv, deadline);
                let timed_out = matches!(report.outcome, Outcome::TimedOut);
                // Report first: shutting the context down is not the user's wait.
                let _ = tx.send((i, report));
                if let Some(ctx) = ctx {
                    if timed_out {
                        // A timed-out command may run forever: kill at once.
                        let _ = ctx.shutdown_timeout(Duration::ZERO);
                    } else {
                        // Its result is in: told to go, and not waited for
                        // (an acknowledgement would carry nothing, and cost
                        // a round trip).
                        ctx.dismiss();
                    }
                }
            })?;
        workers.push(Some(worker));
    }
    drop(tx);

    let mut reports: Vec<Option<TargetReport>> = labels.iter().map(|_| None).collect();
    let mut left = reports.len();
    while left > 0 {
        let got = match deadline {
            Some(d) => {
                let wait = (d + REPORT_GRACE).saturating_duration_since(Instant::now());
                rx.recv_timeout(wait).ok()
            }
            None => rx.recv().ok(),
        };
        let Some((i, report)) = got else { break };
        printer.target(&report)?;
        reports[i] = Some(report);
        left -= 1;
    }
    // Targets still silent here are stuck (typically while connecting) or their
    // thread died: report them, and leave their threads behind rather than
    // wait on them.
    let expired = deadline.is_some_and(|d| Instant::now() >= d);
    for (i, slot) in reports.iter_mut().enumerate() {
        if slot.is_none() {
            let report = TargetReport {
                target: labels[i].clone(),
                outcome: if expired {
                    Outcome::TimedOut
                } else {
                    Outcome::Failed(
                        "internal error: the target's thread ended without a report".into(),
                    )
                },
                duration: started.elapsed(),
            };
            printer.target(&report)?;
            *slot = Some(report);
            workers[i] = None;
        }
    }
    printer.finish()?;
    for w in workers.into_iter().flatten() {
        let _ = w.join();
    }
    Ok(exit_status(reports.iter().flatten()))
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
