//! sudo: with and without a password, a wrong password, `NOPASSWD`, a policy
//! that refuses, and as root with its errors.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Result};
use mitogen::{Error, Router, Sudo, TransportFailure};

use super::{
    check_context, expect_err, expect_ok, fixture, leaking_processes, run_as, transport_kind,
    APP_USER, NOPASS_USER, NO_USER, NO_USER_PASSWORD, PW_USER, PW_USER_PASSWORD,
};
use crate::util::Guard;

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

crate::tests! {
    sudo_with_password,
    sudo_wrong_password_fails_at_the_second_prompt,
    sudo_without_password_is_password_required,
    sudo_nopasswd,
    sudo_refused_by_policy,
    sudo_as_root_and_errors,
}
