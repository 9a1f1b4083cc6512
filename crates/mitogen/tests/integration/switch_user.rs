//! sudo, su and doas against the real tools, with test users that the fixture
//! creates (and removes when the run ends, see [`cleanup`]).
//!
//! Password prompts only appear for a caller that is not root, so those tests
//! run this test binary again as a test user (`runuser -u USER -- EXE`) with
//! [`SCENARIO_ENV`] set: that process is a master of its own, connects once as
//! the scenario says, and prints one `RESULT` line ([`inner_main`]). The
//! password reaches it on stdin, and the outer test scans every process's
//! argv and environment for it meanwhile.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use mitogen::{Doas, Error, Router, Secret, Su, Sudo, TransportFailure};
use serde::{Deserialize, Serialize};

use crate::util::Guard;

/// Selects an inner scenario (`METHOD TARGET_USER`) in a re-run of this binary.
pub const SCENARIO_ENV: &str = "MITOGEN_TEST_SWITCH";

/// Needs a password for sudo (to root and the app user), and may doas to the
/// app user with its password.
pub(crate) const PW_USER: &str = "mtgsw_pw";
pub(crate) const PW_USER_PASSWORD: &str = "pw-Sekret-4711";
/// sudo and doas without a password.
pub(crate) const NOPASS_USER: &str = "mtgsw_np";
/// No sudo rights at all.
const NO_USER: &str = "mtgsw_no";
const NO_USER_PASSWORD: &str = "no-Sekret-0815";
/// The user contexts switch to.
pub(crate) const APP_USER: &str = "mtgsw_app";
pub(crate) const APP_PASSWORD: &str = "app-Sekret-1234";

const SUDOERS: &str = "/etc/sudoers.d/mitogen-test";
const DOAS_CONF: &str = "/etc/doas.conf";
/// First line of a doas.conf this fixture wrote.
const DOAS_MARKER: &str = "# written by the mitogen-rs tests";

/// Who a context is, and where its executable lives.
#[derive(Debug, Serialize, Deserialize)]
pub struct Identity {
    pub uid: u32,
    pub exe: String,
    pub exe_uid: u32,
    pub dir_uid: u32,
    pub dir_mode: u32,
}

#[mitogen::remote]
pub fn identity() -> Identity {
    let exe = std::fs::read_link("/proc/self/exe").unwrap_or_default();
    let meta = std::fs::metadata(&exe).ok();
    let dir = exe.parent().and_then(|d| std::fs::metadata(d).ok());
    Identity {
        uid: rustix::process::getuid().as_raw(),
        exe: exe.display().to_string(),
        exe_uid: meta.as_ref().map_or(u32::MAX, |m| m.uid()),
        dir_uid: dir.as_ref().map_or(u32::MAX, |m| m.uid()),
        dir_mode: dir.as_ref().map_or(0o777, |m| m.mode() & 0o777),
    }
}

fn run(cmd: &mut Command, input: Option<&str>) -> Result<String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    if let Some(text) = input {
        child.stdin.take().unwrap().write_all(text.as_bytes())?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn uid_of(name: &str) -> Result<Option<u32>> {
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    Ok(passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 7 && f[0] == name).then(|| f[2].parse().ok())?
    }))
}

/// The users, the sudoers drop-in and doas.conf; set up once per run.
pub(crate) struct Fixture {
    pub(crate) app_uid: u32,
    /// A copy of this executable that the test users may run: the build in
    /// the target directory may be replaced by a concurrent `cargo` while
    /// the tests run (the copy is made from `/proc/self/exe`, so it is this
    /// very build).
    exe: std::path::PathBuf,
}

/// Where the copy of this executable lives.
fn exe_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("mitogen-switch-test-{}", std::process::id()))
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

