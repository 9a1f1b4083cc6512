//! What `run`, `copy` and `fetch` share for fleets of targets: targets read
//! from hosts files ([`hosts`]), a limit on the targets in flight at once
//! ([`FleetArgs::forks`], [`window`]), and shared hops held for the whole
//! command so that the limit never makes a jump host be crossed twice
//! ([`holds`]), and the progress line of `run` ([`progress`]).

pub mod holds;
pub mod hosts;
pub mod progress;
pub mod window;

use std::path::PathBuf;

use clap::{ArgAction, Args};
use mitogen::Target;

/// Targets in flight at once unless `-j` says otherwise: fewer than an sshd's
/// default `MaxStartups` (10:30:100, which refuses some of a burst of more
/// than 10 unauthenticated connections to one host), and few enough that
/// the ssh processes and descriptors stay far from the usual limits.
pub const DEFAULT_FORKS: usize = 10;

/// The fleet options of `run`, `copy` and `fetch`.
#[derive(Clone, Debug, Args)]
pub struct FleetArgs {
    /// Read targets from FILE, one per line (the syntax of TARGET, chains
    /// included; blank lines and `#` comments ignored; `-` is standard
    /// input). Repeatable; the files' targets come first, in order, then
    /// those given as arguments.
    #[arg(short = 'H', long = "hosts", value_name = "FILE", action = ArgAction::Append)]
    pub hosts: Vec<PathBuf>,

    /// At most N targets connecting or working at once (default 10); the
    /// next starts as soon as one is done. Hops shared by several targets
    /// are connected once and kept for the whole command.
    #[arg(short = 'j', long = "forks", value_name = "N", default_value_t = DEFAULT_FORKS,
          value_parser = parse_forks)]
    pub forks: usize,
}

impl FleetArgs {
    /// The targets of the hosts files, in order, followed by `given` (the
    /// command line's). An unreadable file, a bad line, or no target at all
    /// is an error for a usage message.
    pub fn targets(&self, given: Vec<Target>) -> Result<Vec<Target>, String> {
        let mut all = Vec::new();
        for file in &self.hosts {
            all.extend(hosts::read(file)?);
        }
        all.extend(given);
        if all.is_empty() {
            return Err("no targets: give at least one TARGET or a hosts file with one".into());
        }
        Ok(all)
    }
}

fn parse_forks(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a positive number of targets")),
    }
}
