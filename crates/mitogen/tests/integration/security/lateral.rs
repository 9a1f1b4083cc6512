//! Messages to another subtree: refused unless the master allows them.

use std::time::Duration;

use anyhow::{ensure, Result};
use mitogen::testing::message::handles;
use mitogen::{Context, Router};

use super::{
    count_logged, evil_call, expect_logged, frame, open_inbox, read_inbox, send_value, EVIL,
    LATERAL, NO_AUTHORITY,
};
use crate::bad_input::{write_raw, After};
use crate::calls::get_value;
use crate::capture;

/// Sends a value from one child's inbox to another's; returns what arrived.
fn lateral_value(router: &Router) -> Result<(Option<u64>, Context, Context)> {
    let a = router.local()?;
    let b = router.local()?;
    let inbox = b.call(open_inbox, ())?;
    a.call(send_value, (inbox, 5))?;
    let got = b.call(read_inbox, (500,))?;
    Ok((got, a, b))
}

pub fn lateral_refused_by_default(router: &Router) -> Result<()> {
    let mark = capture::mark();
    let (got, a, b) = lateral_value(router)?;
    ensure!(got.is_none(), "a message crossed between subtrees");
    expect_logged(mark, None, LATERAL)?;
    a.shutdown()?;
    b.shutdown()?;
    Ok(())
}

pub fn lateral_allowed_when_enabled(_: &Router) -> Result<()> {
    let r = Router::builder().allow_lateral_messages(true).build()?;
    let (got, a, b) = lateral_value(&r)?;
    ensure!(got == Some(5), "the value did not cross: {got:?}");
    // Calls still need a parent's authority: a sibling may message, not command.
    let mark = capture::mark();
    let me = a.id();
    let forged = frame(b.id(), me, me, handles::CALL_FUNCTION, &evil_call());
    a.call_timeout(
        write_raw,
        (forged, After::Nothing, 0),
        Duration::from_secs(10),
    )?;
    expect_logged(mark, Some(b.name()), NO_AUTHORITY)?;
    ensure!(b.call(get_value, ())? != EVIL, "a sibling's call ran");
    ensure!(count_logged(mark, None, LATERAL) == 0);
    Ok(())
}

crate::tests! {
    lateral_refused_by_default,
    lateral_allowed_when_enabled,
}
