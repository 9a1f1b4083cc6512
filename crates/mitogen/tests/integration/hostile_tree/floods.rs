//! What a context may make another hold: a receiver's queue, the message
//! size limit, a flood its relay cannot pass on or that would be echoed back
//! to it, and forwarded log records.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use bytes::Bytes;
use mitogen::testing::message::{FLAG_KEYED, MASTER_ID};
use mitogen::{Blob, Error, Local, Router, Sender};

use super::{expect_warned, forge, fork_writer, key_of, raw, rss_kib, Down};
use crate::calls::add;
use crate::capture;

/// Sends `chunks` values of `size` bytes to `tx` as fast as the stream takes
/// them.
#[mitogen::remote]
pub fn flood_blobs(tx: Sender<Blob>, chunks: u32, size: u32) -> mitogen::Result<()> {
    let chunk = Bytes::from(vec![1u8; size as usize]);
    for _ in 0..chunks {
        tx.send(Blob(chunk.clone()))?;
    }
    Ok(())
}

pub fn receiver_that_falls_behind_is_closed_not_grown(_: &Router) -> Result<()> {
    // A sender that keeps to its window is held back (see `flow`); a
    // context that ignores credit and writes raw frames is cut off once it
    // is a window ahead of the reader.
    let r = Router::builder().build()?;
    let child = r.local()?;
    let _down = Down(vec![child.clone()]);
    let mark = capture::mark();
    let window = 4 << 20;
    let (tx, rx) = r.channel_with_window::<Blob>(window);
    let frame = raw(
        MASTER_ID,
        child.id(),
        rx.handle(),
        key_of(&tx)?,
        FLAG_KEYED,
        &vec![1u8; 256 << 10],
    );
    // 24 MiB (six windows) that nobody reads meanwhile, once the reply to
    // this call is out (the two must not interleave on the stream).
    child.call(fork_writer, (frame, 96, 300))?;
    std::thread::sleep(Duration::from_millis(1000));
    let mut got = 0usize;
    let end = loop {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(b) => got += b.len(),
            Err(e) => break e,
        }
    };
    match &end {
        Error::ChannelClosed(reason) if reason.contains("past its window") => {}
        other => bail!(
            "after {} MiB: expected the channel closed, got {other:?}",
            got >> 20
        ),
    }
    ensure!(got <= window, "the receiver held {} bytes", got);
    ensure!(
        got >= window - (256 << 10),
        "only {got} bytes arrived before the cut"
    );
    expect_warned(mark, None, "past its window")?;
    // The context is fine; a new channel works.
    let (tx, rx) = r.channel::<Blob>();
    child.call(flood_blobs, (tx, 4, 1024))?;
    for _ in 0..4 {
        ensure!(rx.recv_timeout(Duration::from_secs(5))?.len() == 1024);
    }
    Ok(())
}

pub fn message_size_limit_is_clamped_to_the_length_field(_: &Router) -> Result<()> {
    let r = Router::builder().max_message_size(usize::MAX).build()?;
    ensure!(
        r.max_message_size() == u32::MAX as usize - 1,
        "a limit of {} bytes was kept",
        r.max_message_size()
    );
    // Children get the clamped limit and work as ever.
    let child = r.local()?;
    ensure!(child.call(add, (1, 2))? == 3);
    child.shutdown()?;
    Ok(())
}

pub fn relay_does_not_echo_a_flood_back_to_a_child_that_does_not_read(
    router: &Router,
) -> Result<()> {
    use crate::util::{proc_state, wait_until};
    use rustix::process::{kill_process, Pid, Signal};
    let mid = router.local()?;
    let bad = router.start(Some(&mid), Local::new().name("ht-echo"))?;
    let _down = Down(vec![bad.clone(), mid.clone()]);
    let mark = capture::mark();
    let mid_pid = mid.call(mitogen::builtins::getpid, ())?;
    let bad_pid = bad.call(mitogen::builtins::getpid, ())?;
    // 160 MiB of frames for the hostile child itself: its own router would
    // have delivered them, so they can only mean to come back down.
    let me = bad.id();
    let chunk = raw(me, me, 999_999, 0, 0, &[0u8; 64 << 10]);
    let before = rss_kib(mid_pid)?;
    let writer = bad.call(fork_writer, (chunk, 2560, 300))?;
    let pid = |p: u32| Pid::from_raw(p as i32).context("pid");
    kill_process(pid(bad_pid)?, Signal::STOP)?;
    ensure!(wait_until(Duration::from_secs(5), || proc_state(bad_pid) == Some('T')));
    let done = wait_until(Duration::from_secs(60), || {
        matches!(proc_state(writer), None | Some('Z'))
    });
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_kib(mid_pid)?;
    println!(
        "    (relay memory {before} KiB before the flood, {after} KiB after; writer {:?})",
        proc_state(writer)
    );
    kill_process(pid(bad_pid)?, Signal::CONT)?;
    ensure!(done, "the writer did not finish");
    ensure!(
        after < before + (32 << 10),
        "the relay grew from {before} KiB to {after} KiB"
    );
    expect_warned(mark, Some(mid.name()), "behind the stream it came on")?;
    ensure!(mid.call(add, (1, 2))? == 3);
    Ok(())
}

