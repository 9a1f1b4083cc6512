//! A context that ignores credit and writes raw frames past its window,
//! through a relay: the receiver cuts it off, naming it, and the relay
//! passes the flood on without growing (its `VmRSS` sampled meanwhile).

use std::time::Duration;

use anyhow::{bail, ensure, Result};
use mitogen::testing::message::{FLAG_KEYED, MASTER_ID};
use mitogen::{Blob, Error, Local, Router};

use super::{pid, rss_kib};
use crate::calls::add;
use crate::hostile_tree::{fork_writer, key_of, raw};

pub fn raw_sender_past_its_window_is_cut_off(router: &Router) -> Result<()> {
    let mid = router.local()?;
    let bad = router.start(Some(&mid), Local::new().name("flow-raw"))?;
    let window = 2 << 20;
    let (tx, rx) = bad.channel_with_window::<Blob>(window);
    let frame = raw(
        MASTER_ID,
        bad.id(),
        rx.handle(),
        key_of(&tx)?,
        FLAG_KEYED,
        &vec![9u8; 256 << 10],
    );
    let relay = mid.call(pid, ())?;
    let base = rss_kib(relay)?;
    // 32 MiB, sixteen windows, that nobody reads meanwhile.
    bad.call(fork_writer, (frame, 128, 300))?;
    let mut peak = base;
    for _ in 0..150 {
        peak = peak.max(rss_kib(relay)?);
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("    relay: RSS {base} KiB, peak growth {} KiB", peak - base);
    ensure!(
        peak - base < 16 << 10,
        "the relay's RSS grew by {} KiB",
        peak - base
    );
    let mut got = 0usize;
    let end = loop {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(b) => got += b.len(),
            Err(e) => break e,
        }
    };
    match &end {
        Error::ChannelClosed(r) if r.contains("past its window") && r.contains("flow-raw") => {}
        other => bail!("after {got} bytes: expected a cut-off, got {other:?}"),
    }
    ensure!(got <= window, "the receiver took {got} bytes");
    // The relay and the master are fine.
    ensure!(mid.call(add, (1, 2))? == 3);
    bad.shutdown()?;
    mid.shutdown()?;
    Ok(())
}

crate::tests! {
    raw_sender_past_its_window_is_cut_off => 60,
}
