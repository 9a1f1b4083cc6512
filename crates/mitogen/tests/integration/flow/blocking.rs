//! A spent window holds its sender back and nothing else: calls on the same
//! stream pass; `send_timeout` gives up at its deadline; `send_async`
//! awaits credit.

use std::time::Duration;

use anyhow::{bail, ensure, Result};
use bytes::Bytes;
use mitogen::{Blob, Error, Local, Router};

use super::{produced, start_producer, wait_for};
use crate::calls::add;

pub fn calls_pass_beside_a_stalled_window(router: &Router) -> Result<()> {
    let mid = router.local()?;
    let leaf = router.start(Some(&mid), Local::new().name("flow-stall"))?;
    let window = 1 << 20;
    let (tx, rx) = leaf.channel_with_window::<Blob>(window);
    // 64 MiB that nobody reads for now.
    let (chunks, size) = (256u32, 256u32 << 10);
    leaf.call(start_producer, (tx, chunks, size))?;
    let stalled = wait_for(Duration::from_secs(10), || {
        let (sent, _) = leaf.call(produced, ())?;
        Ok(sent >= (window as u64) - u64::from(size))
    })?;
    ensure!(stalled, "the producer never filled its window");
    // The producer waits for credit, beside which 100 calls to the same
    // context (and to the relay between) go through.
    for i in 0..100 {
        ensure!(leaf.call_timeout(add, (i, 1), Duration::from_secs(10))? == i + 1);
        ensure!(mid.call_timeout(add, (i, 2), Duration::from_secs(10))? == i + 2);
    }
    let (sent, end) = leaf.call(produced, ())?;
    ensure!(end.is_none(), "the producer ended: {end:?}");
    ensure!(
        sent <= window as u64 + u64::from(size),
        "{sent} bytes sent with a window of {window}"
    );
    // Reading lets it finish, with nothing lost.
    for _ in 0..chunks {
        ensure!(rx.recv_timeout(Duration::from_secs(10))?.len() == size as usize);
    }
    let finished = wait_for(Duration::from_secs(10), || {
        Ok(leaf.call(produced, ())?.1.as_deref() == Some("done"))
    })?;
    ensure!(finished, "the producer did not finish");
    leaf.shutdown()?;
    mid.shutdown()?;
    Ok(())
}

pub fn send_timeout_expires_on_a_spent_window(router: &Router) -> Result<()> {
    let (tx, rx) = router.channel_with_window::<Blob>(1 << 20);
    let chunk = Blob(Bytes::from(vec![1u8; 768 << 10]));
    tx.send_timeout(chunk.clone(), Duration::from_secs(5))?;
    let started = std::time::Instant::now();
    match tx.send_timeout(chunk.clone(), Duration::from_millis(200)) {
        Err(Error::Timeout(_)) => {}
        other => bail!("expected a time-out on a spent window, got {other:?}"),
    }
    ensure!(started.elapsed() >= Duration::from_millis(200));
    // Taking the value gives the credit back.
    ensure!(rx.recv_timeout(Duration::from_secs(5))?.len() == 768 << 10);
    tx.send_timeout(chunk, Duration::from_secs(5))?;
    ensure!(rx.recv_timeout(Duration::from_secs(5))?.len() == 768 << 10);
    Ok(())
}

pub fn send_async_awaits_credit_under_tokio(router: &Router) -> Result<()> {
    let (tx, rx) = router.channel_with_window::<Blob>(1 << 20);
    let chunk = Blob(Bytes::from(vec![2u8; 768 << 10]));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    rt.block_on(async {
        tx.send_async(chunk.clone()).await?;
        let second = tokio::spawn(tx.send_async(chunk.clone()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        ensure!(
            !second.is_finished(),
            "the second send did not wait for credit"
        );
        // The reader takes the first value on another thread: the waiting
        // task is woken by the grant.
        let reader = std::thread::spawn(move || {
            let a = rx.recv_timeout(Duration::from_secs(5));
            let b = rx.recv_timeout(Duration::from_secs(5));
            (a.map(|b| b.len()), b.map(|b| b.len()))
        });
        tokio::time::timeout(Duration::from_secs(5), second).await???;
        let (a, b) = reader
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))?;
        ensure!(a? == 768 << 10 && b? == 768 << 10);
        Ok(())
    })
}

crate::tests! {
    calls_pass_beside_a_stalled_window => 120,
    send_timeout_expires_on_a_spent_window,
    send_async_awaits_credit_under_tokio,
}
