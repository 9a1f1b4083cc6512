//! Running `mitogen` under a pseudo-terminal, as on an operator's screen.

use std::path::Path;
use std::process::Command;

/// `mitogen ARGS` under a pty (script(1)), run in `dir`: what the terminal
/// got, stdout and stderr together; `None` (the test returns) where
/// script(1) is missing and skipping is allowed (docs/testing.md).
pub fn on_a_terminal(dir: &Path, args: &str) -> Option<String> {
    if !Path::new("/usr/bin/script").exists() {
        match mitogen_testkit::skip::cannot_run("script(1) (util-linux) for a pty")
            .downcast::<mitogen_testkit::skip::Skipped>()
        {
            Ok(skipped) => {
                eprintln!("{skipped}");
                return None;
            }
            Err(e) => panic!("{e:#}"),
        }
    }
    let command = format!("{} {args}", env!("CARGO_BIN_EXE_mitogen"));
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(dir)
        .env_remove("MITOGEN_LOG")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("starting script");
    assert!(out.status.success(), "{out:?}");
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}