pub(crate) fn fixture() -> Result<&'static Fixture> {
    static SETUP: Mutex<()> = Mutex::new(());
    let _one = SETUP.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(f) = FIXTURE.get() {
        return Ok(f);
    }
    if !rustix::process::geteuid().is_root() {
        return Err(crate::harness::cannot_run(
            "the switch-user tests need root (they create users and sudo/doas rules)",
        ));
    }
    for tool in [
        "/usr/bin/sudo",
        "/usr/bin/su",
        "/usr/bin/doas",
        "/usr/sbin/runuser",
    ] {
        if !Path::new(tool).exists() {
            return Err(crate::harness::cannot_run(format!(
                "{tool} is missing: install sudo, opendoas and util-linux (.ci/run does)"
            )));
        }
    }
    for user in [PW_USER, NOPASS_USER, NO_USER, APP_USER] {
        if uid_of(user)?.is_none() {
            let r = run(
                Command::new("useradd").args(["-m", "-s", "/bin/sh", user]),
                None,
            );
            if r.is_err() && uid_of(user)?.is_none() {
                r?;
            }
        }
    }
    run(
        &mut Command::new("chpasswd"),
        Some(&format!(
            "{PW_USER}:{PW_USER_PASSWORD}\n{NO_USER}:{NO_USER_PASSWORD}\n{APP_USER}:{APP_PASSWORD}\n"
        )),
    )?;
    // Every sudo asks again (no cached credentials), so each test sees a prompt;
    // the password user also gets the lecture before every prompt and
    // `requiretty`, which a transport without a terminal would fail.
    let sudoers = format!(
        "Defaults:{PW_USER} timestamp_timeout=0, requiretty, lecture=always\n\
         Defaults:{NO_USER} timestamp_timeout=0\n\
         {PW_USER} ALL=(root,{APP_USER}) ALL\n\
         {NOPASS_USER} ALL=(ALL) NOPASSWD: ALL\n"
    );
    let tmp = format!("{SUDOERS}.tmp");
    std::fs::write(&tmp, sudoers)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o440))?;
    run(Command::new("visudo").args(["-cqf", &tmp]), None)?;
    std::fs::rename(&tmp, SUDOERS)?;
    match std::fs::read_to_string(DOAS_CONF) {
        Ok(text) if !text.starts_with(DOAS_MARKER) => {
            bail!("{DOAS_CONF} exists and is not the tests' own: not touching it")
        }
        _ => {}
    }
    let doas = format!(
        "{DOAS_MARKER}\n\
         permit nopass {NOPASS_USER}\n\
         permit {PW_USER} as {APP_USER}\n\
         permit nopass root\n"
    );
    std::fs::write(DOAS_CONF, doas)?;
    std::fs::set_permissions(DOAS_CONF, std::fs::Permissions::from_mode(0o600))?;
    let app_uid = uid_of(APP_USER)?.ok_or_else(|| anyhow!("no {APP_USER}"))?;
    let dir = exe_dir();
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let exe = dir.join("integration");
    std::fs::copy("/proc/self/exe", &exe).context("copying the test executable")?;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755))?;
    Ok(FIXTURE.get_or_init(|| Fixture { app_uid, exe }))
}

/// Whether another live process of these tests has its fixture up.
fn other_runs_alive() -> bool {
    let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) else {
        return false;
    };
    dir.flatten().any(|e| {
        e.file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("mitogen-switch-test-"))
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| {
                pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists()
            })
    })
}

