//! A hostile child writing raw bytes on its own stream: the master must log a
//! clear error, drop what is bad (disconnecting the stream when the framing is
//! broken), fail what was pending on it, and keep serving everyone else.

use std::os::fd::{BorrowedFd, RawFd};
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use bytes::Bytes;
use mitogen::testing::message::{
    handles, Message, DEFAULT_MAX_MESSAGE_SIZE, FLAG_KEYED, MASTER_ID,
};
use mitogen::{Error, Router};
use serde::{Deserialize, Serialize};
use tracing::Level;

use crate::calls::add;
use crate::capture;
use crate::hostile_tree::key_of;
use crate::util::{local, wait_until, Guard};

/// What the hostile function does after writing.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub enum After {
    /// Keep the stream open.
    Nothing,
    /// Shut down the writing direction, so the parent reads EOF.
    CloseWrite,
}

/// The child's stream to its parent: the only socket a local child has (its
/// fd 0 moved to a higher descriptor when the child started).
pub fn parent_stream_fd() -> std::io::Result<RawFd> {
    let mut fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd: &RawFd| {
            fd > 2
                && std::fs::read_link(format!("/proc/self/fd/{fd}"))
                    .is_ok_and(|p| p.to_string_lossy().starts_with("socket:"))
        })
        .collect();
    fds.sort_unstable();
    match fds.as_slice() {
        [fd] => Ok(*fd),
        other => Err(std::io::Error::other(format!(
            "expected one socket, found {other:?}"
        ))),
    }
}

