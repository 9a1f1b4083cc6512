//! Password logins, against an sshd that takes passwords and no keys: the
//! right password connects without showing in any process's argv or
//! environment, a wrong one or none fails at once, and an unknown host key
//! question is refused.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context as _, Result};
use mitogen::HostKeyPolicy;
use mitogen::{Router, TransportFailure};

use super::{connect_as, hop, kind_failure, plus_one, uploaded_during};
use crate::sshd::{self, Sshd, User};

/// The account that logs in with a password, and its password.
const PW_SSH_USER: &str = "mitogen-pw";
const PW_SSH_PASSWORD: &str = "ssh-Pw-Sekret-2718";

/// An sshd where a password is the only way in (`UsePAM no` stays: sshd
/// checks the hash in `/etc/shadow`, which [`sshd::user_with_password`] sets).
fn password_sshd() -> Result<(Sshd, User)> {
    let sshd = Sshd::start_with(&["PasswordAuthentication yes", "PubkeyAuthentication no"])?;
    let user = sshd::user_with_password(PW_SSH_USER, "/bin/sh", PW_SSH_PASSWORD)?;
    Ok((sshd, user))
}

/// Makes the connection attempt `connect`, which must fail within `limit`
/// with a transport error of kind `want` naming `hop` (`what` says what was
/// tried); returns the error's text and how long it took.
fn fails_fast(
    connect: impl FnOnce() -> mitogen::Result<mitogen::Context>,
    hop: &str,
    want: TransportFailure,
    limit: Duration,
    what: &str,
) -> Result<(String, Duration)> {
    let started = Instant::now();
    let text = kind_failure(connect(), hop, want)?;
    let took = started.elapsed();
    ensure!(took < limit, "{what} took {took:?} to fail: {text}");
    Ok((text, took))
}

/// Runs `f` while another thread scans every process's argv and environment
/// for `secret`; fails if it was seen.
fn scanning_for<T>(secret: &str, f: impl FnOnce() -> T) -> Result<T> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = Arc::new(AtomicBool::new(false));
    let scanner = {
        let (done, secret) = (done.clone(), secret.to_owned());
        std::thread::spawn(move || {
            let (mut leaks, mut scans) = (Vec::new(), 0u32);
            loop {
                leaks.extend(crate::switch_user::leaking_processes(&[&secret]));
                scans += 1;
                if done.load(Ordering::Relaxed) {
                    return (leaks, scans);
                }
                std::thread::sleep(Duration::from_millis(3));
            }
        })
    };
    let t = f();
    done.store(true, Ordering::Relaxed);
    let (leaks, scans) = scanner.join().map_err(|_| anyhow!("scanner panicked"))?;
    ensure!(scans > 1, "/proc was scanned {scans} times only");
    ensure!(
        leaks.is_empty(),
        "the password is visible in /proc: {leaks:?}"
    );
    Ok(t)
}

pub fn password_login(router: &Router) -> Result<()> {
    let (sshd, user) = password_sshd()?;
    // The scan does find a password where it would be visible.
    let mut control = Command::new("sleep")
        .arg("5")
        .env("CONTROL", PW_SSH_PASSWORD)
        .spawn()?;
    let seen = scanning_for(PW_SSH_PASSWORD, || {
        std::thread::sleep(Duration::from_millis(300))
    });
    let _ = control.kill();
    let _ = control.wait();
    ensure!(
        seen.is_err_and(|e| e.to_string().contains("is visible")),
        "the /proc scan does not see a password in an environment"
    );

    user.clear_cache()?;
    let ssh = sshd
        .ssh_without_key(&user.name)
        .password(PW_SSH_PASSWORD)
        .connect_timeout(Duration::from_secs(30));
    let (ctx, _) = scanning_for(PW_SSH_PASSWORD, || connect_as(router, ssh, &user))?
        .with_context(|| format!("with the right password; sshd log:\n{}", sshd.log_tail()))?;
    ensure!(
        ctx.name() == hop(&user.name, &sshd),
        "context named {:?}",
        ctx.name()
    );
    ensure!(ctx.call(plus_one, (1,))? == 2, "wrong answer");
    drop(ctx);
    ensure!(
        sshd.log_tail().contains("Accepted password"),
        "sshd did not log a password login:\n{}",
        sshd.log_tail()
    );

    // Warm: the cached program starts behind the same prompt.
    let ssh = sshd.ssh_without_key(&user.name).password(PW_SSH_PASSWORD);
    let ((ctx, _), up) = uploaded_during(router, || {
        scanning_for(PW_SSH_PASSWORD, || connect_as(router, ssh, &user))?
    })?;
    ensure!(up == 0, "the second password login uploaded {up} bytes");
    drop(ctx);
    Ok(())
}

