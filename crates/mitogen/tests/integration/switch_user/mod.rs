//! sudo, su and doas against the real tools, with test users that the fixture
//! creates (and removes when the run ends, see [`cleanup`]).
//!
//! Password prompts only appear for a caller that is not root, so those tests
//! run this test binary again as a test user (`runuser -u USER -- EXE`) with
//! [`SCENARIO_ENV`] set: that process is a master of its own, connects once as
//! the scenario says, and prints one `RESULT` line ([`inner_main`]). The
//! password reaches it on stdin, and the outer test scans every process's
//! argv and environment for it meanwhile.
//!
//! This module holds the fixture, the identity checks and the constants the
//! parts share; `inner` runs the scenarios of the inner process and reads
//! their outcome. The tests are in `sudo`, `su` and `doas`.

pub mod doas;
pub mod inner;
pub mod su;
pub mod sudo;

pub use inner::inner_main;
pub(crate) use inner::{
    expect_err, expect_ok, leaking_processes, run_as, serde_json_line, Outcome,
};

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use mitogen::{Error, TransportFailure};
use serde::{Deserialize, Serialize};

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

use mitogen_testkit::command::run;

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

#[mitogen::remote]
pub fn echo_bytes(b: Vec<u8>) -> Vec<u8> {
    b
}
