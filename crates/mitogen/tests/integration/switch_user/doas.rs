//! doas: with and without `nopass`, and a wrong password.

use anyhow::Result;
use mitogen::{Doas, Router, TransportFailure};

use super::{
    check_context, expect_err, expect_ok, fixture, run_as, APP_USER, NOPASS_USER, PW_USER,
    PW_USER_PASSWORD,
};
use crate::util::Guard;

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
    doas_with_and_without_nopass,
    doas_wrong_password,
}
