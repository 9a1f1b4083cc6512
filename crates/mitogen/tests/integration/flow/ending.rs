//! A sender waiting for credit is woken when the receiver goes: dropped, or
//! its context disconnected. No wait lasts for ever.

use std::time::Duration;

use anyhow::{bail, ensure, Result};
use bytes::Bytes;
use mitogen::{Blob, Error, Router};

use super::{make_receiver, produced, start_producer, wait_for};

pub fn waiting_sender_woken_when_the_receiver_is_dropped(router: &Router) -> Result<()> {
    let child = router.local()?;
    let window = 1 << 20;
    let (tx, rx) = child.channel_with_window::<Blob>(window);
    // At most 256 MiB: without windows the producer would never wait.
    let (chunks, size) = (1024u32, 256u32 << 10);
    child.call(start_producer, (tx, chunks, size))?;
    let stalled = wait_for(Duration::from_secs(10), || {
        Ok(child.call(produced, ())?.0 >= window as u64 - u64::from(size))
    })?;
    ensure!(stalled, "the producer never filled its window");
    std::thread::sleep(Duration::from_millis(200));
    drop(rx);
    let mut end = None;
    let ended = wait_for(Duration::from_secs(10), || {
        end = child.call(produced, ())?.1;
        Ok(end.is_some())
    })?;
    ensure!(ended, "the waiting sender was not woken");
    let (sent, _) = child.call(produced, ())?;
    match end.as_deref() {
        Some(e) if e.contains("the receiver was dropped") => {}
        other => bail!("after {sent} bytes the producer ended with {other:?}"),
    }
    ensure!(sent <= window as u64 + u64::from(size), "{sent} bytes sent");
    child.shutdown()?;
    Ok(())
}

pub fn waiting_sender_woken_when_the_receivers_context_disconnects(router: &Router) -> Result<()> {
    let child = router.local()?;
    let window = 1u64 << 20;
    let tx = child.call(make_receiver, (window,))?;
    let sender = std::thread::spawn(move || {
        let chunk = Blob(Bytes::from(vec![3u8; 256 << 10]));
        let mut sent = 0u64;
        // At most 256 MiB: without windows it would never wait.
        for _ in 0..1024 {
            if let Err(e) = tx.send(chunk.clone()) {
                return (sent, Some(e));
            }
            sent += chunk.len() as u64;
        }
        (sent, None)
    });
    std::thread::sleep(Duration::from_millis(500));
    ensure!(!sender.is_finished(), "the sender did not wait for credit");
    let pid = child.pid().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).ok_or_else(|| anyhow::anyhow!("pid 0"))?,
        rustix::process::Signal::KILL,
    )?;
    let woken = wait_for(Duration::from_secs(10), || Ok(sender.is_finished()))?;
    ensure!(
        woken,
        "the waiting sender was not woken by the disconnection"
    );
    let (sent, end) = sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))?;
    match end {
        Some(Error::Disconnected { .. }) => {}
        other => bail!("after {sent} bytes the sender ended with {other:?}"),
    }
    ensure!(sent <= window + (256 << 10), "{sent} bytes sent");
    Ok(())
}

crate::tests! {
    waiting_sender_woken_when_the_receiver_is_dropped => 60,
    waiting_sender_woken_when_the_receivers_context_disconnects => 60,
}
