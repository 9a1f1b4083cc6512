//! Channels that end when their last sender is dropped, wherever its copies
//! went, and the async API under more than one runtime: tokio, smol and a
//! plain `futures::executor::block_on`.
//!
//! This module holds the remote functions the parts share and the checks of a
//! receiver's values and end. The tests are in the parts: `ending` (when a
//! channel ends, wherever its senders went) and `runtimes` (sends with a
//! deadline and async, several tasks on one receiver, streams and `Select`
//! under tokio, smol and `block_on`).

pub mod ending;
pub mod runtimes;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use mitogen::{Error, Receiver, Router, Sender};

/// Sends `0..n` and returns without closing: dropping `out` ends the channel.
#[mitogen::remote]
pub fn count_to(n: u64, out: Sender<u64>) -> mitogen::Result<()> {
    for i in 0..n {
        out.send(i)?;
    }
    Ok(())
}

/// [`count_to`] with `send_async` under `futures::executor::block_on`.
#[mitogen::remote]
pub fn count_to_async(n: u64, out: Sender<u64>) -> mitogen::Result<()> {
    futures::executor::block_on(async {
        for i in 0..n {
            out.send_async(i).await?;
        }
        Ok(())
    })
}

/// Senders this context keeps until [`drop_kept`].
static KEPT: Mutex<Vec<Sender<u64>>> = Mutex::new(Vec::new());

/// Keeps `out` (the channel stays open while this context lives).
#[mitogen::remote]
pub fn keep(out: Sender<u64>) {
    KEPT.lock().unwrap_or_else(|e| e.into_inner()).push(out);
}

/// Drops the senders kept by [`keep`].
#[mitogen::remote]
pub fn drop_kept() {
    KEPT.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// Sends one value and fails.
#[mitogen::remote]
pub fn send_then_fail(out: Sender<u64>) -> std::io::Result<()> {
    let _ = out.send(1);
    Err(std::io::Error::other("failed on purpose"))
}

/// Senders that arrived in this context's inbox ([`open_inbox`]).
static INBOX: Mutex<Option<Receiver<Sender<u64>>>> = Mutex::new(None);

/// Opens an inbox for senders in this context and returns its sender.
#[mitogen::remote]
pub fn open_inbox() -> mitogen::Result<Sender<Sender<u64>>> {
    let router = Router::current().ok_or(Error::RouterShutdown)?;
    let (tx, rx) = router.channel::<Sender<u64>>();
    *INBOX.lock().unwrap_or_else(|e| e.into_inner()) = Some(rx);
    Ok(tx)
}

/// Passes `out` on to the context whose inbox `to` is; this context's copy
/// is dropped on return.
#[mitogen::remote]
pub fn pass_on(out: Sender<u64>, to: Sender<Sender<u64>>) -> mitogen::Result<()> {
    to.send(out)
}

/// Takes the sender from this context's inbox and, on a thread of its own,
/// sends 7 after `ms` and drops it.
#[mitogen::remote]
pub fn send_later(ms: u64) -> mitogen::Result<()> {
    let inbox = INBOX.lock().unwrap_or_else(|e| e.into_inner());
    let rx = inbox.as_ref().ok_or(Error::RouterShutdown)?;
    let out = rx.recv_timeout(Duration::from_secs(5))?;
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(ms));
        let _ = out.send(7);
    });
    Ok(())
}

/// A function no context has: a call that never runs.
#[derive(Clone, Copy)]
struct NotThere;

impl mitogen::RemoteFn for NotThere {
    type Args = (Sender<u64>,);
    type Output = u64;
    const NAME: &'static str = "integration::async_api::not_there";
}

impl mitogen::IntoArgs<NotThere> for (Sender<u64>,) {
    fn into_args(self) -> (Sender<u64>,) {
        self
    }
}

/// `rx` yields exactly `want` and then ends with `ChannelClosed`, each
/// within `within`.
fn expect_values_then_end(rx: &Receiver<u64>, want: &[u64], within: Duration) -> Result<()> {
    let mut got = Vec::new();
    loop {
        match rx.recv_timeout(within) {
            Ok(v) => got.push(v),
            Err(Error::ChannelClosed(_)) => break,
            Err(e) => bail!("after {got:?}: expected the channel to end, got {e:?}"),
        }
    }
    ensure!(got == want, "got {got:?}, want {want:?}");
    // And every later wait ends at once too.
    let t = Instant::now();
    ensure!(matches!(rx.recv(), Err(Error::ChannelClosed(_))));
    ensure!(t.elapsed() < Duration::from_secs(1));
    Ok(())
}

fn expect_open(rx: &Receiver<u64>) -> Result<()> {
    match rx.recv_timeout(Duration::from_millis(300)) {
        Err(Error::Timeout(_)) => Ok(()),
        other => bail!("expected the channel to stay open, got {other:?}"),
    }
}
