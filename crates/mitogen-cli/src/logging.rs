//! Log output: `tracing` events to stderr, plus the library's per-process log
//! files when `MITOGEN_LOG_DIR` is set.

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;

/// Installs the global subscriber.
///
/// The default level is `warn` so that normal output stays clean; each `-v`
/// raises it one step. `MITOGEN_LOG` (or, if unset, `RUST_LOG`) adds filter
/// directives on top, e.g. `MITOGEN_LOG=mitogen::core=trace` (targets and
/// levels, comma-separated; a bare level sets the default). A string that
/// does not parse is reported and ignored.
///
/// `Targets` rather than `EnvFilter`: the latter's span and field matching
/// pulls in a regex engine, a quarter of a megabyte of every build that
/// crosses each link on a cold connect.
///
/// This must run before any context is started: children inherit the most
/// verbose level wanted here and forward only what the master will show.
pub fn init(verbose: u8) {
    let level = match verbose {
        0 => LevelFilter::WARN,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let directives = std::env::var("MITOGEN_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_default();
    // No directives are no filter: `Targets` parses "" as a directive of
    // its own, whose default level would silence every `-v`.
    let parsed = if directives.trim().is_empty() {
        Targets::new()
    } else {
        directives.parse::<Targets>().unwrap_or_else(|e| {
            eprintln!("mitogen: ignoring MITOGEN_LOG/RUST_LOG {directives:?}: {e}");
            Targets::new()
        })
    };
    let filter = match parsed.default_level() {
        Some(_) => parsed,
        None => parsed.with_default(level),
    };
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(|| crate::printer::log::VisibleLog(std::io::stderr()))
                .with_target(verbose > 0)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(filter),
        )
        .with(mitogen::log_dir_layer())
        .init();
}
