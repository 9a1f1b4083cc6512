//! The async API under more than one runtime: sends with a deadline and
//! async, two tasks on one receiver, a receiver as a stream, `Select`, and a
//! send that gives up on a stalled context.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use futures::StreamExt;
use mitogen::{Error, Receiver, Router, Select, Sender};

use super::{count_to, count_to_async, expect_open, expect_values_then_end, keep};
use crate::calls::add;
use crate::util::local;

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

crate::tests! {
    send_timeout_and_send_async,
    two_tasks_await_one_receiver_under_tokio,
    two_tasks_await_one_receiver_under_smol,
    receiver_is_a_stream,
    async_connect_and_select,
    send_timeout_gives_up_on_a_stalled_context,
}
