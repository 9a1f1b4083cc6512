//! A fresh directory per test, and the checks every CLI test file makes of
//! a finished `mitogen`.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{mitogen, Output};

/// A fresh directory for one test, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// `mitogen-cli-NAME-PID-N` under the system's temporary directory,
    /// readable by other users (an ssh test's login may look inside).
    pub fn new(name: &str) -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mitogen-cli-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Scratch(dir)
    }

    /// `rel` in this directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    /// `rel` in this directory, as an argument.
    pub fn s(&self, rel: &str) -> String {
        self.path(rel).display().to_string()
    }

    /// Writes `text` to the file `rel` and returns its path.
    pub fn file(&self, rel: &str, text: &str) -> String {
        std::fs::write(self.path(rel), text).unwrap();
        self.s(rel)
    }

    /// Runs `mitogen ARGS`, its output files kept in this directory.
    pub fn run(&self, args: &[&str]) -> Output {
        mitogen(&self.0, &strings(args))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `args` as owned strings.
pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Fails, showing the output, unless `out` ended with status `code`.
#[track_caller]
pub fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.code,
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
}

/// Fails, showing `text` (a finished command's output), unless it contains
/// `want`.
#[track_caller]
pub fn assert_has(text: &str, want: &str) {
    assert!(text.contains(want), "{want:?} not in:\n{text}");
}

/// The JSON records of a `--json` output, one per line, in the order they
/// came.
#[track_caller]
pub fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Makes the account `name` (root needed, as for the ssh tests), or fails
/// saying why it cannot; `None` where that is impossible and skipping is
/// allowed (docs/testing.md).
pub fn test_user(name: &str) -> Option<mitogen_testkit::sshd::User> {
    match mitogen_testkit::sshd::user(name, "/bin/sh") {
        Ok(u) => Some(u),
        Err(e) => match e.downcast_ref::<mitogen_testkit::skip::Skipped>() {
            Some(skipped) => {
                eprintln!("{skipped}");
                None
            }
            None => panic!("{e:#}"),
        },
    }
}
