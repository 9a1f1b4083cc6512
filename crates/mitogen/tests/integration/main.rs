//! Integration tests of the core against real processes: every context here is
//! this test executable started again in child mode, so `main` goes through
//! `mitogen::run` and runs the tests itself (see `harness`).
//!
//! Run with `cargo test -p mitogen --test integration [-- NAME]`.
//! `MITOGEN_TEST_LOG=1` echoes every event of the master to stderr.
//!
//! There is no list of tests here: each module ends with a `crate::tests! { … }`
//! block naming its tests (`name` or `name => SECONDS` for a longer deadline),
//! which registers them at link time (see `harness`). A new module needs only
//! its `mod` line below and that block. An old table line
//! `test!(calls::typed_call, 120)` becomes the line `typed_call => 120,` in the
//! block at the end of `calls.rs`.

mod async_api;
mod bad_input;
mod bare_host;
mod call_shape;
mod calls;
mod capture;
mod chains;
mod commands;
mod containers;
mod errors;
mod facts;
mod files;
mod flow;
mod harness;
mod hooks;
mod hostile_switch;
mod hostile_tree;
mod leaks;
mod lifecycle;
mod logging;
mod namespaces;
mod netcut;
mod relay;
mod routing;
mod security;
mod services;
mod sharing;
mod ssh;
mod ssh_arch;
mod sshd;
mod sshd_restart;
mod switch_user;
mod unix;
mod util;

use tracing_subscriber::prelude::*;

fn main() {
    let code = mitogen::run(|router| {
        if std::env::var_os(lifecycle::INTERMEDIATE_ENV).is_some() {
            return lifecycle::intermediate_main(&router);
        }
        if std::env::var_os(lifecycle::DETACH_ENV).is_some() {
            return lifecycle::detach_main(&router);
        }
        if std::env::var_os(leaks::CLEAN_MASTER_ENV).is_some() {
            return leaks::clean_master_main(&router);
        }
        if std::env::var_os(unix::CLIENT_ENV).is_some() {
            return unix::client_main();
        }
        if let Ok(scenario) = std::env::var(ssh::unreachable::NETNS_ENV) {
            return ssh::unreachable::netns_main(&router, &scenario);
        }
        if let Ok(scenario) = std::env::var(switch_user::SCENARIO_ENV) {
            return switch_user::inner_main(&router, &scenario);
        }
        // Children take their log level from the master's subscriber: debug
        // keeps the per-message trace events off while still forwarding logs.
        tracing_subscriber::registry()
            .with(capture::CaptureLayer::new())
            .with(tracing_subscriber::filter::LevelFilter::DEBUG)
            .init();
        let tests = harness::registered();
        let failed = harness::run_tests(&router, &tests);
        switch_user::cleanup();
        failed
    });
    std::process::exit(if code == 0 { 0 } else { 1 });
}
