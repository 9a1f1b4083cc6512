//! A hostile target account behind sudo, su and doas gets nothing: not the
//! password typed for the hop, not the caller's environment, and no terminal
//! that a command could hang on.
//!
//! The target account owns its program cache, so it can replace the build
//! the first stage execs. Here that build is a script that prints `Password: `
//! on its terminal and records whatever it reads; the hop is given a password
//! the tool does not ask for (root needs none), so the only prompt is the
//! hostile one.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use mitogen::builtins::run_command;
use mitogen::{Doas, Router, Su, Sudo};

use crate::switch_user::{check_context, fixture, APP_USER, SCENARIO_ENV};
use crate::util::Guard;

/// The password given to hops whose tool does not ask for one.
const BAIT: &str = "bait-Sekret-5150";

/// `(uid, gid, home)` of `user`.
fn account(user: &str) -> Result<(u32, u32, PathBuf)> {
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 7 && f[0] == user)
        .map(|f| -> Result<_> { Ok((f[2].parse()?, f[3].parse()?, PathBuf::from(f[5]))) })
        .ok_or_else(|| anyhow!("no user {user}"))?
}

/// The three tools, each switching from root to the app user with a password
/// nobody asks for.
fn hops() -> [(&'static str, mitogen::Method); 3] {
    let t = Duration::from_secs(30);
    [
        (
            "sudo",
            Sudo::new()
                .user(APP_USER)
                .password(BAIT)
                .connect_timeout(t)
                .into(),
        ),
        (
            "su",
            Su::user(APP_USER).password(BAIT).connect_timeout(t).into(),
        ),
        (
            "doas",
            Doas::new()
                .user(APP_USER)
                .password(BAIT)
                .connect_timeout(t)
                .into(),
        ),
    ]
}

/// Puts `script` in place of the app user's cached build, owned by that user.
fn plant(entry: &Path, uid: u32, gid: u32, script: &str) -> Result<()> {
    let tmp = entry.with_extension("planted");
    std::fs::write(&tmp, script)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o700))?;
    std::os::unix::fs::chown(&tmp, Some(uid), Some(gid))?;
    // A rename, not a write: an earlier context may still run the file.
    std::fs::rename(&tmp, entry)?;
    Ok(())
}

/// Finding: the prompter answered any `password:` on the terminal until the
/// child greeted, by which time the target's own cached build was running.
pub fn replaced_build_asking_on_the_tty_gets_nothing(router: &Router) -> Result<()> {
    fixture()?;
    let (uid, gid, home) = account(APP_USER)?;
    let dir = home.join(".cache/mitogen");
    let entry = dir.join(&crate::ssh::own().hash);
    // A first connection fills the cache the normal way.
    drop(Guard(router.sudo(Sudo::new().user(APP_USER))?));
    ensure!(entry.exists(), "no cached build at {}", entry.display());
    let log = std::env::temp_dir().join(format!("mitogen-harvest-{}", std::process::id()));
    let r = (|| -> Result<()> {
        let mut harvested = Vec::new();
        for (tool, method) in hops() {
            std::fs::write(&log, "")?;
            std::os::unix::fs::chown(&log, Some(uid), Some(gid))?;
            // It asks on its terminal, or, without one (util-linux su gives
            // none), on stdin and stdout, which are then the su pty itself.
            // `timeout --foreground`: in a background process group a read
            // of the terminal would only stop the reader.
            let script = format!(
                "#!/bin/sh\n\
                 echo started >> {log}\n\
                 if (: < /dev/tty) 2>/dev/null; then exec < /dev/tty > /dev/tty; fi\n\
                 printf 'Password: '\n\
                 timeout --foreground 3 sh -c 'IFS= read -r l; echo \"read $l\" >> {log}'\n\
                 echo done >> {log}\n\
                 exit 1\n",
                log = log.display()
            );
            plant(&entry, uid, gid, &script)?;
            let started = Instant::now();
            let r = router.start(None, method);
            let took = started.elapsed();
            let said = std::fs::read_to_string(&log)?;
            ensure!(
                said.contains("started"),
                "{tool}: the planted build never ran ({said:?}): the test proves nothing"
            );
            if said.contains(BAIT) {
                harvested.push(format!("{tool}: {said:?}"));
                continue;
            }
            // Unanswered, the planted build gives up; the master then uploads
            // a fresh build over it and connects (or fails clearly), well
            // within the hop's time-out.
            ensure!(took < Duration::from_secs(25), "{tool}: took {took:?}");
            match r {
                Ok(ctx) => {
                    let ctx = Guard(ctx);
                    check_context(&ctx, uid)?;
                }
                Err(e) => println!("    {tool}: {e}"),
            }
            println!("    {tool}: planted build read nothing ({took:?}): {said:?}");
        }
        ensure!(
            harvested.is_empty(),
            "the target account's build read the password: {harvested:?}"
        );
        Ok(())
    })();
    let _ = std::fs::remove_file(&log);
    // Whatever happened, the planted script does not stay.
    if std::fs::read(&entry).is_ok_and(|b| b.starts_with(b"#!/bin/sh")) {
        let _ = std::fs::remove_file(&entry);
    }
    r
}