/// Removes what the fixture made, if it ran in this process (a run that
/// selected none of these tests leaves another run's fixture alone). Called
/// once the tests are done.
pub fn cleanup() {
    if FIXTURE.get().is_none() {
        return;
    }
    let _ = std::fs::remove_dir_all(exe_dir());
    if other_runs_alive() {
        // Another test run is using the same users and rules; the last one
        // to finish removes them.
        return;
    }
    let _ = std::fs::remove_file(SUDOERS);
    if std::fs::read_to_string(DOAS_CONF).is_ok_and(|t| t.starts_with(DOAS_MARKER)) {
        let _ = std::fs::remove_file(DOAS_CONF);
    }
    for user in [PW_USER, NOPASS_USER, NO_USER, APP_USER] {
        if uid_of(user).ok().flatten().is_some() {
            let _ = Command::new("userdel")
                .args(["-r", "-f", user])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Checks that a context runs as `uid` from its own private cache.
pub(crate) fn check_identity(id: &Identity, uid: u32) -> Result<()> {
    ensure!(id.uid == uid, "runs as uid {} instead of {uid}", id.uid);
    ensure!(
        id.exe_uid == uid && id.dir_uid == uid,
        "its executable {} (owner {}, directory owner {}) is not the user's own",
        id.exe,
        id.exe_uid,
        id.dir_uid
    );
    ensure!(
        id.dir_mode & 0o077 == 0,
        "cache directory of {} has mode {:o}",
        id.exe,
        id.dir_mode
    );
    Ok(())
}

pub(crate) fn check_context(ctx: &mitogen::Context, uid: u32) -> Result<()> {
    let id = ctx.call_timeout(identity, (), Duration::from_secs(20))?;
    check_identity(&id, uid)
}

fn transport_kind(r: mitogen::Result<mitogen::Context>) -> Result<TransportFailure> {
    match r {
        Ok(ctx) => {
            let _ = ctx.shutdown_timeout(Duration::from_secs(5));
            bail!("connected, but should have failed")
        }
        Err(Error::Transport { kind, .. }) => Ok(kind),
        Err(e) => bail!("not a transport error: {e}"),
    }
}

// ---------------------------------------------------------------------------
// The inner scenarios: this binary run again as a test user.

/// Connects once as `scenario` says and prints a `RESULT` line.
pub fn inner_main(router: &Router, scenario: &str) -> usize {
    let mut line = zeroize::Zeroizing::new(String::new());
    let _ = std::io::stdin().read_to_string(&mut line);
    let password = line
        .lines()
        .next()
        .filter(|l| !l.is_empty())
        .map(Secret::new);
    let mut words = scenario.split_whitespace();
    let (method, user) = (words.next().unwrap_or(""), words.next().unwrap_or("root"));
    if method == "chain-hops" {
        // `chain-hops TARGET`: stdin holds `HOP PASSWORD` lines, one
        // password per hop path (see `chains::per_hop_passwords`).
        let mut options = mitogen::ConnectOptions::default();
        for l in line.lines() {
            if let Some((hop, pw)) = l.split_once(' ') {
                options = options.hop_password(hop, pw);
            }
        }
        return crate::chains::inner_chain_with(router, user, options);
    }
    if method == "su-env" {
        return crate::hostile_switch::su_env_main(router, user);
    }
    if method == "chain" {
        // `chain TARGET`: a whole target string (see `chains`).
        return crate::chains::inner_chain(router, user, password);
    }
    let timeout = Duration::from_secs(20);
    let started = Instant::now();
    let r = match method {
        "sudo" => {
            let mut s = Sudo::new().user(user).connect_timeout(timeout);
            if let Some(p) = password {
                s = s.password(p);
            }
            router.sudo(s)
        }
        "su" => {
            let mut s = Su::user(user).connect_timeout(timeout);
            if let Some(p) = password {
                s = s.password(p);
            }
            router.su(s)
        }
        "doas" => {
            let mut d = Doas::new().user(user).connect_timeout(timeout);
            if let Some(p) = password {
                d = d.password(p);
            }
            router.doas(d)
        }
        other => {
            println!("RESULT other 0 unknown method {other}");
            return 1;
        }
    };
    let ms = started.elapsed().as_millis();
    let r = r.and_then(|ctx| {
        let id = ctx.call_timeout(identity, (), timeout);
        let _ = ctx.shutdown_timeout(Duration::from_secs(5));
        id
    });
    match r {
        Ok(id) => println!(
            "RESULT ok {ms} {}",
            serde_json_line(&id).unwrap_or_default()
        ),
        Err(Error::Transport { kind, .. }) => println!("RESULT err {ms} {kind:?}"),
        Err(e) => println!("RESULT other {ms} {e}"),
    }
    0
}

/// `Identity` as space-separated fields (no JSON crate in the tests).
pub(crate) fn serde_json_line(id: &Identity) -> Option<String> {
    Some(format!(
        "{} {} {} {} {}",
        id.uid, id.exe_uid, id.dir_uid, id.dir_mode, id.exe
    ))
}

/// What an inner scenario printed.
#[derive(Debug)]
pub(crate) enum Outcome {
    Ok { ms: u64, id: Identity },
    Err { ms: u64, kind: String },
}

/// Processes whose argv or environment contain one of `secrets`.
pub(crate) fn leaking_processes(secrets: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        for file in ["cmdline", "environ"] {
            let Ok(data) = std::fs::read(format!("/proc/{pid}/{file}")) else {
                continue;
            };
            for s in secrets {
                if data.windows(s.len()).any(|w| w == s.as_bytes()) {
                    found.push(format!(
                        "pid {pid} {file}: {}",
                        String::from_utf8_lossy(&data).replace('\0', " ")
                    ));
                }
            }
        }
    }
    found
}

/// Runs `scenario` as `user`, typing `password` into its stdin, and scans
/// every process for the password while it runs.
pub(crate) fn run_as(user: &str, scenario: &str, password: Option<&str>) -> Result<Outcome> {
    let exe = fixture()?.exe.clone();
    let mut child = Command::new("runuser")
        .args(["-u", user, "--"])
        .arg(&exe)
        .env(SCENARIO_ENV, scenario)
        .env_remove("MITOGEN_TEST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting runuser")?;
    let done = Arc::new(AtomicBool::new(false));
    let scanner = {
        let done = done.clone();
        let secret = password.map(str::to_owned);
        std::thread::spawn(move || {
            let mut leaks = Vec::new();
            let mut scans = 0u32;
            while let Some(s) = &secret {
                leaks.extend(leaking_processes(&[s.as_str()]));
                scans += 1;
                if done.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            (leaks, scans)
        })
    };
    if let Some(p) = password {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{p}\n").as_bytes())?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    done.store(true, Ordering::Relaxed);
    let (leaks, scans) = scanner.join().map_err(|_| anyhow!("scanner panicked"))?;
    ensure!(password.is_none() || scans > 0, "/proc was never scanned");
    ensure!(
        leaks.is_empty(),
        "the password is visible in /proc: {leaks:?}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .ok_or_else(|| anyhow!("no RESULT from {user}: {} {stdout} {stderr}", out.status))?;
    let mut w = line.splitn(3, ' ');
    let (what, ms, rest) = (
        w.next().unwrap_or(""),
        w.next().unwrap_or("0").parse::<u64>()?,
        w.next().unwrap_or(""),
    );
    match what {
        "ok" => {
            let f: Vec<&str> = rest.splitn(5, ' ').collect();
            ensure!(f.len() == 5, "bad RESULT line {line:?}");
            Ok(Outcome::Ok {
                ms,
                id: Identity {
                    uid: f[0].parse()?,
                    exe_uid: f[1].parse()?,
                    dir_uid: f[2].parse()?,
                    dir_mode: f[3].parse()?,
                    exe: f[4].to_owned(),
                },
            })
        }
        "err" => Ok(Outcome::Err {
            ms,
            kind: rest.to_owned(),
        }),
        _ => bail!("{user} `{scenario}`: {line} (stderr: {stderr})"),
    }
}

pub(crate) fn expect_ok(o: Outcome, uid: u32) -> Result<u64> {
    match o {
        Outcome::Ok { ms, id } => {
            check_identity(&id, uid)?;
            Ok(ms)
        }
        other => bail!("expected a context, got {other:?}"),
    }
}

fn expect_err(o: Outcome, kind: TransportFailure) -> Result<u64> {
    match o {
        Outcome::Err { ms, kind: k } if k == format!("{kind:?}") => Ok(ms),
        other => bail!("expected {kind:?}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Tests.

pub fn sudo_with_password(_router: &Router) -> Result<()> {
    let f = fixture()?;
    // The scan finds a password where it would be visible.
    let mut control = Command::new("sleep")
        .arg("5")
        .env("CONTROL", PW_USER_PASSWORD)
        .spawn()?;
    let seen = crate::util::wait_until(Duration::from_secs(2), || {
        !leaking_processes(&[PW_USER_PASSWORD]).is_empty()
    });
    let _ = control.kill();
    let _ = control.wait();
    ensure!(
        seen,
        "the /proc scan does not see a password in an environment"
    );
    let o = run_as(PW_USER, &format!("sudo {APP_USER}"), Some(PW_USER_PASSWORD))?;
    expect_ok(o, f.app_uid)?;
    let o = run_as(PW_USER, "sudo root", Some(PW_USER_PASSWORD))?;
    expect_ok(o, 0)?;
    Ok(())
}

pub fn sudo_wrong_password_fails_at_the_second_prompt(_router: &Router) -> Result<()> {
    fixture()?;
    let o = run_as(
        PW_USER,
        &format!("sudo {APP_USER}"),
        Some("not-the-password"),
    )?;
    let ms = expect_err(o, TransportFailure::AuthenticationFailed)?;
    // PAM's own delay after a failure (about 2 s, pam_unix) comes first;
    // sudo's time-out is minutes and ours is 20 s.
    ensure!(
        ms < 5_000,
        "took {ms} ms: the second prompt was not recognised"
    );
    Ok(())
}

pub fn sudo_without_password_is_password_required(_router: &Router) -> Result<()> {
    fixture()?;
    let o = run_as(PW_USER, &format!("sudo {APP_USER}"), None)?;
    let ms = expect_err(o, TransportFailure::PasswordRequired)?;
    ensure!(ms < 3_000, "took {ms} ms");
    Ok(())
}

pub fn sudo_nopasswd(_router: &Router) -> Result<()> {
    let f = fixture()?;
    expect_ok(
        run_as(NOPASS_USER, &format!("sudo {APP_USER}"), None)?,
        f.app_uid,
    )?;
    expect_ok(run_as(NOPASS_USER, "sudo root", None)?, 0)?;
    Ok(())
}

pub fn sudo_refused_by_policy(_router: &Router) -> Result<()> {
    fixture()?;
    let o = run_as(NO_USER, "sudo root", Some(NO_USER_PASSWORD))?;
    expect_err(o, TransportFailure::PolicyRefused)?;
    Ok(())
}

pub fn sudo_as_root_and_errors(router: &Router) -> Result<()> {
    let f = fixture()?;
    let ctx = Guard(router.sudo(Sudo::new().user(APP_USER).set_home(true))?);
    check_context(&ctx, f.app_uid)?;
    let kind = transport_kind(router.sudo(Sudo::new().user("mtgsw_nosuchuser")))?;
    ensure!(kind == TransportFailure::NoSuchUser, "{kind:?}");
    let kind = transport_kind(router.sudo(Sudo::new().sudo_path("/nonexistent/sudo")))?;
    ensure!(kind == TransportFailure::NotInstalled, "{kind:?}");
    match router.sudo(Sudo::new().sudo_args(["-S"])) {
        Err(Error::Connect { reason, .. }) if reason.contains("not supported") => {}
        other => bail!(
            "sudo -S should be refused: {:?}",
            other.map(|c| c.name().to_owned())
        ),
    }
    // The target syntax reaches the same method.
    let target: mitogen::Target = format!("sudo:{APP_USER}").parse()?;
    let ctx = Guard(router.connect(&target)?);
    ensure!(ctx.name() == format!("sudo:{APP_USER}"), "{}", ctx.name());
    check_context(&ctx, f.app_uid)?;
    Ok(())
}

pub fn su_as_root_needs_no_password(router: &Router) -> Result<()> {
    let f = fixture()?;
    let ctx = Guard(router.su(Su::user(APP_USER))?);
    check_context(&ctx, f.app_uid)?;
    // A stream over a raw pty carries bulk data unchanged.
    let data: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let back = ctx.call_timeout(echo_bytes, (data.clone(),), Duration::from_secs(20))?;
    ensure!(back == data, "bytes changed on the way");
    let kind = transport_kind(router.su(Su::user("mtgsw_nosuchuser")))?;
    ensure!(kind == TransportFailure::NoSuchUser, "{kind:?}");
    Ok(())
}

#[mitogen::remote]
pub fn echo_bytes(b: Vec<u8>) -> Vec<u8> {
    b
}

pub fn su_to_another_user_with_password(_router: &Router) -> Result<()> {
    let f = fixture()?;
    let o = run_as(PW_USER, &format!("su {APP_USER}"), Some(APP_PASSWORD))?;
    expect_ok(o, f.app_uid)?;
    let o = run_as(PW_USER, &format!("su {APP_USER}"), Some("wrong-one"))?;
    expect_err(o, TransportFailure::AuthenticationFailed)?;
    let o = run_as(PW_USER, &format!("su {APP_USER}"), None)?;
    expect_err(o, TransportFailure::PasswordRequired)?;
    Ok(())
}

pub fn doas_with_and_without_nopass(router: &Router) -> Result<()> {
    let f = fixture()?;
    expect_ok(
        run_as(NOPASS_USER, &format!("doas {APP_USER}"), None)?,
        f.app_uid,
    )?;
    let o = run_as(PW_USER, &format!("doas {APP_USER}"), Some(PW_USER_PASSWORD))?;
    expect_ok(o, f.app_uid)?;
    let o = run_as(PW_USER, &format!("doas {APP_USER}"), None)?;
    expect_err(o, TransportFailure::PasswordRequired)?;
    let o = run_as(PW_USER, "doas root", Some(PW_USER_PASSWORD))?;
    expect_err(o, TransportFailure::PolicyRefused)?;
    let ctx = Guard(router.doas(Doas::new().user(APP_USER))?);
    check_context(&ctx, f.app_uid)?;
    Ok(())
}

pub fn doas_wrong_password(_router: &Router) -> Result<()> {
    fixture()?;
    let o = run_as(
        PW_USER,
        &format!("doas {APP_USER}"),
        Some("not-the-password"),
    )?;
    expect_err(o, TransportFailure::AuthenticationFailed)?;
    Ok(())
}

crate::tests! {
    sudo_with_password,
    sudo_wrong_password_fails_at_the_second_prompt,
    sudo_without_password_is_password_required,
    sudo_nopasswd,
    sudo_refused_by_policy,
    sudo_as_root_and_errors,
    su_as_root_needs_no_password,
    su_to_another_user_with_password,
    doas_with_and_without_nopass,
    doas_wrong_password,
}
