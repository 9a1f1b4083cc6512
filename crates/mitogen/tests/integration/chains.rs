//! Switching user through other hops: local → sudo, ssh → sudo, ssh → sudo →
//! su, local → sudo → local, and a wrong sudo password behind an ssh hop.
//!
//! Every context of a chain checks who it runs as and that its executable is
//! the target user's own cached copy (see `switch_user::check_identity`); the
//! first hop of a chain started by a root master is the master's own program
//! and only its uid is checked. While a password is typed into a prompt, every
//! process on the machine is scanned for it (`switch_user::leaking_processes`).
//! Passwords are given only to the hop whose tool asks for them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Result};
use mitogen::{
    ConnectOptions, Context, Error, Local, Router, Secret, Su, Sudo, Target, TransportFailure,
};

use crate::sshd::Sshd;
use crate::switch_user::{
    check_context, check_identity, expect_ok, fixture, identity, leaking_processes, run_as,
    serde_json_line, uid_of, APP_PASSWORD, APP_USER, NOPASS_USER, PW_USER, PW_USER_PASSWORD,
};
use crate::util::Guard;

/// Time allowed for each hop in these tests.
const HOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Scans every process's argv and environment for `secrets` until
/// [`finish`](Self::finish) is called.
struct Scan {
    done: Arc<AtomicBool>,
    thread: JoinHandle<(Vec<String>, u32)>,
}

