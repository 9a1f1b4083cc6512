//! Channels that end when their last sender is dropped, wherever its copies
//! went, and the async API under more than one runtime: tokio, smol and a
//! plain `futures::executor::block_on`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use futures::StreamExt;
use mitogen::{Error, Receiver, Router, Select, Sender};

use crate::calls::add;
use crate::util::local;

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

pub fn send_timeout_and_send_async(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let (tx, rx) = router.channel::<u64>();
    tx.send_timeout(9, Duration::from_secs(1))?;
    futures::executor::block_on(tx.send_async(10))?;
    drop(tx);
    expect_values_then_end(&rx, &[9, 10], Duration::from_secs(5))?;
    // A send not awaited yet keeps the channel open after its sender goes.
    let (tx, rx) = router.channel::<u64>();
    let pending = tx.send_async(11);
    drop(tx);
    expect_open(&rx)?;
    futures::executor::block_on(pending)?;
    expect_values_then_end(&rx, &[11], Duration::from_secs(5))?;
    let (tx, rx) = ctx.channel::<u64>();
    ctx.call(count_to_async, (100, tx))?;
    let want: Vec<u64> = (0..100).collect();
    expect_values_then_end(&rx, &want, Duration::from_secs(10))
}

type Task = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Two tasks awaiting one receiver, and a thread that sends two values once
/// both wait: each task must get one (a put wakes every waiting task, not
/// only the last one that polled). Returns the tasks and what they got.
fn two_tasks_one_receiver(router: &Router) -> (Vec<Task>, Arc<Mutex<Vec<u64>>>) {
    let (tx, rx) = router.channel::<u64>();
    let rx = Arc::new(rx);
    let done = Arc::new(Mutex::new(Vec::new()));
    let tasks = (0..2)
        .map(|_| {
            let (rx, done) = (rx.clone(), done.clone());
            Box::pin(async move {
                let v = rx.recv_async().await.unwrap_or(u64::MAX);
                done.lock().unwrap_or_else(|e| e.into_inner()).push(v);
            }) as Task
        })
        .collect();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let _ = tx.send(1);
        std::thread::sleep(Duration::from_millis(50));
        let _ = tx.send(2);
    });
    (tasks, done)
}

fn both_got_one(done: &Arc<Mutex<Vec<u64>>>) -> Result<()> {
    let mut got = done.lock().unwrap_or_else(|e| e.into_inner()).clone();
    got.sort();
    ensure!(got == [1, 2], "the two tasks got {got:?}");
    Ok(())
}

pub fn two_tasks_await_one_receiver_under_tokio(router: &Router) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (tasks, done) = two_tasks_one_receiver(router);
    rt.block_on(async {
        let handles: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
        let _ =
            tokio::time::timeout(Duration::from_secs(5), futures::future::join_all(handles)).await;
    });
    both_got_one(&done)
}

pub fn two_tasks_await_one_receiver_under_smol(router: &Router) -> Result<()> {
    let ex = smol::LocalExecutor::new();
    let (tasks, done) = two_tasks_one_receiver(router);
    let tasks: Vec<_> = tasks.into_iter().map(|t| ex.spawn(t)).collect();
    smol::block_on(ex.run(async {
        let _ = futures::future::select(
            futures::future::join_all(tasks),
            smol::Timer::after(Duration::from_secs(5)),
        )
        .await;
    }));
    both_got_one(&done)
}

pub fn receiver_is_a_stream(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let (tx, rx) = router.channel::<u64>();
    ctx.call_no_reply(count_to, (50, tx))?;
    let got: Vec<u64> = futures::executor::block_on(async {
        let mut rx = rx;
        let mut got = Vec::new();
        while let Some(v) = rx.next().await {
            got.push(v?);
        }
        Ok::<_, Error>(got)
    })?;
    ensure!(got == (0..50).collect::<Vec<_>>(), "got {got:?}");
    // A context's receiver yields the disconnection once, then ends.
    let doomed = router.local()?;
    let (tx, mut rx) = doomed.channel::<u64>();
    doomed.call(keep, (tx,))?;
    let pid = crate::util::pid_of(&doomed)?;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).ok_or_else(|| anyhow::anyhow!("pid 0"))?,
        rustix::process::Signal::KILL,
    )?;
    let items: Vec<_> = smol::block_on(async {
        let mut items = Vec::new();
        while let Some(item) = rx.next().await {
            items.push(item);
        }
        items
    });
    ensure!(
        matches!(items.as_slice(), [Err(Error::Disconnected { .. })]),
        "items {items:?}"
    );
    Ok(())
}

