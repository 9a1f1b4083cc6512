//! Channel windows (see "Channel windows" in `docs/protocol.md`): a fast
//! producer is held back by a slow consumer, with every process's memory
//! bounded and nothing lost (`memory`); a stalled channel leaves calls on
//! the same stream fast, and `send_timeout` and `send_async` wait for
//! credit (`blocking`); a waiting sender is woken when the receiver goes
//! (`ending`); a context that ignores credit is cut off (`hostile`).

pub mod blocking;
pub mod ending;
pub mod hostile;
pub mod memory;

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use mitogen::{Blob, Error, Router, Sender};

/// This process's id.
#[mitogen::remote]
pub fn pid() -> u32 {
    std::process::id()
}

/// Resident memory of `pid` in KiB.
pub fn rss_kib(of: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{of}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

/// What a producer thread of this process has done: bytes sent, and how it
/// ended (`None` while it runs).
static PRODUCED: Mutex<(u64, Option<String>)> = Mutex::new((0, None));

/// Starts a thread here that sends `chunks` blobs of `size` bytes to `tx`,
/// recording its progress in [`PRODUCED`]; returns at once.
#[mitogen::remote]
pub fn start_producer(tx: Sender<Blob>, chunks: u32, size: u32) {
    *PRODUCED.lock().unwrap_or_else(|e| e.into_inner()) = (0, None);
    std::thread::spawn(move || {
        let chunk = Bytes::from(vec![7u8; size as usize]);
        let mut end = "done".to_string();
        for _ in 0..chunks {
            if let Err(e) = tx.send(Blob(chunk.clone())) {
                end = e.to_string();
                break;
            }
            PRODUCED.lock().unwrap_or_else(|e| e.into_inner()).0 += u64::from(size);
        }
        PRODUCED.lock().unwrap_or_else(|e| e.into_inner()).1 = Some(end);
    });
}

/// The progress of the thread [`start_producer`] started.
#[mitogen::remote]
pub fn produced() -> (u64, Option<String>) {
    PRODUCED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Receivers made here by [`make_receiver`], kept and never read.
static KEPT: Mutex<Vec<mitogen::Receiver<Blob>>> = Mutex::new(Vec::new());

/// Makes a receiver here with a window of `window` bytes, keeps it unread,
/// and returns its sender.
#[mitogen::remote]
pub fn make_receiver(window: u64) -> mitogen::Result<Sender<Blob>> {
    let r = Router::current().ok_or(Error::RouterShutdown)?;
    let (tx, rx) = r.channel_with_window::<Blob>(window as usize);
    KEPT.lock().unwrap_or_else(|e| e.into_inner()).push(rx);
    Ok(tx)
}

/// Polls `f` every 20 ms until it holds, for at most `limit`.
pub fn wait_for(limit: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<bool> {
    let end = std::time::Instant::now() + limit;
    loop {
        if f()? {
            return Ok(true);
        }
        if std::time::Instant::now() > end {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
