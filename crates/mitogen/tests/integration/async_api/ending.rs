//! Channels that end when their last sender is dropped, wherever its copies
//! went, and only then: not by a context that was never handed the sender.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use mitogen::{Error, Router, Sender};

use super::{
    count_to, drop_kept, expect_open, expect_values_then_end, keep, open_inbox, pass_on,
    send_later, send_then_fail, NotThere,
};
use crate::util::local;

pub fn dropping_local_senders_ends_the_receiver(router: &Router) -> Result<()> {
    let (tx, rx) = router.channel::<u64>();
    let tx2 = tx.clone();
    drop(tx);
    expect_open(&rx)?;
    let t = std::thread::spawn(move || {
        tx2.send(1)?;
        tx2.send(2)
    });
    t.join()
        .map_err(|_| anyhow::anyhow!("sender thread panicked"))??;
    expect_values_then_end(&rx, &[1, 2], Duration::from_secs(5))
}

pub fn dropping_remote_senders_ends_the_receiver(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    // A receiver of this process, and one tied to the context.
    let (tx, rx) = router.channel::<u64>();
    ctx.call(count_to, (3, tx))?;
    expect_values_then_end(&rx, &[0, 1, 2], Duration::from_secs(10))?;
    let (tx, rx) = ctx.channel::<u64>();
    ctx.call_no_reply(count_to, (1000, tx))?;
    let want: Vec<u64> = (0..1000).collect();
    expect_values_then_end(&rx, &want, Duration::from_secs(10))?;
    // A copy kept remotely keeps it open until that copy is dropped.
    let (tx, rx) = router.channel::<u64>();
    ctx.call(keep, (tx.clone(),))?;
    ctx.call(keep, (tx,))?;
    expect_open(&rx)?;
    ctx.call(drop_kept, ())?;
    expect_values_then_end(&rx, &[], Duration::from_secs(10))
}

pub fn receiver_ends_when_the_holding_context_dies(router: &Router) -> Result<()> {
    let ctx = router.local()?;
    let (tx, rx) = router.channel::<u64>();
    ctx.call(keep, (tx,))?;
    expect_open(&rx)?;
    ctx.shutdown()?;
    expect_values_then_end(&rx, &[], Duration::from_secs(10))
}

pub fn sender_passed_on_to_another_context(router: &Router) -> Result<()> {
    let a = local(router)?;
    let b = router.start(Some(&a), mitogen::Local::new())?;
    let inbox = b.call(open_inbox, ())?;
    let (tx, rx) = router.channel::<u64>();
    let started = Instant::now();
    // This process's copy goes to `a`, `a`'s to `b`; `a`'s is dropped.
    a.call(pass_on, (tx, inbox))?;
    expect_open(&rx)?;
    b.call(send_later, (500,))?;
    expect_values_then_end(&rx, &[7], Duration::from_secs(10))?;
    ensure!(started.elapsed() >= Duration::from_millis(800));
    b.shutdown()?;
    Ok(())
}

pub fn sender_in_a_failed_call(router: &Router) -> Result<()> {
    let ctx = router.local()?;
    // The function ran and failed: its arguments were dropped.
    let (tx, rx) = router.channel::<u64>();
    ensure!(matches!(
        ctx.call(send_then_fail, (tx,)),
        Err(Error::Call(_))
    ));
    expect_values_then_end(&rx, &[1], Duration::from_secs(10))?;
    // The call never ran (no such function there): the copy sent there
    // counts until that context goes away, then the receiver ends.
    let (tx, rx) = router.channel::<u64>();
    ensure!(matches!(ctx.call(NotThere, (tx,)), Err(Error::Call(_))));
    expect_open(&rx)?;
    ctx.shutdown()?;
    expect_values_then_end(&rx, &[], Duration::from_secs(10))
}

pub fn explicit_close_still_ends_the_receiver(router: &Router) -> Result<()> {
    let (tx, rx) = router.channel::<u64>();
    let _kept = tx.clone();
    tx.send(4)?;
    tx.close()?;
    match (
        rx.recv_timeout(Duration::from_secs(5)),
        rx.recv_timeout(Duration::from_secs(5)),
    ) {
        (Ok(4), Err(Error::ChannelClosed(_))) => Ok(()),
        other => bail!("expected 4 then ChannelClosed, got {other:?}"),
    }
}

pub fn context_without_the_sender_cannot_end_the_channel(router: &Router) -> Result<()> {
    use mitogen::testing::message::{FLAG_CONTROL, FLAG_DEAD, FLAG_KEYED, MASTER_ID};
    let holder = local(router)?;
    let forger = local(router)?;
    let (tx, rx) = router.channel::<u64>();
    holder.call(keep, (tx,))?;
    // `Gone(1)` from a context never handed the sender: with keys it can
    // only guess, without one, and as a DEAD close.
    let gone = [1u8, 1];
    let mut frames = Vec::new();
    for key in [0, 1, 0x5eed, u32::MAX] {
        let flags = FLAG_KEYED | FLAG_CONTROL;
        frames.extend(crate::hostile_tree::raw(
            MASTER_ID,
            forger.id(),
            rx.handle(),
            key,
            flags,
            &gone,
        ));
    }
    frames.extend(crate::hostile_tree::raw(
        MASTER_ID,
        forger.id(),
        rx.handle(),
        0,
        FLAG_CONTROL,
        &gone,
    ));
    frames.extend(crate::hostile_tree::raw(
        MASTER_ID,
        forger.id(),
        rx.handle(),
        0,
        FLAG_DEAD,
        b"forged",
    ));
    crate::hostile_tree::forge(&forger, frames)?;
    expect_open(&rx)?;
    // The holder's own drop ends it.
    holder.call(drop_kept, ())?;
    expect_values_then_end(&rx, &[], Duration::from_secs(10))
}

/// Sends `out` back through `back` (to the process that made both).
#[mitogen::remote]
pub fn send_back(out: Sender<u64>, back: Sender<Sender<u64>>) -> mitogen::Result<()> {
    back.send(out)
}

pub fn sender_sent_back_to_the_receivers_process(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let (tx, rx) = router.channel::<u64>();
    let (back_tx, back_rx) = router.channel::<Sender<u64>>();
    ctx.call(send_back, (tx, back_tx))?;
    // The context's copies are gone; the one it sent back is here now.
    let returned = back_rx.recv_timeout(Duration::from_secs(10))?;
    ensure!(matches!(
        back_rx.recv_timeout(Duration::from_secs(10)),
        Err(Error::ChannelClosed(_))
    ));
    expect_open(&rx)?;
    returned.send(5)?;
    drop(returned);
    expect_values_then_end(&rx, &[5], Duration::from_secs(10))
}

crate::tests! {
    dropping_local_senders_ends_the_receiver,
    dropping_remote_senders_ends_the_receiver,
    receiver_ends_when_the_holding_context_dies,
    sender_passed_on_to_another_context,
    sender_in_a_failed_call,
    explicit_close_still_ends_the_receiver,
    context_without_the_sender_cannot_end_the_channel,
    sender_sent_back_to_the_receivers_process,
}