impl Scan {
    fn start(secrets: &[&str]) -> Scan {
        let done = Arc::new(AtomicBool::new(false));
        let secrets: Vec<String> = secrets.iter().map(|s| (*s).to_owned()).collect();
        let thread = {
            let done = done.clone();
            std::thread::spawn(move || {
                let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
                let (mut leaks, mut scans) = (Vec::new(), 0u32);
                loop {
                    leaks.extend(leaking_processes(&refs));
                    scans += 1;
                    if done.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                (leaks, scans)
            })
        };
        Scan { done, thread }
    }

    /// Fails if a secret was seen anywhere, or if nothing was scanned.
    fn finish(self) -> Result<()> {
        self.done.store(true, Ordering::Relaxed);
        let (leaks, scans) = self
            .thread
            .join()
            .map_err(|_| anyhow!("scanner panicked"))?;
        ensure!(scans > 1, "/proc was scanned only {scans} time(s)");
        ensure!(
            leaks.is_empty(),
            "a password is visible in /proc: {leaks:?}"
        );
        Ok(())
    }
}

fn uid(user: &str) -> Result<u32> {
    uid_of(user)?.ok_or_else(|| anyhow!("no user {user}"))
}

/// Checks the uid of a context that runs the master's own executable.
fn check_uid_only(ctx: &Context, uid: u32) -> Result<()> {
    let id = ctx.call_timeout(identity, (), Duration::from_secs(20))?;
    ensure!(
        id.uid == uid,
        "{} runs as uid {} instead of {uid}",
        ctx.name(),
        id.uid
    );
    Ok(())
}

/// A context started through `via`, shut down at the end of the test.
fn hop(router: &Router, via: &Context, method: impl Into<mitogen::Method>) -> Result<Guard> {
    Ok(Guard(router.start(Some(via), method)?))
}

/// The inner scenario `chain TARGET` (run as a test user by
/// `switch_user::run_as`): connects `TARGET` with the password for its
/// switch-user hop and prints the final context's identity as a `RESULT`
/// line, as `switch_user::inner_main` does for one hop.
pub fn inner_chain(router: &Router, target: &str, password: Option<Secret>) -> usize {
    let options = ConnectOptions {
        password,
        ..Default::default()
    };
    inner_chain_with(router, target, options)
}

/// [`inner_chain`] with the given options (and a 20 s time-out per hop).
pub fn inner_chain_with(router: &Router, target: &str, mut options: ConnectOptions) -> usize {
    let target: Target = match target.parse() {
        Ok(t) => t,
        Err(e) => {
            println!("RESULT other 0 bad target: {e}");
            return 1;
        }
    };
    options.connect_timeout = Some(Duration::from_secs(20));
    let started = Instant::now();
    let r = router.connect_with(&target, &options);
    let ms = started.elapsed().as_millis();
    let r = r.and_then(|ctx| {
        let id = ctx.call_timeout(identity, (), Duration::from_secs(20));
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

// ---------------------------------------------------------------------------
// Tests.

/// local → sudo with a NOPASSWD rule (and as root, who needs none).
pub fn local_sudo_nopasswd(router: &Router) -> Result<()> {
    let f = fixture()?;
    let local = Guard(router.local()?);
    check_uid_only(&local, 0)?;
    let app = hop(router, &local, Sudo::new().user(APP_USER))?;
    check_context(&app, f.app_uid)?;
    // A user whose sudo rule is NOPASSWD, as the master: `local/sudo:APP`.
    let o = run_as(NOPASS_USER, &format!("chain local/sudo:{APP_USER}"), None)?;
    expect_ok(o, f.app_uid)?;
    Ok(())
}

/// local → sudo where sudo asks the calling user's password: the local hop
/// gets it and types it into its sudo's prompt.
pub fn local_sudo_with_password(_router: &Router) -> Result<()> {
    let f = fixture()?;
    let o = run_as(
        PW_USER,
        &format!("chain local/sudo:{APP_USER}"),
        Some(PW_USER_PASSWORD),
    )?;
    expect_ok(o, f.app_uid)?;
    let o = run_as(PW_USER, "chain local/sudo", Some(PW_USER_PASSWORD))?;
    expect_ok(o, 0)?;
    Ok(())
}

/// ssh (to the loopback sshd, as a user whose sudo needs a password) → sudo
/// with that password, built hop by hop and from a target string.
pub fn ssh_sudo_with_password(router: &Router) -> Result<()> {
    let f = fixture()?;
    let pw_uid = uid(PW_USER)?;
    let sshd = Sshd::start()?;
    let scan = Scan::start(&[PW_USER_PASSWORD]);
    let r = (|| -> Result<()> {
        let web = Guard(router.ssh(sshd.ssh(PW_USER)?.connect_timeout(HOP_TIMEOUT))?);
        check_context(&web, pw_uid)?;
        let app = hop(
            router,
            &web,
            Sudo::new()
                .user(APP_USER)
                .password(PW_USER_PASSWORD)
                .connect_timeout(HOP_TIMEOUT),
        )?;
        check_context(&app, f.app_uid)?;
        let root = hop(
            router,
            &web,
            Sudo::new()
                .password(PW_USER_PASSWORD)
                .connect_timeout(HOP_TIMEOUT),
        )?;
        check_context(&root, 0)?;
        Ok(())
    })();
    scan.finish()?;
    r?;

    // The same chain as a target string, as `mitogen run` writes it.
    let key = sshd.client_key.display().to_string();
    let target: Target = format!("{PW_USER}@127.0.0.1:{}/sudo:{APP_USER}", sshd.port).parse()?;
    let options = ConnectOptions {
        ssh_config: Some("/dev/null".into()),
        ssh_options: vec![
            format!("IdentityFile={key}"),
            "IdentitiesOnly=yes".into(),
            "StrictHostKeyChecking=no".into(),
            "UserKnownHostsFile=/dev/null".into(),
        ],
        connect_timeout: Some(HOP_TIMEOUT),
        password: Some(Secret::new(PW_USER_PASSWORD)),
        ..Default::default()
    };
    let scan = Scan::start(&[PW_USER_PASSWORD]);
    let r = router.connect_with(&target, &options);
    scan.finish()?;
    let app = Guard(r?);
    ensure!(
        app.name() == target.to_string(),
        "named {} rather than {target}",
        app.name()
    );
    check_context(&app, f.app_uid)?;
    Ok(())
}

/// ssh → sudo → su: sudo to root with the ssh user's password, then root's
/// su to a user (no password); and ssh as root, sudo to a user (no password),
/// then that user's su to another with the target's password. Each password
/// goes to its own hop only.
pub fn ssh_sudo_su(router: &Router) -> Result<()> {
    let f = fixture()?;
    let pw_uid = uid(PW_USER)?;
    let sshd = Sshd::start()?;
    let scan = Scan::start(&[PW_USER_PASSWORD, APP_PASSWORD]);
    let r = (|| -> Result<()> {
        let web = Guard(router.ssh(sshd.ssh(PW_USER)?.connect_timeout(HOP_TIMEOUT))?);
        check_context(&web, pw_uid)?;
        let root = hop(
            router,
            &web,
            Sudo::new()
                .password(PW_USER_PASSWORD)
                .connect_timeout(HOP_TIMEOUT),
        )?;
        check_context(&root, 0)?;
        let app = hop(
            router,
            &root,
            Su::user(APP_USER).connect_timeout(HOP_TIMEOUT),
        )?;
        check_context(&app, f.app_uid)?;
        ensure!(
            app.name() == format!("{}/su:{APP_USER}", root.name()),
            "named {}",
            app.name()
        );

        // A user without a password cannot log in to this sshd (no PAM, a
        // locked account), so the second chain logs in as root.
        let web = Guard(router.ssh(sshd.ssh("root")?.connect_timeout(HOP_TIMEOUT))?);
        check_context(&web, 0)?;
        let pw = hop(
            router,
            &web,
            Sudo::new().user(PW_USER).connect_timeout(HOP_TIMEOUT),
        )?;
        check_context(&pw, pw_uid)?;
        let app = hop(
            router,
            &pw,
            Su::user(APP_USER)
                .password(APP_PASSWORD)
                .connect_timeout(HOP_TIMEOUT),
        )?;
        check_context(&app, f.app_uid)?;
        Ok(())
    })();
    scan.finish()?;
    r
}

/// local → sudo → local: the last hop is a second process of the switched
/// user's own copy of the program.
pub fn local_sudo_local(router: &Router) -> Result<()> {
    let f = fixture()?;
    let local = Guard(router.local()?);
    check_uid_only(&local, 0)?;
    let app = hop(router, &local, Sudo::new().user(APP_USER))?;
    let app_id = app.call_timeout(identity, (), Duration::from_secs(20))?;
    check_identity(&app_id, f.app_uid)?;
    let inner = hop(router, &app, Local::new())?;
    let inner_id = inner.call_timeout(identity, (), Duration::from_secs(20))?;
    check_identity(&inner_id, f.app_uid)?;
    ensure!(
        inner_id.exe == app_id.exe,
        "the local hop runs {} rather than its parent's {}",
        inner_id.exe,
        app_id.exe
    );
    // The same through a target string.
    let target: Target = format!("local/sudo:{APP_USER}/local").parse()?;
    let ctx = Guard(router.connect(&target)?);
    check_context(&ctx, f.app_uid)?;
    Ok(())
}

/// A wrong sudo password behind an ssh hop: a typed error naming the sudo
/// hop, as soon as sudo asks again (after PAM's delay), and the ssh hop keeps
/// working.
pub fn ssh_sudo_wrong_password(router: &Router) -> Result<()> {
    fixture()?;
    let pw_uid = uid(PW_USER)?;
    let sshd = Sshd::start()?;
    let web = Guard(router.ssh(sshd.ssh(PW_USER)?.connect_timeout(HOP_TIMEOUT))?);
    check_context(&web, pw_uid)?;
    let wrong = "not-the-password-9";
    let scan = Scan::start(&[wrong]);
    let started = Instant::now();
    let r = router.start(
        Some(&web),
        Sudo::new()
            .user(APP_USER)
            .password(wrong)
            .connect_timeout(HOP_TIMEOUT),
    );
    let elapsed = started.elapsed();
    scan.finish()?;
    match r {
        Err(Error::Transport { context, kind, .. }) => {
            ensure!(
                kind == TransportFailure::AuthenticationFailed,
                "failed with {kind:?}"
            );
            ensure!(
                context == format!("{}/sudo:{APP_USER}", web.name()),
                "the error names {context:?}, not the sudo hop"
            );
        }
        Err(e) => bail!("not a transport error: {e}"),
        Ok(ctx) => {
            let _ = ctx.shutdown_timeout(Duration::from_secs(5));
            bail!("connected with a wrong password");
        }
    }
    // PAM's own delay after a failure (about 2 s) comes first; the hop's
    // time-out is 60 s.
    ensure!(
        elapsed < Duration::from_secs(8),
        "took {elapsed:?}: the second prompt was not recognised"
    );
    check_context(&web, pw_uid)?;
    Ok(())
}

/// One password per hop: `ConnectOptions::password` that would reach two
/// hops is refused; `hop_passwords` gives each hop its own, typed only into
/// that hop's prompt (su's for the target user's, sudo's for its caller's).
pub fn per_hop_passwords(router: &Router) -> Result<()> {
    let f = fixture()?;
    let target: Target = format!("sudo/su:{APP_USER}").parse()?;
    let shared = ConnectOptions {
        password: Some(Secret::new("shared-Sekret-1")),
        connect_timeout: Some(HOP_TIMEOUT),
        ..Default::default()
    };
    match router.connect_with(&target, &shared) {
        Err(Error::BadTarget { reason, .. }) => ensure!(
            reason.contains("sudo") && reason.contains(&format!("sudo/su:{APP_USER}")),
            "the refusal does not name both hops: {reason}"
        ),
        Err(e) => bail!("not a target error: {e}"),
        Ok(ctx) => {
            let _ = ctx.shutdown_timeout(Duration::from_secs(5));
            bail!("one password was given to two hops");
        }
    }
    // A user whose sudo needs its password: only the sudo hop gets it.
    let o = run_as(
        PW_USER,
        &format!("chain-hops sudo/su:{APP_USER}"),
        Some(&format!("sudo {PW_USER_PASSWORD}")),
    )?;
    expect_ok(o, f.app_uid)?;
    // Two hops, two prompts: su to the password user with its password,
    // then that user's sudo with its own.
    let o = run_as(
        "mtgsw_no",
        &format!("chain-hops su:{PW_USER}/sudo:{APP_USER}"),
        Some(&format!(
            "su:{PW_USER} {PW_USER_PASSWORD}\nsu:{PW_USER}/sudo:{APP_USER} {PW_USER_PASSWORD}"
        )),
    )?;
    expect_ok(o, f.app_uid)?;
    // The sudo hop's password is not the su hop's: with only the sudo hop's
    // given, su is asked and has none.
    let o = run_as(
        "mtgsw_no",
        &format!("chain-hops su:{PW_USER}/sudo:{APP_USER}"),
        Some(&format!("su:{PW_USER}/sudo:{APP_USER} {PW_USER_PASSWORD}")),
    )?;
    match o {
        crate::switch_user::Outcome::Err { kind, .. } if kind == "PasswordRequired" => {}
        other => bail!("expected PasswordRequired for the su hop, got {other:?}"),
    }
    Ok(())
}

crate::tests! {
    local_sudo_nopasswd,
    local_sudo_with_password,
    ssh_sudo_with_password => 180,
    ssh_sudo_su => 180,
    local_sudo_local,
    ssh_sudo_wrong_password => 120,
    per_hop_passwords => 120,
}