pub fn wrong_password_is_authentication_failed(router: &Router) -> Result<()> {
    let (sshd, user) = password_sshd()?;
    let timeout = Duration::from_secs(30);
    let ssh = sshd
        .ssh_without_key(&user.name)
        .password("not-the-password")
        .connect_timeout(timeout);
    let (text, took) = fails_fast(
        || router.ssh(ssh),
        &hop(&user.name, &sshd),
        TransportFailure::AuthenticationFailed,
        Duration::from_secs(5),
        &format!("a wrong password (connect timeout {timeout:?})"),
    )?;
    ensure!(
        sshd.log_tail().contains("Failed password"),
        "sshd saw no password attempt:\n{}",
        sshd.log_tail()
    );
    println!("    {text} after {took:?}");
    Ok(())
}

pub fn no_password_is_password_required(router: &Router) -> Result<()> {
    let (sshd, user) = password_sshd()?;
    let ssh = sshd
        .ssh_without_key(&user.name)
        .connect_timeout(Duration::from_secs(30));
    let (text, took) = fails_fast(
        || router.ssh(ssh),
        &hop(&user.name, &sshd),
        TransportFailure::PasswordRequired,
        Duration::from_secs(3),
        "no password",
    )?;
    println!("    {text} after {took:?}");
    Ok(())
}

/// With a password, ssh is not in batch mode: an unknown host key under the
/// configuration's policy (`ask`) makes it ask on the terminal. That question
/// is refused at once, not left to the connect timeout.
pub fn password_login_with_unknown_host_key(router: &Router) -> Result<()> {
    let (sshd, user) = password_sshd()?;
    let empty = sshd.known_hosts("known_empty", None)?;
    let ssh = sshd
        .ssh_without_key(&user.name)
        .password(PW_SSH_PASSWORD)
        .host_key_policy(HostKeyPolicy::FromConfig)
        .ssh_args([
            "-o".to_owned(),
            format!("UserKnownHostsFile={}", empty.display()),
            "-o".to_owned(),
            "GlobalKnownHostsFile=/dev/null".to_owned(),
        ])
        .connect_timeout(Duration::from_secs(30));
    let (text, took) = fails_fast(
        || router.ssh(ssh),
        &hop(&user.name, &sshd),
        TransportFailure::HostKeyUnknown,
        Duration::from_secs(5),
        "the host key question",
    )?;
    ensure!(
        std::fs::read_to_string(&empty)?.trim().is_empty(),
        "the unknown key was accepted into known_hosts"
    );
    // ssh's question is quoted as it was asked: the fingerprint is base64.
    let listing = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(sshd.dir.join("host_ed25519.pub"))
        .output()?;
    let listing = String::from_utf8_lossy(&listing.stdout);
    let fingerprint = listing
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow!("no fingerprint from ssh-keygen: {listing:?}"))?;
    ensure!(
        text.contains(fingerprint),
        "the error does not show the fingerprint {fingerprint}: {text}"
    );
    println!("    {text} after {took:?}");
    Ok(())
}

/// In a target string, an ssh hop's login password is given by the hop's
/// path (`ConnectOptions::hop_password`) and reaches that hop only.
pub fn password_login_from_a_target_string(router: &Router) -> Result<()> {
    let (sshd, user) = password_sshd()?;
    let hop_text = hop(&user.name, &sshd);
    let target: mitogen::Target = format!("{hop_text}/local").parse()?;
    let base = mitogen::ConnectOptions {
        ssh_config: Some("/dev/null".into()),
        ssh_options: vec![
            "StrictHostKeyChecking=no".into(),
            "UserKnownHostsFile=/dev/null".into(),
            "PubkeyAuthentication=no".into(),
        ],
        connect_timeout: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    let options = base.clone().hop_password(hop_text.clone(), PW_SSH_PASSWORD);
    let ctx = scanning_for(PW_SSH_PASSWORD, || router.connect_with(&target, &options))??;
    let ctx = crate::util::Guard(ctx);
    ensure!(ctx.call(plus_one, (1,))? == 2, "wrong answer");
    drop(ctx);
    // The password of the target's one switch-user hop is not the login's.
    let shared = mitogen::ConnectOptions {
        password: Some(PW_SSH_PASSWORD.into()),
        ..base
    };
    fails_fast(
        || router.connect_with(&target, &shared),
        &hop_text,
        TransportFailure::PasswordRequired,
        Duration::from_secs(5),
        "a shared password and an ssh login",
    )?;
    Ok(())
}

crate::tests! {
    password_login => 120,
    wrong_password_is_authentication_failed,
    no_password_is_password_required,
    password_login_with_unknown_host_key,
    password_login_from_a_target_string => 120,
}
