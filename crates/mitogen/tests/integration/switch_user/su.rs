//! su: as root with no password, and to another user with a password.

use std::time::Duration;

use anyhow::{ensure, Result};
use mitogen::{Router, Su, TransportFailure};

use super::{
    check_context, echo_bytes, expect_err, expect_ok, fixture, run_as, transport_kind,
    APP_PASSWORD, APP_USER, PW_USER,
};
use crate::util::Guard;

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

crate::tests! {
    su_as_root_needs_no_password,
    su_to_another_user_with_password,
}
