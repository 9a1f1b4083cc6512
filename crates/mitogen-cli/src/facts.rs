//! `mitogen facts`: what each target is (system, kernel, CPUs, memory,
//! disks, addresses, user), from one call of the library's
//! [`facts`](mitogen::builtins::facts) in each, through the same fleet
//! machinery as `mitogen run` ([`crate::run::each`]: hosts files, `-j`,
//! shared hops, `--timeout`, the progress line).

use std::time::{Duration, Instant};

use clap::Args;
use mitogen::builtins::{facts, Facts};
use mitogen::{Router, Target};

use crate::args::{parse_secs, parse_target};
use crate::printer::facts::FactsPrinter;
use crate::run::{each, Call, Fleet, Outcome, TargetReport};

/// What `mitogen facts --help` shows after the options.
pub const FACTS_AFTER_HELP: &str = "\
Output: for each target, a line with its host name, system, kernel, CPUs,
memory free of total, uptime and load, then indented lines: the user the
target runs as (with its groups, time zone and container), one per mounted
file system holding data (free of size), one per network interface with
addresses (loopback left out). --json prints one object per line per
target: {\"target\", \"facts\", \"error\", \"duration_ms\"}, every fact
included (docs/cli.md lists them and where each is read).

Facts are what the target says about itself: read there from /proc, /sys,
/etc and system calls, no program run. Control characters in them are shown
as ^M, ^[, \\x9b, never obeyed.

Exit status:
  0  every target answered
  2  usage error (bad option, bad target syntax, a hosts file that cannot be
     read or has a bad line)
  3  at least one target could not be connected or timed out

Examples:
  mitogen facts local
  mitogen facts web1 web2/sudo --json
  mitogen facts -H web.hosts -j 50 --timeout 10";

/// Arguments of `mitogen facts`.
#[derive(Debug, Args)]
pub struct FactsArgs {
    /// The targets to describe (one or more, here or in a hosts file; up to
    /// -j at once).
    #[arg(required_unless_present = "hosts", value_name = "TARGET", value_parser = parse_target)]
    pub targets: Vec<Target>,

    /// Print one JSON object per target per line instead of text.
    #[arg(long)]
    pub json: bool,

    /// Give up on a target after this many seconds (connecting plus
    /// gathering, from its own start); it then counts as failed (exit
    /// status 3).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub timeout: Option<Duration>,

    /// Which targets, how they are reached, how many at once.
    #[command(flatten)]
    pub session: crate::args::SessionArgs,
}

/// Gathers the facts of every target, printing each as it comes; returns
/// the exit status.
pub fn run(router: &Router, args: FactsArgs, printer: &mut dyn FactsPrinter) -> anyhow::Result<u8> {
    let started = Instant::now();
    let fleet = Fleet::of(args.targets, &args.session, args.timeout, args.json)?;
    let call: Call<Facts> =
        Box::new(|router, target, options| router.connect_call(target, options, facts, ()));
    let reports = each(router, fleet, call, |r| printer.target(r))?;
    printer.summary(&reports, started.elapsed())?;
    printer.finish()?;
    Ok(exit_status(&reports))
}

/// 0 when every target answered, 3 otherwise (see `mitogen facts --help`).
pub fn exit_status(reports: &[TargetReport<Facts>]) -> u8 {
    let all = reports.iter().all(|r| matches!(r.outcome, Outcome::Ran(_)));
    if all {
        0
    } else {
        3
    }
}
