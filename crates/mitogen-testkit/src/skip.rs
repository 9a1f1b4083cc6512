//! The one rule for a test that cannot run on this machine (not root, a tool
//! missing): it fails, saying what is missing, unless the environment allows
//! skipping, and then it is reported as skipped. Tests never pass without
//! running.

/// Set to `1` to let a test that cannot run here be reported as skipped
/// rather than failed. Never set in CI, and ignored when `CI=true`: there
/// nothing may skip.
pub const ALLOW_SKIP_ENV: &str = "MITOGEN_TEST_ALLOW_SKIP";

/// Whether this run lets tests that cannot run here be skipped.
pub fn skip_allowed() -> bool {
    std::env::var(ALLOW_SKIP_ENV).is_ok_and(|v| v == "1")
        && !std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The error of a test that cannot run here and may be skipped: a runner
/// that finds it in an error's chain reports the test as skipped, with the
/// reason.
#[derive(Debug)]
pub struct Skipped(pub String);

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "skipped: {}", self.0)
    }
}

impl std::error::Error for Skipped {}

/// The error for a test that cannot run here because `missing` (what it
/// needs and lacks): a failure saying so, or [`Skipped`] when
/// [`skip_allowed`].
pub fn cannot_run(missing: impl std::fmt::Display) -> anyhow::Error {
    if skip_allowed() {
        Skipped(missing.to_string()).into()
    } else {
        anyhow::anyhow!("cannot run here: {missing} (set {ALLOW_SKIP_ENV}=1 to skip instead)")
    }
}
