//! Forged frames from a hostile grandchild or intermediate: answers to calls
//! made to its parent, values for channels it was not given, frames from
//! outside its subtree; and a stopped intermediate, which holds up only its
//! own subtree.

use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use mitogen::testing::message::{FLAG_DEAD, FLAG_DISCONNECTED, FLAG_KEYED, MASTER_ID};
use mitogen::{Error, Local, Router};

use super::{expect_warned, forge, key_of, ok_reply, raw, Down};
use crate::calls::{add, sleep_ms};
use crate::capture;
use crate::security::send_value;

pub fn grandchild_cannot_answer_calls_to_its_parent(router: &Router) -> Result<()> {
    let host = router.start(None, Local::new().name("ht-host"))?;
    let gc = router.start(Some(&host), Local::new().name("ht-gc"))?;
    let _down = Down(vec![gc.clone(), host.clone()]);
    let mark = capture::mark();
    let slow = host.call_async(sleep_ms, (1500,));
    let h = slow.reply_handle();
    let (me, parent) = (gc.id(), host.id());
    // Answering as itself, killing the call with DEAD, and claiming to be
    // its parent (which the parent's router drops: not from behind the
    // grandchild's stream).
    let mut frames = raw(MASTER_ID, me, h, 0, 0, &ok_reply(777));
    frames.extend(raw(
        MASTER_ID,
        me,
        h,
        0,
        FLAG_DEAD | FLAG_DISCONNECTED,
        b"forged",
    ));
    frames.extend(raw(MASTER_ID, parent, h, 0, 0, &ok_reply(778)));
    forge(&gc, frames)?;
    match slow.get_timeout(Duration::from_secs(10)) {
        Ok(1500) => {}
        other => bail!("the call to the parent ended with {other:?}, not its own reply"),
    }
    expect_warned(mark, None, "reply not from the context called")?;
    expect_warned(mark, Some(host.name()), "source is not behind")?;
    ensure!(host.call(add, (2, 3))? == 5);
    ensure!(gc.call(add, (1, 1))? == 2);
    Ok(())
}

pub fn grandchild_cannot_send_to_channels_it_was_not_given(router: &Router) -> Result<()> {
    let host = router.start(None, Local::new().name("ht-chan-host"))?;
    let gc = router.start(Some(&host), Local::new().name("ht-chan-gc"))?;
    let _down = Down(vec![gc.clone(), host.clone()]);
    let mark = capture::mark();
    let me = gc.id();
    // A channel of the master's own, and one tied to the grandchild's
    // parent (whose subtree the grandchild is in).
    let (tx_any, rx_any) = router.channel::<u64>();
    let (tx_host, rx_host) = host.channel::<u64>();
    let value = postcard::to_allocvec(&666u64)?;
    let mut frames = Vec::new();
    for (rx, key) in [
        (rx_any.handle(), key_of(&tx_any)?),
        (rx_host.handle(), key_of(&tx_host)?),
    ] {
        // Without a key, with wrong keys, and a close without a key.
        frames.extend(raw(MASTER_ID, me, rx, 0, 0, &value));
        for wrong in [0, key ^ 1, key.wrapping_add(1), !key] {
            frames.extend(raw(MASTER_ID, me, rx, wrong, FLAG_KEYED, &value));
        }
        frames.extend(raw(MASTER_ID, me, rx, 0, FLAG_DEAD, b"forged close"));
    }
    forge(&gc, frames)?;
    for (name, rx) in [
        ("the master's channel", &rx_any),
        ("the parent's channel", &rx_host),
    ] {
        match rx.recv_timeout(Duration::from_millis(300)) {
            Err(Error::Timeout(_)) => {}
            other => bail!("{name} took a forged message: {other:?}"),
        }
    }
    expect_warned(mark, None, "without the channel's key")?;
    // Handed the senders, the same contexts may send.
    gc.call(send_value, (tx_any.clone(), 5))?;
    ensure!(rx_any.recv_timeout(Duration::from_secs(5))? == 5);
    host.call(send_value, (tx_host, 6))?;
    ensure!(rx_host.recv_timeout(Duration::from_secs(5))? == 6);
    Ok(())
}