pub fn relay_holds_a_child_back_while_its_parent_does_not_drain(router: &Router) -> Result<()> {
    use crate::util::{proc_state, wait_until};
    use rustix::process::{kill_process, Pid, Signal};
    let top = router.start(None, Local::new().name("ht-hold-top"))?;
    let mid = router.start(Some(&top), Local::new().name("ht-hold-mid"))?;
    let bad = router.start(Some(&mid), Local::new().name("ht-hold-bad"))?;
    let _down = Down(vec![bad.clone(), mid.clone(), top.clone()]);
    let top_pid = top.call(mitogen::builtins::getpid, ())?;
    let mid_pid = mid.call(mitogen::builtins::getpid, ())?;
    let pid = |p: u32| Pid::from_raw(p as i32).context("pid");
    // 160 MiB for `top`, which reads nothing meanwhile: everything the
    // hostile child sends piles up in `mid` unless `mid` stops reading it.
    let me = bad.id();
    let chunk = raw(top.id(), me, 999_999, 0, 0, &[0u8; 64 << 10]);
    let before = rss_kib(mid_pid)?;
    // The writer starts after 500 ms: the call to start it passes `top`.
    let writer = bad.call(fork_writer, (chunk, 2560, 500))?;
    kill_process(pid(top_pid)?, Signal::STOP)?;
    ensure!(wait_until(Duration::from_secs(5), || proc_state(top_pid) == Some('T')));
    std::thread::sleep(Duration::from_millis(2000));
    let during = rss_kib(mid_pid)?;
    kill_process(pid(top_pid)?, Signal::CONT)?;
    println!(
        "    (relay memory {before} KiB before the flood, {during} KiB with its parent stopped)"
    );
    ensure!(
        during < before + (48 << 10),
        "the relay grew from {before} KiB to {during} KiB"
    );
    // Once `top` reads again, all of it passes and everyone answers.
    ensure!(
        wait_until(Duration::from_secs(30), || matches!(
            proc_state(writer),
            None | Some('Z')
        )),
        "the flood never drained"
    );
    for c in [&top, &mid, &bad] {
        ensure!(c.call_timeout(add, (1, 2), Duration::from_secs(10))? == 3);
    }
    Ok(())
}

pub fn forwarded_log_flood_is_cut(router: &Router) -> Result<()> {
    use mitogen::testing::LogRecord;
    let bad = router.local()?;
    let _down = Down(vec![bad.clone()]);
    let mark = capture::mark();
    let me = bad.id();
    let record = |target: &str, message: &str| {
        postcard::to_allocvec(&LogRecord::new(tracing::Level::INFO, target, message))
            .expect("encodable")
    };
    let handle = mitogen::testing::message::handles::FORWARD_LOG;
    let mut frames = raw(
        MASTER_ID,
        me,
        handle,
        0,
        0,
        &record("ht-big", &"y".repeat(1 << 20)),
    );
    const N: usize = 30_000;
    for _ in 0..N {
        frames.extend(raw(MASTER_ID, me, handle, 0, 0, &record("ht-flood", "x")));
    }
    let started = Instant::now();
    forge(&bad, frames)?;
    ensure!(bad.call(add, (1, 1))? == 2);
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let events = capture::since(mark);
    let from = |origin: &str| {
        events
            .iter()
            .filter(|e| e.target == "mitogen::remote" && e.field("origin") == Some(origin))
            .count()
    };
    let big = events
        .iter()
        .find(|e| e.field("origin") == Some("ht-big"))
        .context("the large record did not arrive")?;
    ensure!(
        big.message.len() <= 70_000 && big.message.contains("bytes cut"),
        "a record of {} bytes was logged",
        big.message.len()
    );
    let flood = from("ht-flood");
    let allowed = 10_000 * (took.as_secs() as usize + 2);
    ensure!(
        flood < N.min(allowed),
        "{flood} of {N} records logged in {took:?}"
    );
    expect_warned(mark, None, "dropping log records")?;
    Ok(())
}

crate::tests! {
    receiver_that_falls_behind_is_closed_not_grown,
    message_size_limit_is_clamped_to_the_length_field,
    forwarded_log_flood_is_cut,
    relay_does_not_echo_a_flood_back_to_a_child_that_does_not_read,
    relay_holds_a_child_back_while_its_parent_does_not_drain,
}
