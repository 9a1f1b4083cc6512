//! Connections over ssh that must fail, each with a typed error naming the
//! hop: a wrong key, a closed port, host key policies, a login shell that is
//! not a shell, a remote that hangs, and ssh dying or stalling mid-upload;
//! and one that must not: a banner on stdout before the stage.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context as _, Result};
use mitogen::Compression;
use mitogen::HostKeyPolicy;
use mitogen::{Error, Router, Ssh, TransportFailure};

use super::{check_entry, connect_as, expect_kind, failure, hop, own, plus_one};
use crate::sshd::{self, Sshd, User};
use crate::util::{kill9, wait_until};

pub fn wrong_key_is_authentication_failed(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    let ssh = sshd.ssh("root")?.identity_file(&sshd.wrong_key);
    expect_kind(
        router.ssh(ssh),
        &hop("root", &sshd),
        TransportFailure::AuthenticationFailed,
    )
}

pub fn closed_port_is_connection_refused(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    let port = sshd::closed_port()?;
    let ssh = sshd.ssh("root")?.port(port);
    expect_kind(
        router.ssh(ssh),
        &format!("root@127.0.0.1:{port}"),
        TransportFailure::ConnectionRefused,
    )
}

pub fn host_key_policies(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    let root = sshd::root()?;
    let name = hop("root", &sshd);
    let enforce = |known: &Path| -> Result<Ssh> {
        Ok(sshd
            .ssh("root")?
            .host_key_policy(HostKeyPolicy::Enforce)
            .ssh_args([
                "-o".to_owned(),
                format!("UserKnownHostsFile={}", known.display()),
                "-o".to_owned(),
                "GlobalKnownHostsFile=/dev/null".to_owned(),
            ]))
    };

    // The right key is accepted, so the two refusals below are about the key.
    let right = sshd.known_hosts("known_right", Some(&sshd.host_pub))?;
    connect_as(router, enforce(&right)?, &root).context("known host key under Enforce")?;

    let wrong = sshd.known_hosts("known_wrong", Some(&sshd.other_pub))?;
    expect_kind(
        router.ssh(enforce(&wrong)?),
        &name,
        TransportFailure::HostKeyMismatch,
    )
    .context("a different key in known_hosts")?;

    let empty = sshd.known_hosts("known_empty", None)?;
    expect_kind(
        router.ssh(enforce(&empty)?),
        &name,
        TransportFailure::HostKeyUnknown,
    )
    .context("an empty known_hosts")?;

    // AcceptNew takes the unknown key and remembers it.
    let fresh = sshd.known_hosts("known_fresh", None)?;
    let accept = sshd
        .ssh("root")?
        .host_key_policy(HostKeyPolicy::AcceptNew)
        .ssh_args([
            "-o".to_owned(),
            format!("UserKnownHostsFile={}", fresh.display()),
        ]);
    connect_as(router, accept, &root).context("AcceptNew")?;
    let remembered = std::fs::read_to_string(&fresh)?;
    let key_b64 = sshd.host_pub.split_whitespace().nth(1).unwrap_or("?");
    ensure!(
        remembered.contains(key_b64),
        "AcceptNew did not remember the key: {remembered:?}"
    );
    Ok(())
}

pub fn login_shell_that_is_not_a_shell(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    for (name, shell) in [
        ("mitogen-false", "/bin/false"),
        ("mitogen-nologin", "/usr/sbin/nologin"),
    ] {
        sshd::user(name, shell)?;
        let started = Instant::now();
        let ssh = sshd.ssh(name)?.connect_timeout(Duration::from_secs(20));
        let (err, text) = failure(router.ssh(ssh), &hop(name, &sshd))?;
        let took = started.elapsed();
        ensure!(
            took < Duration::from_secs(10),
            "login shell {shell}: the error took {took:?}: {text}"
        );
        if shell.ends_with("nologin") {
            // nologin says why on stdout; the error says it is no shell.
            ensure!(
                matches!(
                    err,
                    Error::Transport {
                        kind: TransportFailure::NoShell,
                        ..
                    }
                ),
                "login shell {shell}: not a NoShell transport error: {err:?}"
            );
        }
        ensure!(
            text.contains("first stage"),
            "login shell {shell}: unclear error: {text}"
        );
        println!("    {shell}: {text}");
    }
    Ok(())
}

pub fn banner_on_stdout_before_the_stage(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    let user = sshd::user("mitogen-noisy", "/bin/bash")?;
    let rc = user.home.join(".bashrc");
    std::fs::write(
        &rc,
        "echo 'Welcome to the noisy host'\n\
         printf 'MITOGEN garbage \\001\\002\\377 no newline'\n\
         echo 'to stderr as well' >&2\n",
    )?;
    user.chown(&rc)?;
    // The noise must really reach ssh's stdout, or this test shows nothing.
    let out = sshd.plain_ssh(&user.name, "echo END")?;
    ensure!(
        out.contains("Welcome to the noisy host") && out.contains("END"),
        "bash did not print the banner over ssh: {out:?}"
    );
    let (ctx, _) = connect_as(router, sshd.ssh(&user.name)?, &user)?;
    ensure!(ctx.call(plus_one, (41,))? == 42, "wrong answer");
    Ok(())
}

