//! A fast producer and a slow consumer: the window holds the producer back,
//! so no process between them holds more than a few windows, and every
//! byte arrives.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Result};
use bytes::Bytes;
use mitogen::{Blob, Local, Router, Sender};

use super::{pid, rss_kib};

/// Sends `chunks` blobs of `size` bytes, each different (its index in its
/// first bytes), as fast as the window allows; returns how many bytes went
/// and the BLAKE3 of them all.
#[mitogen::remote]
pub fn produce_hashed(tx: Sender<Blob>, chunks: u32, size: u32) -> mitogen::Result<(u64, Vec<u8>)> {
    let base = vec![0x5au8; size as usize];
    let mut hash = blake3::Hasher::new();
    let mut sent = 0u64;
    for i in 0..chunks {
        let mut v = base.clone();
        v[..4].copy_from_slice(&i.to_le_bytes());
        hash.update(&v);
        sent += v.len() as u64;
        tx.send(Blob(Bytes::from(v)))?;
    }
    Ok((sent, hash.finalize().as_bytes().to_vec()))
}

pub fn gibibyte_to_a_slow_consumer_keeps_every_rss_bounded(router: &Router) -> Result<()> {
    let mid = router.local()?;
    let leaf = router.start(Some(&mid), Local::new().name("flow-leaf"))?;
    let pids = [std::process::id(), mid.call(pid, ())?, leaf.call(pid, ())?];
    let base: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect::<Result<_>>()?;
    let peak = Arc::new(std::sync::Mutex::new(base.clone()));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                for (i, p) in pids.iter().enumerate() {
                    if let Ok(kib) = rss_kib(*p) {
                        let mut peak = peak.lock().unwrap_or_else(|e| e.into_inner());
                        peak[i] = peak[i].max(kib);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let (tx, rx) = leaf.channel::<Blob>();
    let (chunks, size) = (1024u32, 1u32 << 20);
    let producer = {
        let leaf = leaf.clone();
        std::thread::spawn(move || {
            leaf.call_timeout(produce_hashed, (tx, chunks, size), Duration::from_secs(170))
        })
    };
    let mut hash = blake3::Hasher::new();
    let (mut got, mut count) = (0u64, 0u32);
    while count < chunks {
        let b = rx.recv_timeout(Duration::from_secs(30))?;
        hash.update(&b);
        got += b.len() as u64;
        count += 1;
        // The slow consumer: a pause every 16 MiB.
        if count % 16 == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let (sent, theirs) = producer
        .join()
        .map_err(|_| anyhow::anyhow!("producer thread panicked"))??;
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    ensure!(
        sent == got && got == u64::from(chunks) * u64::from(size),
        "sent {sent}, got {got}"
    );
    ensure!(
        hash.finalize().as_bytes()[..] == theirs[..],
        "the stream's BLAKE3 differs"
    );
    let peak = peak.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for (i, name) in ["master", "relay", "producer"].iter().enumerate() {
        let growth = peak[i].saturating_sub(base[i]);
        eprintln!("    {name}: RSS {} KiB, peak growth {growth} KiB", base[i]);
        ensure!(growth < 64 << 10, "{name}'s RSS grew by {growth} KiB");
    }
    leaf.shutdown()?;
    mid.shutdown()?;
    Ok(())
}

crate::tests! {
    gibibyte_to_a_slow_consumer_keeps_every_rss_bounded => 180,
}
