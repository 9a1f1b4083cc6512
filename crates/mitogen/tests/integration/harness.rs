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

/// The tests of one module, in the order its [`tests!`](crate::tests) block
/// lists them. `path` is the module's path as `module_path!` gives it
/// (`integration::ssh::cache`).
pub struct Module {
    pub path: &'static str,
    pub tests: &'static [Test],
}

/// Every module's tests, gathered at link time (as the library gathers remote
/// functions): a module registers by ending with a `crate::tests! { … }`
/// block, and nothing else keeps a list.
#[linkme::distributed_slice]
pub static MODULES: [Module];

/// Registers the tests of the module it ends, in run order, each with the
/// default deadline or `=> SECONDS`:
///
/// ```ignore
/// crate::tests! {
///     typed_call,
///     large_frames_through_a_chain_both_ways => 120,
/// }
/// ```
///
/// A test is named by its path below the crate (`calls::typed_call`), which
/// is what filters match. One block per module.
#[macro_export]
macro_rules! tests {
    ($($name:ident $(=> $secs:expr)?),* $(,)?) => {
        #[linkme::distributed_slice($crate::harness::MODULES)]
        static __INTEGRATION_TESTS: $crate::harness::Module = $crate::harness::Module {
            path: module_path!(),
            tests: &[$($crate::harness::Test {
                name: concat!(module_path!(), "::", stringify!($name)),
                run: $name,
                timeout: $crate::tests!(@timeout $($secs)?),
            }),*],
        };
    };
    (@timeout) => { $crate::harness::DEFAULT_TIMEOUT };
    (@timeout $secs:expr) => { std::time::Duration::from_secs($secs) };
}

/// Every registered test, named below the crate (`calls::typed_call`), in a
/// fixed order whatever the linker did: modules by path, and within a module
/// in the order its block lists them.
pub fn registered() -> Vec<Test> {
    let mut modules: Vec<&Module> = MODULES.iter().collect();
    modules.sort_by_key(|m| m.path);
    let strip = |n: &'static str| n.split_once("::").map_or(n, |(_, rest)| rest);
    modules
        .into_iter()
        .flat_map(|m| m.tests.iter())
        .map(|t| Test {
            name: strip(t.name),
            run: t.run,
            timeout: t.timeout,
        })
        .collect()
}

// The rule for tests that cannot run here is the one both crates' tests share.
pub use mitogen_testkit::skip::{cannot_run, Skipped};

/// Parts of tests skipped so far in this run (see [`skip_part`]).
static PARTS_SKIPPED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// A part of the calling test cannot run here because `missing`: `Ok` when
/// skipping is allowed (the test goes on and is reported as skipped, not
/// passed), the error of [`cannot_run`] otherwise.
pub fn skip_part(missing: impl std::fmt::Display) -> anyhow::Result<()> {
    let err = cannot_run(&missing);
    if err.is::<Skipped>() {
        println!("    skipped part: {missing}");
        PARTS_SKIPPED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(missing.to_string());
        Ok(())
    } else {
        Err(err)
    }
}

/// How one test ended.
enum Outcome {
    Passed,
    Skipped(String),
    Failed(String),
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

/// Runs one test on its own thread.
fn run_one(t: &Test, router: &Router) -> Outcome {
    let (tx, rx) = mpsc::channel();
    let router = router.clone();
    let f = t.run;
    let parts_before = PARTS_SKIPPED.lock().map_or(0, |p| p.len());
    let spawned = std::thread::Builder::new()
        .name(t.name.to_owned())
        .spawn(move || {
            let r = catch_unwind(AssertUnwindSafe(|| f(&router)));
            let _ = tx.send(match r {
                Ok(Ok(())) => Outcome::Passed,
                Ok(Err(e)) => match e.chain().find_map(|c| c.downcast_ref::<Skipped>()) {
                    Some(Skipped(why)) => Outcome::Skipped(why.clone()),
                    None => Outcome::Failed(format!("{e:#}")),
                },
                Err(p) => Outcome::Failed(format!("panicked: {}", panic_message(&*p))),
            });
        });
    if let Err(e) = spawned {
        return Outcome::Failed(format!("cannot start a thread: {e}"));
    }
    match rx.recv_timeout(t.timeout) {
        Ok(Outcome::Passed) => {
            let parts = PARTS_SKIPPED.lock().map_or(Vec::new(), |p| p.clone());
            match parts.get(parts_before..) {
                Some(skipped) if !skipped.is_empty() => {
                    Outcome::Skipped(format!("in part: {}", skipped.join("; ")))
                }
                _ => Outcome::Passed,
            }
        }
        Ok(other) => other,
        // The thread is left behind: nothing can stop it, and the run goes on.
        Err(mpsc::RecvTimeoutError::Timeout) => {
            Outcome::Failed(format!("timed out after {:?}", t.timeout))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Outcome::Failed("the test thread vanished".into())
        }
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
    let (mut passed, mut skipped, mut failed) = (0usize, 0usize, Vec::new());
    for t in selected {
        let mark = capture::mark();
        let started = Instant::now();
        let r = run_one(t, router);
        let ms = started.elapsed().as_millis();
        match r {
            Outcome::Passed => {
                passed += 1;
                println!("test {} ... ok ({ms} ms)", t.name);
            }
            Outcome::Skipped(why) => {
                skipped += 1;
                println!("test {} ... skipped ({ms} ms): {why}", t.name);
            }
            Outcome::Failed(e) => {
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
    if skipped == 0 {
        println!("{passed} passed, {} failed", failed.len());
    } else {
        println!(
            "{passed} passed, {} failed, {skipped} skipped",
            failed.len()
        );
    }
    failed.len()
}