pub fn remote_that_hangs_times_out(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    let user = sshd::user("mitogen-slow", "/bin/bash")?;
    let rc = user.home.join(".bashrc");
    std::fs::write(&rc, "sleep 8\n")?;
    user.chown(&rc)?;
    let timeout = Duration::from_secs(2);
    let started = Instant::now();
    let ssh = sshd.ssh(&user.name)?.connect_timeout(timeout);
    let (_, text) = failure(router.ssh(ssh), &hop(&user.name, &sshd))?;
    let took = started.elapsed();
    ensure!(
        took >= timeout && took < timeout + Duration::from_secs(3),
        "the error came after {took:?} with a {timeout:?} connect timeout: {text}"
    );
    ensure!(
        text.contains("no answer") || text.contains("timed out"),
        "unclear error: {text}"
    );
    Ok(())
}

/// Processes of `uid` whose command name is `comm`.
fn processes(uid: u32, comm: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
                && std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == uid)
        })
        .collect()
}

/// This process's `ssh` children that talk to `port`.
fn ssh_clients(port: u16) -> Vec<u32> {
    let needle = format!("\0-p\0{port}\0");
    crate::util::child_processes()
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .collect()
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// Starts an uncompressed upload in a thread and stops the remote `head` that
/// stores it, so that the upload stalls half-way; returns the thread and the
/// stopped processes.
fn stalled_upload(
    router: &Router,
    sshd: &Sshd,
    user: &User,
    timeout: Duration,
) -> Result<(
    std::thread::JoinHandle<mitogen::Result<mitogen::Context>>,
    Vec<u32>,
)> {
    user.clear_cache()?;
    let ssh = sshd
        .ssh(&user.name)?
        .upload_compression(Compression::Never)
        .connect_timeout(timeout);
    let r = router.clone();
    let t = std::thread::spawn(move || r.ssh(ssh));
    let mut heads = Vec::new();
    let found = wait_until(Duration::from_secs(15), || {
        heads = processes(user.uid, "head");
        for &h in &heads {
            signal(h, rustix::process::Signal::STOP);
        }
        !heads.is_empty() || t.is_finished()
    });
    ensure!(
        found && !heads.is_empty(),
        "the remote head never ran (the upload did not start or ended at once)"
    );
    Ok((t, heads))
}

pub fn ssh_dying_or_stalling_mid_upload(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    let user = sshd::user("mitogen-t3", "/bin/sh")?;
    let name = hop(&user.name, &sshd);

    // The ssh client dies: a clear error at once.
    let (t, heads) = stalled_upload(router, &sshd, &user, Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_millis(200));
    ensure!(
        !t.is_finished(),
        "the connection ended before ssh was killed"
    );
    let clients = ssh_clients(sshd.port);
    ensure!(clients.len() == 1, "ssh clients to kill: {clients:?}");
    let killed = Instant::now();
    kill9(clients[0])?;
    ensure!(
        wait_until(Duration::from_secs(10), || t.is_finished()),
        "no error 10 s after ssh died mid-upload"
    );
    let took = killed.elapsed();
    for h in heads {
        signal(h, rustix::process::Signal::KILL);
    }
    let r = t.join().map_err(|_| anyhow!("connect panicked"))?;
    let (_, text) = failure(r, &name).context("ssh killed mid-upload")?;
    no_temp_files_left(&user).context("ssh killed mid-upload")?;
    ensure!(
        took < Duration::from_secs(5),
        "the error came {took:?} after ssh died"
    );
    println!("    ssh killed: {text}");

    // The upload stalls: a time-out error at the connect timeout.
    let timeout = Duration::from_secs(3);
    let started = Instant::now();
    let (t, heads) = stalled_upload(router, &sshd, &user, timeout)?;
    let finished = wait_until(timeout + Duration::from_secs(5), || t.is_finished());
    let took = started.elapsed();
    for h in heads {
        signal(h, rustix::process::Signal::KILL);
    }
    ensure!(finished, "no error {took:?} into a stalled upload");
    let r = t.join().map_err(|_| anyhow!("connect panicked"))?;
    let (_, text) = failure(r, &name).context("stalled upload")?;
    no_temp_files_left(&user).context("stalled upload")?;
    ensure!(
        text.contains("timed out") || text.contains("no answer") || text.contains("no greeting"),
        "a stalled upload gave: {text}"
    );
    println!("    stalled: {text} after {took:?}");

    // Nothing half-written stops the next connection.
    connect_as(router, sshd.ssh(&user.name)?, &user).context("after the failed uploads")?;
    check_entry(&user, &user.cache_dirs()[0])
}

/// Waits a little for the stage of a failed upload to remove its temporary file.
fn no_temp_files_left(user: &User) -> Result<()> {
    let dir = &user.cache_dirs()[0];
    let mut left = Vec::new();
    let gone = wait_until(Duration::from_secs(5), || {
        left = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&format!(".{}.", own().hash)))
                    .collect()
            })
            .unwrap_or_default();
        left.is_empty()
    });
    ensure!(gone, "temporary files left in {}: {left:?}", dir.display());
    Ok(())
}

crate::tests! {
    wrong_key_is_authentication_failed,
    closed_port_is_connection_refused,
    host_key_policies,
    login_shell_that_is_not_a_shell,
    banner_on_stdout_before_the_stage,
    remote_that_hangs_times_out,
    ssh_dying_or_stalling_mid_upload => 120,
}
