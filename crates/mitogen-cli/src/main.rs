//! The `mitogen` command: run commands in contexts, copy files to and from
//! them, and measure them.
//!
//! Layout: [`args`] parses the command line, [`run`], [`transfer`] (copy,
//! fetch), [`facts`] and [`bench`] do the work
//! and produce reports, [`printer`] formats them. This file only wires them
//! together. `main` goes through `#[mitogen::main]` because this executable is
//! also what runs in every context it starts.

mod args;
mod become_user;
mod bench;
mod facts;
mod fleet;
mod logging;
mod password;
mod printer;
mod reuse;
mod run;
mod transfer;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

/// Exit status for a target or benchmark that failed (see `mitogen run --help`).
const EXIT_FAILED: u8 = 3;

#[mitogen::main]
fn main(router: mitogen::Router) -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.verbose);
    match dispatch(&router, cli) {
        Ok(status) => ExitCode::from(status),
        // The reader went away (e.g. `| head`): stop quietly, as other tools do.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // A benchmark's failure may quote the target (a remote error).
            eprintln!("mitogen: {}", printer::human::visible(&format!("{e:#}")));
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Runs the chosen subcommand and returns the process exit status.
fn dispatch(router: &mitogen::Router, cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Run(mut args) => {
            args.targets = prepare("run", &mut args.session, args.targets);
            let mut printer = printer::new(args.json);
            run::run(router, args, printer.as_mut())
        }
        Command::Bench(args) if args.files_only => {
            let report = bench::files::run_only(router, &args)?;
            let mut printer = printer::new(args.json);
            printer.bench_files(&args.target.to_string(), &report)?;
            printer.finish()?;
            Ok(0)
        }
        Command::Bench(args) => {
            let report = bench::run(router, &args)?;
            let mut printer = printer::new(args.json);
            printer.bench(&args.target.to_string(), &report)?;
            printer.finish()?;
            Ok(0)
        }
        Command::Copy(mut args) => {
            args.targets = prepare("copy", &mut args.common.session, args.targets);
            let plan = transfer::copy::plan(&args.paths).unwrap_or_else(|e| usage("copy", &e));
            let mut printer = printer::transfer::new(args.common.json);
            transfer::copy::run(router, args, &plan, printer.as_mut())
        }
        Command::Fetch(mut args) => {
            args.targets = prepare("fetch", &mut args.common.session, args.targets);
            let (dir, plan) = transfer::fetch::plan(&args.paths, args.flat, args.targets.len())
                .unwrap_or_else(|e| usage("fetch", &e));
            let mut printer = printer::transfer::new(args.common.json);
            transfer::fetch::run(router, args, &dir, &plan, printer.as_mut())
        }
        Command::Facts(mut args) => {
            args.targets = prepare("facts", &mut args.session, args.targets);
            let mut printer = printer::facts::new(args.json);
            facts::run(router, args, printer.as_mut())
        }
    }
}

/// The targets of the hosts files, then those of the command line, with
/// the `--become` hop added, and ssh's options set for connection reuse
/// ([`SessionArgs::prepare`](args::SessionArgs::prepare)); a hosts file that
/// cannot be read or has a bad line, a bad `--become-user` or
/// `MITOGEN_REUSE` is a usage error.
fn prepare(
    subcommand: &str,
    session: &mut args::SessionArgs,
    given: Vec<mitogen::Target>,
) -> Vec<mitogen::Target> {
    session
        .prepare(given)
        .unwrap_or_else(|e| usage(subcommand, &e))
}

/// Ends the process with clap's usage error (exit status 2) for what the
/// parser itself cannot see (two sources with one name, `--flat` with
/// several targets).
fn usage(subcommand: &str, message: &str) -> ! {
    use clap::CommandFactory;
    let mut cli = Cli::command();
    let cmd = cli.find_subcommand_mut(subcommand).cloned();
    cmd.unwrap_or(cli)
        .error(clap::error::ErrorKind::ValueValidation, message)
        .exit()
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