/// Finding: a context started by sudo, su or doas has the prompt's pty as its
/// controlling terminal; a command reading `/dev/tty` hung (or, under su,
/// read the context's own stream).
pub fn command_reading_the_tty_does_not_hang(router: &Router) -> Result<()> {
    fixture()?;
    let (uid, _, _) = account(APP_USER)?;
    for (tool, method) in hops() {
        let ctx = Guard(router.start(None, method)?);
        let started = Instant::now();
        let out = ctx
            .call_timeout(
                run_command,
                (vec![
                    "sh".to_owned(),
                    "-c".to_owned(),
                    "IFS= read -r l < /dev/tty && echo read".to_owned(),
                ],),
                Duration::from_secs(10),
            )
            .with_context(|| format!("{tool}: the command hung on /dev/tty"))?;
        ensure!(
            !out.success(),
            "{tool}: the command read a terminal: {out:?}"
        );
        ensure!(
            started.elapsed() < Duration::from_secs(5),
            "{tool}: took {:?}",
            started.elapsed()
        );
        // The stream is intact.
        check_context(&ctx, uid).with_context(|| format!("{tool}: after the command"))?;
    }
    Ok(())
}

/// The environment of a context, for [`su_env_main`].
#[mitogen::remote]
pub fn environment() -> Vec<(String, String)> {
    std::env::vars().collect()
}

/// The inner scenario `su-env USER`: this binary run as root with a planted
/// environment su's to USER and prints the context's environment, one
/// `ENV NAME=VALUE` line each.
pub fn su_env_main(router: &Router, user: &str) -> usize {
    let r = router
        .su(Su::user(user).connect_timeout(Duration::from_secs(20)))
        .and_then(|ctx| {
            let env = ctx.call_timeout(environment, (), Duration::from_secs(20));
            let _ = ctx.shutdown_timeout(Duration::from_secs(5));
            env
        });
    match r {
        Ok(env) => {
            for (k, v) in env {
                println!("ENV {k}={v}");
            }
            println!("RESULT ok");
            0
        }
        Err(e) => {
            println!("RESULT other {e}");
            1
        }
    }
}

