//! The configuration and the first call sent behind the first stage, before
//! anything has come back (`Router::connect_call`): the call has run before
//! the master could have seen the stage's status line, a cache miss with the
//! prelude in front of the upload still works, and `mitogen run`'s way of
//! ending (`Context::dismiss`) leaves no process behind.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context as _, Result};
use mitogen::{ConnectOptions, Router};

use super::{own, uploaded_during, whoami};
use crate::sshd::{self, Sshd, User};
use crate::util::wait_gone;

/// How long the held login shell keeps its command's output back.
const HOLD: Duration = Duration::from_secs(3);

/// A login shell that runs its command with the command's output held back
/// for [`HOLD`]: the stage's status line, the child's greeting and whatever
/// the child answers reach the master only then, while the master's own
/// bytes reach the command at once.
const HELD_SHELL: &str = "/usr/local/bin/mitogen-test-held-shell";

/// The wall clock in milliseconds, where the call runs.
#[mitogen::remote]
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn now_ms() -> u64 {
    wall_ms()
}

/// Writes [`HELD_SHELL`] (the same bytes in every run, replaced atomically:
/// test users are shared between concurrent runs).
fn held_shell() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let text = format!(
        "#!/bin/sh\n[ \"$1\" = -c ] || exit 1\nsh -c \"$2\" | {{ sleep {}; exec cat; }}\n",
        HOLD.as_secs()
    );
    let tmp = format!("{HELD_SHELL}.{}", std::process::id());
    std::fs::write(&tmp, text)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, HELD_SHELL)?;
    Ok(())
}

fn options(sshd: &Sshd) -> ConnectOptions {
    ConnectOptions {
        ssh_config: Some("/dev/null".into()),
        ssh_options: vec![
            format!("IdentityFile={}", sshd.client_key.display()),
            "IdentitiesOnly=yes".into(),
            "StrictHostKeyChecking=no".into(),
            "UserKnownHostsFile=/dev/null".into(),
        ],
        connect_timeout: Some(Duration::from_secs(30)),
        ..Default::default()
    }
}

fn held_user(sshd: &Sshd) -> Result<User> {
    held_shell()?;
    let user = sshd::user("mitogen-held", HELD_SHELL)?;
    sshd.authorize(&user.name)?;
    Ok(user)
}

pub fn first_call_runs_before_the_stage_is_heard(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    let user = held_user(&sshd)?;
    let target = format!("{}@127.0.0.1:{}", user.name, sshd.port);
    let options = options(&sshd);

    // Cold: the prelude waits in front of the upload, which the stage takes
    // after skipping it; the call then comes after the greeting.
    user.clear_cache()?;
    let ((ctx, first), up) = uploaded_during(router, || {
        Ok(router.connect_call(target.as_str(), &options, whoami, ())?)
    })?;
    ensure!(up > 0, "a cold connect uploaded nothing");
    let w = first.get().context("the first call of a cold connect")?;
    ensure!(w.uid == user.uid, "runs as uid {}", w.uid);
    ctx.shutdown_timeout(Duration::from_secs(10))?;

    // Warm: the configuration and the call went out with the stage, so the
    // call ran while the stage's output was still held back, before the
    // master could have sent anything in answer to it.
    let ((ctx, first), up) = uploaded_during(router, || {
        Ok(router.connect_call(target.as_str(), &options, wall_ms, ())?)
    })?;
    let connected = now_ms();
    ensure!(up == 0, "a warm connect uploaded {up} bytes");
    let ran = first.get().context("the first call of a warm connect")?;
    ensure!(
        ran < connected,
        "the first call ran at {ran}, {} ms after the connect returned at {connected}: \
         it waited for the stage's status line",
        ran - connected
    );
    // And it is a context like any other.
    ensure!(ctx.call(whoami, ())?.uid == user.uid, "later call");
    ctx.shutdown_timeout(Duration::from_secs(10))?;
    Ok(())
}

pub fn dismissed_context_leaves_nothing_behind(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    let user = sshd::user("mitogen-t1", "/bin/sh")?;
    sshd.authorize(&user.name)?;
    let target = format!("{}@127.0.0.1:{}", user.name, sshd.port);
    let (ctx, first) = router.connect_call(target.as_str(), &options(&sshd), whoami, ())?;
    let w = first.get()?;
    ensure!(
        w.exe.ends_with(&own().hash),
        "runs {} rather than the cached build",
        w.exe
    );
    // Told to go and not waited for: the remote process exits by itself.
    ctx.dismiss();
    ensure!(
        wait_gone(w.pid, Duration::from_secs(10)),
        "the remote process {} outlived its dismissal",
        w.pid
    );
    Ok(())
}

crate::tests! {
    first_call_runs_before_the_stage_is_heard => 180,
    dismissed_context_leaves_nothing_behind => 120,
}