pub fn async_connect_and_select(router: &Router) -> Result<()> {
    // tokio: connect, call, select over two receivers.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let ctx = router.local_async().await?;
        ensure!(ctx.call_async(add, (2, 3)).await? == 5);
        let (ta, ra) = router.channel::<u64>();
        let (tb, rb) = router.channel::<u64>();
        let mut select = Select::new();
        let ia = select.add(&ra)?;
        let ib = select.add(&rb)?;
        ctx.call_no_reply(count_to, (1, tb))?;
        let ready = tokio::time::timeout(Duration::from_secs(10), select.wait_async()).await??;
        ensure!(ready == ib && ready != ia, "ready {ready}");
        ensure!(rb.recv_async().await? == 0);
        drop(ta);
        ctx.shutdown()?;
        Ok(())
    })?;
    // smol and a plain block_on: connect by target.
    let target: mitogen::Target = "local".parse()?;
    let opts = mitogen::ConnectOptions::default();
    let a = smol::block_on(router.connect_async(&target, &opts))?;
    let b = futures::executor::block_on(router.start_async(Some(&a), mitogen::Local::new()))?;
    ensure!(futures::executor::block_on(b.call_async(add, (1, 1)))? == 2);
    b.shutdown()?;
    a.shutdown()?;
    Ok(())
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

/// Opens an inbox for blobs in this context and returns its sender (kept
/// open: the sender is returned, so the channel is pinned).
#[mitogen::remote]
pub fn open_blob_inbox() -> mitogen::Result<Sender<mitogen::Blob>> {
    let router = Router::current().ok_or(Error::RouterShutdown)?;
    let (tx, rx) = router.channel::<mitogen::Blob>();
    BLOB_INBOX
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .replace(rx);
    Ok(tx)
}

static BLOB_INBOX: Mutex<Option<Receiver<mitogen::Blob>>> = Mutex::new(None);

pub fn send_timeout_gives_up_on_a_stalled_context(router: &Router) -> Result<()> {
    use rustix::process::{kill_process, Pid, Signal};
    let ctx = local(router)?;
    let tx = ctx.call(open_blob_inbox, ())?;
    let pid =
        Pid::from_raw(crate::util::pid_of(&ctx)? as i32).ok_or_else(|| anyhow::anyhow!("pid 0"))?;
    kill_process(pid, Signal::STOP)?;
    let chunk = mitogen::Blob::from(vec![0u8; 1 << 20]);
    let mut outcome = None;
    // The kernel's buffers and the stream's queue fill; then the wait for
    // room must give up at the deadline.
    for _ in 0..256 {
        let t = Instant::now();
        match tx.send_timeout(chunk.clone(), Duration::from_millis(200)) {
            Ok(()) => continue,
            Err(e) => {
                outcome = Some((e, t.elapsed()));
                break;
            }
        }
    }
    // An async send waits (on a thread of its own) and completes once the
    // context reads again.
    let pending = std::thread::spawn({
        let tx = tx.clone();
        let chunk = chunk.clone();
        move || futures::executor::block_on(tx.send_async(chunk))
    });
    std::thread::sleep(Duration::from_millis(200));
    let waiting = !pending.is_finished();
    kill_process(pid, Signal::CONT)?;
    let sent = pending
        .join()
        .map_err(|_| anyhow::anyhow!("send thread panicked"))?;
    match outcome {
        Some((Error::Timeout(_), took)) if took >= Duration::from_millis(200) => {}
        other => bail!("expected a send to time out, got {other:?}"),
    }
    ensure!(waiting, "send_async did not wait for room");
    sent?;
    Ok(())
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
    send_timeout_and_send_async,
    two_tasks_await_one_receiver_under_tokio,
    two_tasks_await_one_receiver_under_smol,
    receiver_is_a_stream,
    async_connect_and_select,
    context_without_the_sender_cannot_end_the_channel,
    send_timeout_gives_up_on_a_stalled_context,
    sender_sent_back_to_the_receivers_process,
}