/// Writes all of `bytes` on `fd`, a non-blocking stream the router also
/// watches: waits a millisecond whenever it is full.
pub fn write_all_raw(fd: BorrowedFd<'_>, bytes: &[u8]) -> std::io::Result<()> {
    let mut left = bytes;
    while !left.is_empty() {
        match rustix::io::write(fd, left) {
            Ok(n) => left = &left[n..],
            Err(rustix::io::Errno::AGAIN) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Writes `bytes` raw on this child's parent stream, then sleeps `sleep_ms`.
#[mitogen::remote]
pub fn write_raw(bytes: Vec<u8>, after: After, sleep_ms: u64) -> std::io::Result<()> {
    let raw = parent_stream_fd()?;
    // SAFETY: the descriptor stays open for the life of the process.
    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
    write_all_raw(fd, &bytes)?;
    if let After::CloseWrite = after {
        rustix::net::shutdown(fd, rustix::net::Shutdown::Write)?;
    }
    std::thread::sleep(Duration::from_millis(sleep_ms));
    Ok(())
}

/// One encoded frame.
fn frame(src: u32, handle: u32, reply_to: u32, body: &[u8]) -> Vec<u8> {
    let msg = Message {
        dst: MASTER_ID,
        src,
        auth_id: src,
        handle,
        reply_to,
        body: Bytes::copy_from_slice(body),
        ..Default::default()
    };
    let mut v = msg.encode_header().to_vec();
    v.extend_from_slice(body);
    v
}

/// One encoded frame for a channel whose sender's key is `key`.
fn frame_keyed(src: u32, handle: u32, key: u32, body: &[u8]) -> Vec<u8> {
    let mut f = frame(src, handle, key, body);
    f[2..4].copy_from_slice(&FLAG_KEYED.to_le_bytes());
    f
}

/// Runs a hostile write whose framing is broken and checks the outcome.
fn expect_disconnect(
    router: &Router,
    bytes: impl FnOnce(u32) -> Vec<u8>,
    after: After,
    log: impl Fn(&capture::Captured) -> bool,
    what: &str,
) -> Result<()> {
    let healthy = local(router)?;
    let bad = local(router)?;
    let name = bad.name().to_owned();
    let mark = capture::mark();
    let writing = bad.call_async(write_raw, (bytes(bad.id()), after, 30_000));
    let queued = bad.call_async(add, (1, 2));
    for (call, r) in [
        (
            "the writing call",
            writing.get_timeout(Duration::from_secs(10)),
        ),
        (
            "a queued call",
            queued.get_timeout(Duration::from_secs(10)).map(drop),
        ),
    ] {
        match r {
            Err(Error::Disconnected { context, .. }) if context == name => {}
            other => bail!("{call}: expected Disconnected naming {name:?}, got {other:?}"),
        }
    }
    ensure!(bad.is_disconnected());
    capture::wait_for(mark, Duration::from_secs(5), |e| {
        e.level <= Level::WARN && e.field("stream") == Some(name.as_str()) && log(e)
    })
    .with_context(|| format!("no warning or error logged for {what} on stream {name:?}"))?;
    ensure!(
        wait_until(Duration::from_secs(5), || bad.exit_status().is_some()),
        "the hostile child did not exit after its stream was closed"
    );
    match bad.call_timeout(add, (1, 1), Duration::from_secs(5)) {
        Err(Error::Disconnected { .. }) => {}
        other => bail!("a call after the disconnect: expected Disconnected, got {other:?}"),
    }
    ensure!(
        healthy.call(add, (2, 2))? == 4,
        "another context was affected"
    );
    Ok(())
}

pub fn bad_magic(router: &Router) -> Result<()> {
    expect_disconnect(
        router,
        |id| {
            let mut f = frame(id, 1000, 0, b"hello");
            f[0..2].copy_from_slice(&0xdeadu16.to_le_bytes());
            f
        },
        After::Nothing,
        |e| e.level == Level::ERROR && e.message.contains("bad magic"),
        "a bad magic",
    )
}

pub fn truncated_frame_then_eof(router: &Router) -> Result<()> {
    expect_disconnect(
        router,
        |id| {
            let mut f = frame(id, 1000, 0, b"0123456789");
            f.truncate(20);
            f
        },
        After::CloseWrite,
        |_| true,
        "a frame cut short by end of stream",
    )
}

pub fn length_over_limit(router: &Router) -> Result<()> {
    expect_disconnect(
        router,
        |id| {
            let mut f = frame(id, 1000, 0, b"");
            let len = (DEFAULT_MAX_MESSAGE_SIZE + 1) as u32;
            f[24..28].copy_from_slice(&len.to_le_bytes());
            f
        },
        After::Nothing,
        |e| e.level == Level::ERROR && e.message.contains("exceeds the limit"),
        "an oversized length",
    )
}

/// Runs `bytes` through a hostile child whose framing is fine, and checks
/// that its stream survives.
fn write_and_survive(bad: &Guard, bytes: Vec<u8>) -> Result<()> {
    bad.call_timeout(
        write_raw,
        (bytes, After::Nothing, 0),
        Duration::from_secs(10),
    )?;
    ensure!(bad.call_timeout(add, (5, 5), Duration::from_secs(10))? == 10);
    ensure!(!bad.is_disconnected());
    Ok(())
}

pub fn message_to_unknown_handle(router: &Router) -> Result<()> {
    let healthy = local(router)?;
    let bad = local(router)?;
    let mark = capture::mark();
    // An unused user handle (asking for a reply, which bounces back dead), and
    // the call handle, which a master does not serve.
    let mut bytes = frame(bad.id(), 999_999, 4242, b"x");
    bytes.extend(frame(
        bad.id(),
        handles::CALL_FUNCTION,
        4243,
        b"\x00\x03abc",
    ));
    write_and_survive(&bad, bytes)?;
    for handle in ["999999", "101"] {
        capture::wait_for(mark, Duration::from_secs(5), |e| {
            e.message.contains("unknown handle") && e.field("handle") == Some(handle)
        })
        .with_context(|| format!("no log of the message to unknown handle {handle}"))?;
    }
    ensure!(healthy.call(add, (2, 2))? == 4);
    Ok(())
}

pub fn undecodable_channel_body(router: &Router) -> Result<()> {
    let bad = local(router)?;
    let (tx, rx) = bad.channel::<u64>();
    let key = key_of(&tx)?;
    let mut bytes = frame_keyed(bad.id(), rx.handle(), key, &[0xff; 12]);
    bytes.extend(frame_keyed(
        bad.id(),
        rx.handle(),
        key,
        &postcard::to_allocvec(&7u64)?,
    ));
    write_and_survive(&bad, bytes)?;
    match rx.recv_timeout(Duration::from_secs(5)) {
        Err(Error::Codec { op: "decode", .. }) => {}
        other => bail!("expected a decode error, got {other:?}"),
    }
    ensure!(
        rx.recv_timeout(Duration::from_secs(5))? == 7,
        "the next value was lost"
    );
    Ok(())
}

pub fn undecodable_log_record(router: &Router) -> Result<()> {
    let bad = local(router)?;
    let mark = capture::mark();
    write_and_survive(&bad, frame(bad.id(), handles::FORWARD_LOG, 0, &[0xff; 9]))?;
    capture::wait_for(mark, Duration::from_secs(5), |e| {
        e.level == Level::WARN && e.message.contains("undecodable log record")
    })
    .context("no warning about the undecodable log record")?;
    Ok(())
}

pub fn spoofed_source_is_dropped(router: &Router) -> Result<()> {
    let sibling = local(router)?;
    let bad = local(router)?;
    let (tx, rx) = bad.channel::<u64>();
    let key = key_of(&tx)?;
    let mark = capture::mark();
    let mut bytes = frame_keyed(MASTER_ID, rx.handle(), key, &postcard::to_allocvec(&1u64)?);
    bytes.extend(frame_keyed(
        sibling.id(),
        rx.handle(),
        key,
        &postcard::to_allocvec(&2u64)?,
    ));
    bytes.extend(frame_keyed(
        bad.id(),
        rx.handle(),
        key,
        &postcard::to_allocvec(&3u64)?,
    ));
    write_and_survive(&bad, bytes)?;
    ensure!(
        rx.recv_timeout(Duration::from_secs(5))? == 3,
        "a spoofed message was delivered"
    );
    ensure!(matches!(rx.try_recv(), Ok(None)));
    let dropped = capture::since(mark)
        .iter()
        .filter(|e| e.level == Level::WARN && e.message.contains("source is not behind"))
        .count();
    ensure!(
        dropped == 2,
        "{dropped} spoofed messages logged, expected 2"
    );
    Ok(())
}

crate::tests! {
    bad_magic,
    truncated_frame_then_eof,
    length_over_limit,
    message_to_unknown_handle,
    undecodable_channel_body,
    undecodable_log_record,
    spoofed_source_is_dropped,
}
