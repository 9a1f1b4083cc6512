//! Calls into the parent and into a sibling, a shutdown of a sibling, and a
//! forged reply to another's call.

use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use mitogen::testing::message::{handles, MASTER_ID};
use mitogen::{Error, Router};

use super::{evil_call, expect_logged, frame, frame_reply, Tree, LATERAL, NO_AUTHORITY};
use crate::calls::sleep_ms;
use crate::capture;

pub fn call_into_parent(router: &Router) -> Result<()> {
    let t = Tree::new(router, "sec-parent")?;
    let mark = capture::mark();
    let me = t.hostile.id();
    // Into the parent, asking for a reply (the refusal answers it dead).
    let mut frames = frame_reply(
        t.mid.id(),
        me,
        me,
        handles::CALL_FUNCTION,
        5000,
        &evil_call(),
    );
    // Into the master, which runs no calls at all.
    frames.extend(frame_reply(
        MASTER_ID,
        me,
        me,
        handles::CALL_FUNCTION,
        5001,
        &evil_call(),
    ));
    t.forge(frames)?;
    t.honest_ones_work()?;
    expect_logged(mark, Some(t.mid.name()), NO_AUTHORITY)?;
    capture::wait_for(mark, Duration::from_secs(5), |e| {
        e.message.contains("unknown handle") && e.field("handle") == Some("101")
    })
    .context("the master did not log the call it does not serve")?;
    Ok(())
}

pub fn call_into_sibling(router: &Router) -> Result<()> {
    let t = Tree::new(router, "sec-sib")?;
    let mark = capture::mark();
    let me = t.hostile.id();
    let mut frames = frame(t.cousin.id(), me, me, handles::CALL_FUNCTION, &evil_call());
    frames.extend(frame(
        t.sibling.id(),
        me,
        me,
        handles::CALL_FUNCTION,
        &evil_call(),
    ));
    t.forge(frames)?;
    t.honest_ones_work()?;
    // The cousin's call is refused by the parent they share, the sibling's by
    // the master.
    expect_logged(mark, Some(t.mid.name()), LATERAL)?;
    expect_logged(mark, None, LATERAL)?;
    Ok(())
}

pub fn shutdown_of_sibling(router: &Router) -> Result<()> {
    let t = Tree::new(router, "sec-shut")?;
    let mark = capture::mark();
    let me = t.hostile.id();
    let mut frames = frame(t.cousin.id(), me, me, handles::SHUTDOWN, b"");
    frames.extend(frame(t.sibling.id(), me, me, handles::SHUTDOWN, b""));
    frames.extend(frame(t.mid.id(), me, me, handles::SHUTDOWN, b""));
    t.forge(frames)?;
    std::thread::sleep(Duration::from_millis(300));
    t.honest_ones_work()?;
    expect_logged(mark, Some(t.mid.name()), LATERAL)?;
    expect_logged(mark, None, LATERAL)?;
    expect_logged(mark, Some(t.mid.name()), NO_AUTHORITY)?;
    Ok(())
}

pub fn forged_reply_to_anothers_call(router: &Router) -> Result<()> {
    let t = Tree::new(router, "sec-reply")?;
    let mark = capture::mark();
    let me = t.hostile.id();
    let slow = t.sibling.call_async(sleep_ms, (1500,));
    // A reply body: `ReplyHead::Ok` (variant 0), then the forged result.
    let mut reply = vec![0u8];
    reply.extend(postcard::to_allocvec(&777u64)?);
    // Handles are drawn at random, so guessing is hopeless; given the right
    // one, a reply from anyone but the sibling is still refused.
    let mut frames = frame(MASTER_ID, me, me, slow.reply_handle(), &reply);
    let (_tx, probe) = router.channel::<u64>();
    for h in probe.handle().wrapping_sub(2)..probe.handle().wrapping_add(3) {
        frames.extend(frame(MASTER_ID, me, me, h, &reply));
    }
    // And a value into a channel tied to the sibling.
    let (_stx, srx) = t.sibling.channel::<u64>();
    frames.extend(frame(MASTER_ID, me, me, srx.handle(), &reply[1..]));
    t.forge(frames)?;
    ensure!(
        slow.get_timeout(Duration::from_secs(10))? == 1500,
        "a forged reply was taken for the sibling's"
    );
    match srx.recv_timeout(Duration::from_millis(300)) {
        Err(Error::Timeout(_)) => {}
        other => bail!("the sibling's channel took a forged value: {other:?}"),
    }
    t.honest_ones_work()?;
    expect_logged(mark, None, "reply not from the context called")?;
    expect_logged(mark, None, "without the channel's key")?;
    Ok(())
}

crate::tests! {
    call_into_parent,
    call_into_sibling,
    shutdown_of_sibling,
    forged_reply_to_anothers_call,
}