pub fn intermediate_cannot_forge_outside_its_subtree(router: &Router) -> Result<()> {
    let mid = router.start(None, Local::new().name("ht-mid"))?;
    let below = router.start(Some(&mid), Local::new().name("ht-below"))?;
    let sibling = router.start(None, Local::new().name("ht-sibling"))?;
    let _down = Down(vec![below.clone(), mid.clone(), sibling.clone()]);
    let mark = capture::mark();
    let me = mid.id();
    let slow = sibling.call_async(sleep_ms, (1500,));
    let h = slow.reply_handle();
    let (tx, rx) = router.channel::<u64>();
    let value = postcard::to_allocvec(&666u64)?;
    // Replies to a call made to another subtree: as that subtree (dropped by
    // the master: not from behind the intermediate's stream), as itself and
    // as its own child (refused: not the context called).
    let mut frames = raw(MASTER_ID, sibling.id(), h, 0, 0, &ok_reply(777));
    frames.extend(raw(MASTER_ID, me, h, 0, FLAG_DEAD, b"forged"));
    frames.extend(raw(MASTER_ID, below.id(), h, 0, 0, &ok_reply(778)));
    // Values into a channel it was never handed, under every name it may
    // use, with keys guessed.
    for src in [me, below.id()] {
        frames.extend(raw(MASTER_ID, src, rx.handle(), 0, 0, &value));
        for guess in 0..64u32 {
            frames.extend(raw(
                MASTER_ID,
                src,
                rx.handle(),
                guess.wrapping_mul(0x9e37_79b9),
                FLAG_KEYED,
                &value,
            ));
        }
    }
    forge(&mid, frames)?;
    match slow.get_timeout(Duration::from_secs(10)) {
        Ok(1500) => {}
        other => bail!("the call to the sibling ended with {other:?}, not its own reply"),
    }
    match rx.recv_timeout(Duration::from_millis(300)) {
        Err(Error::Timeout(_)) => {}
        other => bail!("the channel took a forged value: {other:?}"),
    }
    expect_warned(mark, None, "source is not behind")?;
    expect_warned(mark, None, "reply not from the context called")?;
    expect_warned(mark, None, "without the channel's key")?;
    // The honest holder of the sender still gets through.
    sibling.call(send_value, (tx, 9))?;
    ensure!(rx.recv_timeout(Duration::from_secs(5))? == 9);
    ensure!(below.call(add, (2, 2))? == 4);
    Ok(())
}

pub fn stopped_intermediate_delays_only_its_subtree(router: &Router) -> Result<()> {
    let mid = router.start(None, Local::new().name("ht-stop-mid"))?;
    let below = router.start(Some(&mid), Local::new().name("ht-stop-below"))?;
    let sibling = router.start(None, Local::new().name("ht-stop-sibling"))?;
    let _down = Down(vec![below.clone(), mid.clone(), sibling.clone()]);
    let pid = mid.call(mitogen::builtins::getpid, ())?;
    let pid = rustix::process::Pid::from_raw(pid as i32).context("pid")?;
    // Holding what passes through it: calls below it wait, with a deadline.
    rustix::process::kill_process(pid, rustix::process::Signal::STOP)?;
    ensure!(
        crate::util::wait_until(Duration::from_secs(5), || crate::util::proc_state(
            pid.as_raw_nonzero().get() as u32
        ) == Some('T')),
        "the intermediate did not stop: {:?}",
        crate::util::proc_state(pid.as_raw_nonzero().get() as u32)
    );
    let r = below.call_timeout(add, (1, 2), Duration::from_millis(500));
    let sibling_ok = sibling.call_timeout(add, (2, 2), Duration::from_secs(5));
    rustix::process::kill_process(pid, rustix::process::Signal::CONT)?;
    match r {
        Err(Error::Timeout(_)) => {}
        other => bail!("a call through the stopped intermediate: {other:?}"),
    }
    ensure!(sibling_ok? == 4, "another subtree was held up");
    ensure!(below.call_timeout(add, (3, 3), Duration::from_secs(10))? == 6);
    Ok(())
}

crate::tests! {
    grandchild_cannot_answer_calls_to_its_parent,
    grandchild_cannot_send_to_channels_it_was_not_given,
    intermediate_cannot_forge_outside_its_subtree,
    stopped_intermediate_delays_only_its_subtree,
}
