//! Child output and `tracing` events reach the master as events with target
//! `mitogen::remote` and a `context` field.

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use mitogen::Router;
use tracing::Level;

use crate::calls::fail_with;
use crate::capture::{self, Captured};
use crate::util::local;

#[mitogen::remote]
pub fn say(token: String) {
    println!("stdout {token}");
    eprintln!("stderr {token}");
}

#[mitogen::remote]
pub fn run_sh(script: String) -> std::io::Result<i32> {
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .status()?;
    Ok(status.code().unwrap_or(-1))
}

#[mitogen::remote]
pub fn emit_events(token: String) {
    tracing::info!(answer = 42, "info {token}");
    tracing::warn!("warn {token}");
    tracing::debug!("debug {token}");
    tracing::trace!("trace {token}");
}

fn token(what: &str) -> String {
    format!(
        "{what}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )
}

/// Waits for a remote event from `context` whose message is exactly `message`.
fn expect_remote(mark: usize, context: &str, message: &str) -> Result<Captured> {
    capture::wait_for(mark, Duration::from_secs(10), |e| {
        e.target == "mitogen::remote" && e.field("context") == Some(context) && e.message == message
    })
    .with_context(|| {
        let seen: Vec<String> = capture::since(mark)
            .iter()
            .filter(|e| e.target == "mitogen::remote")
            .map(ToString::to_string)
            .collect();
        format!("no remote event {message:?} from {context:?}; remote events seen: {seen:#?}")
    })
}

pub fn child_stdout_and_stderr_reach_master(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let tok = token("out");
    let mark = capture::mark();
    ctx.call(say, (tok.clone(),))?;
    let out = expect_remote(mark, ctx.name(), &format!("stdout {tok}"))?;
    ensure!(out.field("origin") == Some("stdout"), "{out}");
    ensure!(out.level == Level::INFO, "{out}");
    let err = expect_remote(mark, ctx.name(), &format!("stderr {tok}"))?;
    ensure!(err.field("origin") == Some("stderr"), "{err}");
    ensure!(err.level == Level::WARN, "{err}");
    Ok(())
}

pub fn subprocess_output_reaches_master(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let tok = token("sub");
    let mark = capture::mark();
    let code = ctx.call(
        run_sh,
        (format!("echo out {tok}; echo err {tok} >&2; exit 3"),),
    )?;
    ensure!(code == 3, "exit code {code}");
    expect_remote(mark, ctx.name(), &format!("out {tok}"))?;
    expect_remote(mark, ctx.name(), &format!("err {tok}"))?;
    Ok(())
}

pub fn child_tracing_events_reach_master(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let tok = token("ev");
    let mark = capture::mark();
    ctx.call(emit_events, (tok.clone(),))?;
    let info = expect_remote(mark, ctx.name(), &format!("info {tok} answer=42"))?;
    ensure!(info.level == Level::INFO, "{info}");
    ensure!(
        info.field("origin") == Some("integration::logging"),
        "{info}"
    );
    let warn = expect_remote(mark, ctx.name(), &format!("warn {tok}"))?;
    ensure!(warn.level == Level::WARN, "{warn}");
    let debug = expect_remote(mark, ctx.name(), &format!("debug {tok}"))?;
    ensure!(debug.level == Level::DEBUG, "{debug}");
    // The master's subscriber stops at debug, so the child does not send traces.
    std::thread::sleep(Duration::from_millis(100));
    ensure!(
        !capture::since(mark)
            .iter()
            .any(|e| e.message.contains(&format!("trace {tok}"))),
        "a trace event was forwarded although the master does not want it"
    );
    Ok(())
}

pub fn failed_call_no_reply_is_logged(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let tok = token("noreply");
    let mark = capture::mark();
    ctx.call_no_reply(fail_with, (tok.clone(),))?;
    let e = capture::wait_for(mark, Duration::from_secs(10), |e| {
        e.target == "mitogen::remote"
            && e.field("context") == Some(ctx.name())
            && e.message.contains(&tok)
    })
    .context("the failure of a call without reply was not logged")?;
    ensure!(e.level == Level::ERROR, "{e}");
    Ok(())
}

pub fn log_dir_gets_a_file_per_process(router: &Router) -> Result<()> {
    let dir = std::env::temp_dir().join(token("mitogen-logs"));
    std::fs::create_dir_all(&dir)?;
    let r = (|| -> Result<()> {
        let ctx = crate::util::Guard(
            router.local_with(mitogen::Local::new().env("MITOGEN_LOG_DIR", &dir))?,
        );
        let pid = crate::util::pid_of(&ctx)?;
        let tok = token("file");
        ctx.call(emit_events, (tok.clone(),))?;
        let path = dir.join(format!("mitogen.{pid}.log"));
        let found = crate::util::wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&path).is_ok_and(|s| s.contains(&format!("warn {tok}")))
        });
        ensure!(found, "{} does not hold the child's events", path.display());
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    r
}

crate::tests! {
    child_stdout_and_stderr_reach_master,
    subprocess_output_reaches_master,
    child_tracing_events_reach_master,
    failed_call_no_reply_is_logged,
    log_dir_gets_a_file_per_process,
}
