//! A small test runner for a `harness = false` test binary.
//!
//! libtest cannot be used here: a child context is this same executable started
//! in child mode, so `main` must go through `mitogen::run`. Each test runs on its
//! own thread with a deadline, so a hang fails that test instead of hanging CI.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mitogen::Router;

use crate::capture;

/// A test: a name, the function, and how long it may take.
pub struct Test {
    pub name: &'static str,
    pub run: fn(&Router) -> anyhow::Result<()>,
    pub timeout: Duration,
}

/// Default time a test may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds a [`Test`] from a path, with an optional timeout in seconds.
#[macro_export]
macro_rules! test {
    ($path:path) => {
        $crate::harness::Test {
            name: stringify!($path),
            run: $path,
            timeout: $crate::harness::DEFAULT_TIMEOUT,
        }
    };
    ($path:path, $secs:expr) => {
        $crate::harness::Test {
            name: stringify!($path),
            run: $path,
            timeout: std::time::Duration::from_secs($secs),
        }
    };
}

/// What was asked for on the command line (a subset of libtest's options;
/// the others are accepted and ignored, so `cargo test -- --nocapture` works).
#[derive(Default)]
struct Options {
    filters: Vec<String>,
    skip: Vec<String>,
    exact: bool,
    list: bool,
    ignored_only: bool,
}

/// libtest options that take a value in the next argument.
const WITH_VALUE: &[&str] = &[
    "--test-threads",
    "--skip",
    "--color",
    "--format",
    "--logfile",
    "--shuffle-seed",
    "-Z",
];

fn parse_args() -> Options {
    let mut o = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--exact" {
            o.exact = true;
        } else if a == "--list" {
            o.list = true;
        } else if a == "--ignored" {
            o.ignored_only = true;
        } else if let Some(v) = a.strip_prefix("--skip=") {
            o.skip.push(v.to_owned());
        } else if WITH_VALUE.contains(&a.as_str()) {
            let v = args.next().unwrap_or_default();
            if a == "--skip" {
                o.skip.push(v);
            }
        } else if a.starts_with('-') {
            // --nocapture, --quiet, --test-threads=N, ...: nothing to do.
        } else {
            o.filters.push(a);
        }
    }
    o
}

impl Options {
    fn selects(&self, name: &str) -> bool {
        if self.ignored_only {
            return false;
        }
        let hit = |f: &String| {
            if self.exact {
                name == f
            } else {
                name.contains(f.as_str())
            }
        };
        (self.filters.is_empty() || self.filters.iter().any(hit))
            && !self.skip.iter().any(|s| name.contains(s.as_str()))
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_owned()
    }
}

/// Runs one test on its own thread; `Err` explains a failure.
fn run_one(t: &Test, router: &Router) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    let router = router.clone();
    let f = t.run;
    let spawned = std::thread::Builder::new()
        .name(t.name.to_owned())
        .spawn(move || {
            let r = catch_unwind(AssertUnwindSafe(|| f(&router)));
            let _ = tx.send(match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(p) => Err(format!("panicked: {}", panic_message(&*p))),
            });
        });
    if let Err(e) = spawned {
        return Err(format!("cannot start a thread: {e}"));
    }
    match rx.recv_timeout(t.timeout) {
        Ok(r) => r,
        // The thread is left behind: nothing can stop it, and the run goes on.
        Err(mpsc::RecvTimeoutError::Timeout) => Err(format!("timed out after {:?}", t.timeout)),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err("the test thread vanished".into()),
    }
}

/// Runs the selected tests, prints one line each and a summary, and returns
/// the number of failures.
pub fn run_tests(router: &Router, tests: &[Test]) -> usize {
    let opts = parse_args();
    let selected: Vec<&Test> = tests.iter().filter(|t| opts.selects(t.name)).collect();
    if opts.list {
        for t in &selected {
            println!("{}: test", t.name);
        }
        return 0;
    }
    println!("running {} tests", selected.len());
    let (mut passed, mut failed) = (0usize, Vec::new());
    for t in selected {
        let mark = capture::mark();
        let started = Instant::now();
        let r = run_one(t, router);
        let ms = started.elapsed().as_millis();
        match r {
            Ok(()) => {
                passed += 1;
                println!("test {} ... ok ({ms} ms)", t.name);
            }
            Err(e) => {
                println!("test {} ... FAILED ({ms} ms): {e}", t.name);
                for line in capture::warnings_since(mark, 40) {
                    println!("    log: {line}");
                }
                failed.push(t.name);
            }
        }
    }
    if !failed.is_empty() {
        println!("failures:");
        for f in &failed {
            println!("    {f}");
        }
    }
    println!("{passed} passed, {} failed", failed.len());
    failed.len()
}