/// Finding: su passed the caller's environment (`PATH`, `BASH_ENV`, `ENV`)
/// to the target's shell.
pub fn su_target_gets_none_of_the_callers_environment(_router: &Router) -> Result<()> {
    fixture()?;
    let exe = std::env::current_exe()?;
    let out = Command::new(&exe)
        .env(SCENARIO_ENV, format!("su-env {APP_USER}"))
        .env_remove("MITOGEN_TEST_LOG")
        .env("BASH_ENV", "/tmp/mitogen-planted-bash-env")
        .env("ENV", "/tmp/mitogen-planted-env")
        .env("MITOGEN_PLANTED", "1")
        .env(
            "PATH",
            format!(
                "/tmp/mitogen-planted-bin:{}",
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .stdin(Stdio::null())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.contains("RESULT ok") {
        bail!(
            "su-env failed: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let env: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ENV "))
        .collect();
    for bad in ["BASH_ENV=", "ENV=", "MITOGEN_PLANTED="] {
        ensure!(
            !env.iter().any(|l| l.starts_with(bad)),
            "the target got {bad}… from the caller: {env:?}"
        );
    }
    let path = env
        .iter()
        .find_map(|l| l.strip_prefix("PATH="))
        .unwrap_or("");
    ensure!(
        !path.contains("planted"),
        "the target searches the caller's PATH: {path}"
    );
    Ok(())
}

/// Finding: under su, the tool's refusal phrases were matched against what
/// came after the first stage started, so a cached build that could not run
/// and said "Permission denied" (as a noexec mount makes `exec` say) was
/// reported as su's policy refusing, instead of being replaced.
pub fn cached_build_saying_permission_denied_is_replaced(router: &Router) -> Result<()> {
    fixture()?;
    let (uid, gid, home) = account(APP_USER)?;
    let entry = home.join(".cache/mitogen").join(&crate::ssh::own().hash);
    drop(Guard(router.sudo(Sudo::new().user(APP_USER))?));
    let t = Duration::from_secs(30);
    let methods: [(&str, mitogen::Method); 2] = [
        ("su", Su::user(APP_USER).connect_timeout(t).into()),
        ("sudo", Sudo::new().user(APP_USER).connect_timeout(t).into()),
    ];
    for (tool, method) in methods {
        plant(
            &entry,
            uid,
            gid,
            "#!/bin/sh\necho \"sh: 1: exec: $0: Permission denied\" >&2\n\
             echo \"sh: 1: exec: $0: Permission denied\"\nexit 126\n",
        )?;
        let ctx = router
            .start(None, method)
            .with_context(|| format!("{tool}: the unusable cached build was not replaced"))?;
        let ctx = Guard(ctx);
        check_context(&ctx, uid)?;
        ensure!(
            !std::fs::read(&entry)?.starts_with(b"#!"),
            "{tool}: the planted build is still there"
        );
    }
    Ok(())
}

/// sudo's one-time prompt is kept from the target account (and every other
/// user): not in sudo's arguments, which `ps` shows to all, and not in the
/// target's environment.
pub fn sudo_prompt_is_secret_from_the_target(router: &Router) -> Result<()> {
    fixture()?;
    let ctx = Guard(router.sudo(Sudo::new().user(APP_USER).password(BAIT))?);
    let env = ctx.call_timeout(environment, (), Duration::from_secs(20))?;
    ensure!(
        !env.iter()
            .any(|(k, v)| k == "SUDO_PROMPT" || v.contains("mitogen-sudo")),
        "the target sees sudo's prompt: {env:?}"
    );
    // sudo waits for its command, so it is still running now.
    let mut sudos = 0;
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Ok(argv) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let argv = String::from_utf8_lossy(&argv).replace('\0', " ");
        if argv.contains("MITOGEN-STAGE") && argv.starts_with("sudo") {
            sudos += 1;
            ensure!(
                !argv.contains("mitogen-sudo"),
                "sudo's prompt is in its arguments: {argv}"
            );
        }
    }
    ensure!(sudos > 0, "no sudo process found: the check proves nothing");
    Ok(())
}

crate::tests! {
    replaced_build_asking_on_the_tty_gets_nothing => 120,
    command_reading_the_tty_does_not_hang => 120,
    su_target_gets_none_of_the_callers_environment,
    cached_build_saying_permission_denied_is_replaced => 120,
    sudo_prompt_is_secret_from_the_target,
}
