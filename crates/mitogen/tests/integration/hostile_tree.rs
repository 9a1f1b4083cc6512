//! A hostile context deeper in the tree, or in the middle of it. A hostile
//! *grandchild* (say `host/sudo:www-data` below `host`) writes forged frames
//! on its own stream; a hostile *intermediate* does the same, and may also
//! stop relaying. An intermediate controls everything below it by
//! construction (it ships their program and relays their traffic), but it
//! must never forge on behalf of contexts outside its subtree; a grandchild
//! must never speak for its parent.
//!
//! Also here: the bounds on what a context may make another hold (a
//! receiver's queue, the message size limit), and child mode refused to a
//! set-user-ID program; and a hop's password, which a sibling subtree
//! never reads (watched with `strace`).

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use bytes::Bytes;
use mitogen::testing::message::{
    ContextId, Message, FLAG_DEAD, FLAG_DISCONNECTED, FLAG_KEYED, MASTER_ID,
};
use mitogen::{Blob, Context, Error, Local, Router, Sender};

use crate::calls::{add, sleep_ms};
use crate::capture;
use crate::security::send_value;

/// One raw frame as a hostile context writes it.
pub(crate) fn raw(
    dst: ContextId,
    src: ContextId,
    handle: u32,
    reply_to: u32,
    flags: u16,
    body: &[u8],
) -> Vec<u8> {
    let msg = Message {
        dst,
        src,
        auth_id: src,
        handle,
        reply_to,
        flags,
        body: Bytes::copy_from_slice(body),
    };
    let mut v = msg.encode_header().to_vec();
    v.extend_from_slice(body);
    v
}

/// The key a sender carries (it travels as `(context, handle, key)`).
pub fn key_of<T>(tx: &Sender<T>) -> Result<u32> {
    let (_, _, key): (u32, u32, u32) = postcard::from_bytes(&postcard::to_allocvec(tx)?)?;
    Ok(key)
}

/// A successful reply body carrying `v`: `ReplyHead::Ok`, then the value.
fn ok_reply(v: u64) -> Vec<u8> {
    let mut b = vec![0u8];
    b.extend(postcard::to_allocvec(&v).expect("encodable"));
    b
}

/// Writes `bytes` raw on this context's parent stream: its lowest socket
/// descriptor (the stream was moved to the lowest free one above 2 before
/// anything else was opened; the streams to its children come later).
#[mitogen::remote]
pub fn write_raw_up(bytes: Vec<u8>) -> std::io::Result<()> {
    use std::os::fd::{BorrowedFd, RawFd};
    let fd: RawFd = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd: &RawFd| {
            fd > 2
                && std::fs::read_link(format!("/proc/self/fd/{fd}"))
                    .is_ok_and(|p| p.to_string_lossy().starts_with("socket:"))
        })
        .min()
        .ok_or_else(|| std::io::Error::other("no socket"))?;
    // SAFETY: the descriptor stays open for the life of the process.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let mut left = bytes.as_slice();
    while !left.is_empty() {
        match rustix::io::write(fd, left) {
            Ok(n) => left = &left[n..],
            Err(rustix::io::Errno::AGAIN) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// This context's parent stream (see [`write_raw_up`]).
fn parent_fd() -> std::io::Result<std::os::fd::RawFd> {
    std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd: &std::os::fd::RawFd| {
            fd > 2
                && std::fs::read_link(format!("/proc/self/fd/{fd}"))
                    .is_ok_and(|p| p.to_string_lossy().starts_with("socket:"))
        })
        .min()
        .ok_or_else(|| std::io::Error::other("no socket"))
}

/// Forks a process that, after `delay_ms`, writes `frame` `times` times on
/// this context's parent stream, while this context itself can be stopped
/// and read nothing. Returns the writer's pid.
#[mitogen::remote]
pub fn fork_writer(frame: Vec<u8>, times: u32, delay_ms: u64) -> std::io::Result<u32> {
    let bytes = frame.repeat(times as usize);
    let fd = parent_fd()?;
    // SAFETY: the forked process only calls async-signal-safe functions
    // (nanosleep, poll, write, _exit) on memory it already has.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => unsafe {
            let ts = libc::timespec {
                tv_sec: (delay_ms / 1000) as libc::time_t,
                tv_nsec: ((delay_ms % 1000) * 1_000_000) as libc::c_long,
            };
            libc::nanosleep(&ts, std::ptr::null_mut());
            let mut at = 0;
            while at < bytes.len() {
                let n = libc::write(fd, bytes[at..].as_ptr().cast(), bytes.len() - at);
                if n > 0 {
                    at += n as usize;
                    continue;
                }
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                if libc::poll(&mut pfd, 1, 10_000) <= 0 {
                    libc::_exit(1);
                }
            }
            libc::_exit(0)
        },
        pid => Ok(pid as u32),
    }
}

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

/// Writes `frames` raw on `ctx`'s parent stream.
pub(crate) fn forge(ctx: &Context, frames: Vec<u8>) -> Result<()> {
    ctx.call_timeout(write_raw_up, (frames,), Duration::from_secs(30))
        .with_context(|| format!("the hostile write of {}", ctx.name()))?;
    Ok(())
}

/// Waits for a warning saying `text` from `context` (`None`: the master).
fn expect_warned(mark: usize, context: Option<&str>, text: &str) -> Result<()> {
    capture::wait_for(mark, Duration::from_secs(5), |e| {
        e.level <= tracing::Level::WARN
            && e.message.contains(text)
            && match context {
                None => e.target != "mitogen::remote",
                Some(c) => e.target == "mitogen::remote" && e.field("context") == Some(c),
            }
    })
    .map(drop)
    .with_context(|| {
        format!(
            "no warning {text:?} from {}",
            context.unwrap_or("the master")
        )
    })
}

/// Shuts contexts down (deepest first) when dropped.
struct Down(Vec<Context>);

impl Drop for Down {
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = c.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

pub fn grandchild_cannot_answer_calls_to_its_parent(router: &Router) -> Result<()> {
    let host = router.start(None, Local::new().name("ht-host"))?;
    let gc = router.start(Some(&host), Local::new().name("ht-gc"))?;
    let _down = Down(vec![gc.clone(), host.clone()]);
    let mark = capture::mark();
    let slow = host.call_async(sleep_ms, (1500,));
    let h = slow.reply_handle();
    let (me, parent) = (gc.id(), host.id());
    // Answering as itself, killing the call with DEAD, and claiming to be
    // its parent (which the parent's router drops: not from behind the
    // grandchild's stream).
    let mut frames = raw(MASTER_ID, me, h, 0, 0, &ok_reply(777));
    frames.extend(raw(
        MASTER_ID,
        me,
        h,
        0,
        FLAG_DEAD | FLAG_DISCONNECTED,
        b"forged",
    ));
    frames.extend(raw(MASTER_ID, parent, h, 0, 0, &ok_reply(778)));
    forge(&gc, frames)?;
    match slow.get_timeout(Duration::from_secs(10)) {
        Ok(1500) => {}
        other => bail!("the call to the parent ended with {other:?}, not its own reply"),
    }
    expect_warned(mark, None, "reply not from the context called")?;
    expect_warned(mark, Some(host.name()), "source is not behind")?;
    ensure!(host.call(add, (2, 3))? == 5);
    ensure!(gc.call(add, (1, 1))? == 2);
    Ok(())
}

pub fn grandchild_cannot_send_to_channels_it_was_not_given(router: &Router) -> Result<()> {
    let host = router.start(None, Local::new().name("ht-chan-host"))?;
    let gc = router.start(Some(&host), Local::new().name("ht-chan-gc"))?;
    let _down = Down(vec![gc.clone(), host.clone()]);
    let mark = capture::mark();
    let me = gc.id();
    // A channel of the master's own, and one tied to the grandchild's
    // parent (whose subtree the grandchild is in).
    let (tx_any, rx_any) = router.channel::<u64>();
    let (tx_host, rx_host) = host.channel::<u64>();
    let value = postcard::to_allocvec(&666u64)?;
    let mut frames = Vec::new();
    for (rx, key) in [
        (rx_any.handle(), key_of(&tx_any)?),
        (rx_host.handle(), key_of(&tx_host)?),
    ] {
        // Without a key, with wrong keys, and a close without a key.
        frames.extend(raw(MASTER_ID, me, rx, 0, 0, &value));
        for wrong in [0, key ^ 1, key.wrapping_add(1), !key] {
            frames.extend(raw(MASTER_ID, me, rx, wrong, FLAG_KEYED, &value));
        }
        frames.extend(raw(MASTER_ID, me, rx, 0, FLAG_DEAD, b"forged close"));
    }
    forge(&gc, frames)?;
    for (name, rx) in [
        ("the master's channel", &rx_any),
        ("the parent's channel", &rx_host),
    ] {
        match rx.recv_timeout(Duration::from_millis(300)) {
            Err(Error::Timeout(_)) => {}
            other => bail!("{name} took a forged message: {other:?}"),
        }
    }
    expect_warned(mark, None, "without the channel's key")?;
    // Handed the senders, the same contexts may send.
    gc.call(send_value, (tx_any.clone(), 5))?;
    ensure!(rx_any.recv_timeout(Duration::from_secs(5))? == 5);
    host.call(send_value, (tx_host, 6))?;
    ensure!(rx_host.recv_timeout(Duration::from_secs(5))? == 6);
    Ok(())
}

pub fn intermediate_cannot_forge_outside_its_subtree(router: &Router) -> Result<()> {
    let mid = router.start(None, Local::new().name("ht-mid"))?;
    let below = router.start(Some(&mid), Local::new().name("ht-below"))?;
    let sibling = router.start(None, Local::new().name("ht-sibling"))?;
    let _down = Down(vec![below.clone(), mid.clone(), sibling.clone()]);
    let mark = capture::mark();
    let me = mid.id();
    let slow = sibling.call_async(sleep_ms, (1500,));
    let h = slow.reply_handle();
    let (tx, rx) = router.channel::<u64>();
    let value = postcard::to_allocvec(&666u64)?;
    // Replies to a call made to another subtree: as that subtree (dropped by
    // the master: not from behind the intermediate's stream), as itself and
    // as its own child (refused: not the context called).
    let mut frames = raw(MASTER_ID, sibling.id(), h, 0, 0, &ok_reply(777));
    frames.extend(raw(MASTER_ID, me, h, 0, FLAG_DEAD, b"forged"));
    frames.extend(raw(MASTER_ID, below.id(), h, 0, 0, &ok_reply(778)));
    // Values into a channel it was never handed, under every name it may
    // use, with keys guessed.
    for src in [me, below.id()] {
        frames.extend(raw(MASTER_ID, src, rx.handle(), 0, 0, &value));
        for guess in 0..64u32 {
            frames.extend(raw(
                MASTER_ID,
                src,
                rx.handle(),
                guess.wrapping_mul(0x9e37_79b9),
                FLAG_KEYED,
                &value,
            ));
        }
    }
    forge(&mid, frames)?;
    match slow.get_timeout(Duration::from_secs(10)) {
        Ok(1500) => {}
        other => bail!("the call to the sibling ended with {other:?}, not its own reply"),
    }
    match rx.recv_timeout(Duration::from_millis(300)) {
        Err(Error::Timeout(_)) => {}
        other => bail!("the channel took a forged value: {other:?}"),
    }
    expect_warned(mark, None, "source is not behind")?;
    expect_warned(mark, None, "reply not from the context called")?;
    expect_warned(mark, None, "without the channel's key")?;
    // The honest holder of the sender still gets through.
    sibling.call(send_value, (tx, 9))?;
    ensure!(rx.recv_timeout(Duration::from_secs(5))? == 9);
    ensure!(below.call(add, (2, 2))? == 4);
    Ok(())
}

pub fn stopped_intermediate_delays_only_its_subtree(router: &Router) -> Result<()> {
    let mid = router.start(None, Local::new().name("ht-stop-mid"))?;
    let below = router.start(Some(&mid), Local::new().name("ht-stop-below"))?;
    let sibling = router.start(None, Local::new().name("ht-stop-sibling"))?;
    let _down = Down(vec![below.clone(), mid.clone(), sibling.clone()]);
    let pid = mid.call(mitogen::builtins::getpid, ())?;
    let pid = rustix::process::Pid::from_raw(pid as i32).context("pid")?;
    // Holding what passes through it: calls below it wait, with a deadline.
    rustix::process::kill_process(pid, rustix::process::Signal::STOP)?;
    ensure!(
        crate::util::wait_until(Duration::from_secs(5), || crate::util::proc_state(
            pid.as_raw_nonzero().get() as u32
        ) == Some('T')),
        "the intermediate did not stop: {:?}",
        crate::util::proc_state(pid.as_raw_nonzero().get() as u32)
    );
    let r = below.call_timeout(add, (1, 2), Duration::from_millis(500));
    let sibling_ok = sibling.call_timeout(add, (2, 2), Duration::from_secs(5));
    rustix::process::kill_process(pid, rustix::process::Signal::CONT)?;
    match r {
        Err(Error::Timeout(_)) => {}
        other => bail!("a call through the stopped intermediate: {other:?}"),
    }
    ensure!(sibling_ok? == 4, "another subtree was held up");
    ensure!(below.call_timeout(add, (3, 3), Duration::from_secs(10))? == 6);
    Ok(())
}

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
    // The smallest limit: a receiver holds at most 64 MiB for its reader.
    let r = Router::builder().max_message_size(1 << 20).build()?;
    let child = r.local()?;
    let _down = Down(vec![child.clone()]);
    let mark = capture::mark();
    let (tx, rx) = r.channel::<Blob>();
    // 96 MiB that nobody reads meanwhile.
    child.call_timeout(flood_blobs, (tx, 384, 256 << 10), Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_millis(300));
    let mut got = 0usize;
    let end = loop {
        match rx.recv_timeout(Duration::from_secs(2)) {
            Ok(b) => got += b.len(),
            Err(e) => break e,
        }
    };
    match &end {
        Error::ChannelClosed(reason) if reason.contains("fell behind") => {}
        other => bail!(
            "after {} MiB: expected the channel closed, got {other:?}",
            got >> 20
        ),
    }
    ensure!(got <= 64 << 20, "the receiver held {} MiB", got >> 20);
    ensure!(
        got >= 32 << 20,
        "only {} MiB arrived before the close",
        got >> 20
    );
    expect_warned(mark, None, "fell behind")?;
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

pub fn setuid_program_refuses_child_mode(_: &Router) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = std::env::temp_dir().join(format!("mitogen-setuid-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let prog = dir.join("prog");
    std::fs::copy(std::env::current_exe()?, &prog)?;
    // Owned by root (who runs the tests), set-user-ID, run by nobody: the
    // kernel starts it with AT_SECURE.
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o4755))?;
    let started = Instant::now();
    let out = std::process::Command::new(&prog)
        .env("MITOGEN_CHILD", "1")
        .uid(65534)
        .gid(65534)
        .stdin(std::process::Stdio::null())
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !stdout.contains("MITOGEN-RS"),
        "the set-user-ID program greeted as a child: {stdout:?}"
    );
    ensure!(
        out.status.code() == Some(126) && stderr.contains("refusing child mode"),
        "exit {:?}, stderr {stderr:?}",
        out.status
    );
    ensure!(started.elapsed() < Duration::from_secs(10));
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

// ---------------------------------------------------------------------------
// A hop's password goes only down the path to the context that types it.

/// Everything a process reads while it is tapped, as `strace` shows it: the
/// tool that a hostile account on that process could run itself. Read
/// syscalls only, each with a full dump of the bytes read.
struct Tap {
    strace: std::process::Child,
    out: std::path::PathBuf,
}

/// What a tapped process read: the capture, and the bytes of each read.
struct Reads {
    /// The capture as strace wrote it.
    text: String,
    /// `(thread id, bytes)` per read syscall, from its hex dump, in order.
    by_thread: Vec<(u32, Vec<u8>)>,
}

impl Tap {
    /// Attaches to `pid` and all its threads, and with `follow` to every
    /// process it forks from now on (without, to the threads it has now
    /// only), and returns once every thread is traced.
    fn start(pid: u32, tag: &str, follow: bool) -> Result<Tap> {
        let out =
            std::env::temp_dir().join(format!("mitogen-tap-{tag}-{}-{pid}", std::process::id()));
        let _ = std::fs::remove_file(&out);
        let mut strace = std::process::Command::new("strace");
        if follow {
            strace.args(["-f", "-p", &pid.to_string()]);
        } else {
            for tid in threads_of(pid)? {
                strace.args(["-p", &tid.to_string()]);
            }
        }
        let strace = strace
            .args(["-qq", "-e", "trace=read,readv,recvfrom,recvmsg,splice"])
            .args(["-e", "read=all", "-s", "1000000", "-o"])
            .arg(&out)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("strace (is it installed?)")?;
        let mut tap = Tap { strace, out };
        let me = tap.strace.id();
        let traced = || -> bool {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                return false;
            };
            tasks.filter_map(|t| t.ok()).all(|t| {
                std::fs::read_to_string(t.path().join("status")).is_ok_and(|s| {
                    s.lines().any(|l| {
                        l.strip_prefix("TracerPid:").map(str::trim) == Some(&me.to_string())
                    })
                })
            })
        };
        let started = Instant::now();
        while !traced() {
            if let Some(status) = tap.strace.try_wait()? {
                bail!("strace on {pid} ended with {status} before it attached");
            }
            ensure!(
                started.elapsed() < Duration::from_secs(10),
                "strace did not attach to {pid} in 10 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(tap)
    }

    /// Detaches (strace lets go of every thread on SIGTERM) and returns the
    /// capture.
    fn stop(mut self) -> Result<Reads> {
        // SAFETY: plain kill(2) on the strace process this tap started.
        unsafe { libc::kill(self.strace.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.strace.try_wait()?.is_none() {
            ensure!(Instant::now() < deadline, "strace did not stop in 10 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        let text = std::fs::read_to_string(&self.out)?;
        Ok(Reads::parse(text))
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = self.strace.kill();
        let _ = self.strace.wait();
        let _ = std::fs::remove_file(&self.out);
    }
}

impl Reads {
    /// Splits the capture into syscalls (`TID name(...)` lines, each with
    /// its dump below it: ` | 00000  hh hh ...  ascii |`).
    fn parse(text: String) -> Reads {
        let mut by_thread: Vec<(u32, Vec<u8>)> = Vec::new();
        for line in text.lines() {
            if let Some(dump) = line.strip_prefix(" | ") {
                // Five digits of offset, two spaces, then 16 bytes in 49
                // columns (a space more after the eighth).
                let hex = dump.get(7..56).or_else(|| dump.get(7..)).unwrap_or("");
                if let Some((_, bytes)) = by_thread.last_mut() {
                    bytes.extend(
                        hex.split_whitespace()
                            .filter_map(|b| u8::from_str_radix(b, 16).ok()),
                    );
                }
            } else if let Some(tid) = line.split(' ').next().and_then(|t| t.parse().ok()) {
                by_thread.push((tid, Vec::new()));
            }
        }
        Reads { text, by_thread }
    }

    /// Whether `needle` was read, by a thread in `threads` (any thread:
    /// `None`): in the dumps' bytes, or anywhere in the capture as text or
    /// in the hex forms strace prints (`\x70\x77`, `70 77`).
    fn saw(&self, needle: &[u8], threads: Option<&[u32]>) -> bool {
        let in_dumps = self.by_thread.iter().any(|(tid, bytes)| {
            threads.is_none_or(|t| t.contains(tid))
                && bytes.windows(needle.len()).any(|w| w == needle)
        });
        if threads.is_some() {
            return in_dumps;
        }
        let escaped: String = needle.iter().map(|b| format!("\\x{b:02x}")).collect();
        let spaced: Vec<String> = needle.iter().map(|b| format!("{b:02x}")).collect();
        in_dumps
            || std::str::from_utf8(needle).is_ok_and(|s| self.text.contains(s))
            || self.text.contains(&escaped)
            || self.text.contains(&spaced.join(" "))
    }
}

/// The threads of `pid` now.
fn threads_of(pid: u32) -> Result<Vec<u32>> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/task"))?
        .filter_map(|t| t.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

/// A sudo hop with a password, started through an intermediate: the
/// password travels master → mid only. Two sibling subtrees of mid watch
/// everything they read while the hop connects and is used: a leaf, and an
/// intermediate with a child of its own (which relays its child's traffic).
/// Neither ever reads the password, while each reads the markers sent to it
/// (the tap works), and mid itself, tapped the same way, reads the password
/// (the tap would have caught it).
///
/// ```text
/// master ─┬─ mid (sudo to a user whose sudo asks its password)
///         │    └─ sudo:app with that password, typed by mid
///         ├─ leaf sibling
///         └─ sibling ─ below
/// ```
pub fn hop_password_never_reaches_a_sibling_subtree(router: &Router) -> Result<()> {
    use crate::switch_user::{echo_bytes, fixture, APP_USER, PW_USER, PW_USER_PASSWORD};
    use crate::util::{pid_of, Guard};
    use mitogen::Sudo;

    fixture()?;
    let t = Duration::from_secs(30);
    let leaf = Guard(router.start(None, Local::new().name("ht-pw-leaf"))?);
    let sibling = Guard(router.start(None, Local::new().name("ht-pw-sibling"))?);
    let below = Guard(router.start(Some(&sibling), Local::new().name("ht-pw-below"))?);
    // Root needs no password to become the password user.
    let mid = Guard(router.start(None, Sudo::new().user(PW_USER).connect_timeout(t))?);
    for c in [&leaf, &sibling, &below, &mid] {
        ensure!(c.call_timeout(add, (1, 2), t)? == 3);
    }
    // The pid of mid's own process (the one the master started is sudo's).
    let mid_pid = mid.call_timeout(crate::calls::pid, (), t)?;
    let (leaf_pid, sibling_pid) = (pid_of(&leaf)?, pid_of(&sibling)?);

    // The app user's copy of the program is cached before the taps start:
    // mid's tap sees its own threads only (not sudo's, which read the
    // password from the pty, nor the copy mid would ship).
    let password = PW_USER_PASSWORD.as_bytes();
    let hop = || {
        Sudo::new()
            .user(APP_USER)
            .password(PW_USER_PASSWORD)
            .connect_timeout(t)
    };
    drop(Guard(router.start(Some(&mid), hop())?));
    let taps = [
        ("leaf", Tap::start(leaf_pid, "leaf", true)?),
        ("sibling", Tap::start(sibling_pid, "sibling", true)?),
    ];
    let mid_tap = Tap::start(mid_pid, "mid", false)?;
    let marker = |who: &str| format!("tap-marker-{who}-{}", std::process::id()).into_bytes();
    let app = (|| -> Result<Guard> {
        for (ctx, who) in [(&leaf, "leaf"), (&sibling, "sibling"), (&below, "below")] {
            ensure!(ctx.call_timeout(echo_bytes, (marker(who),), t)? == marker(who));
        }
        let app = Guard(router.start(Some(&mid), hop())?);
        for _ in 0..3 {
            ensure!(app.call_timeout(add, (2, 2), t)? == 4);
            for ctx in [&leaf, &sibling, &below] {
                ensure!(ctx.call_timeout(add, (3, 3), t)? == 6);
            }
        }
        Ok(app)
    })();
    let mid_threads = threads_of(mid_pid)?;
    let mid_reads = mid_tap.stop()?;
    let mut reads = Vec::new();
    for (who, tap) in taps {
        reads.push((who, tap.stop()?));
    }
    let app = app?;

    ensure!(
        mid_reads.saw(password, Some(&mid_threads)),
        "mid itself never read the password it types: the tap does not work"
    );
    for (who, r) in &reads {
        ensure!(
            r.saw(&marker(who), None),
            "the {who}'s tap missed the marker sent to it"
        );
        ensure!(
            !r.saw(password, None),
            "the {who} read the password of a hop outside its subtree"
        );
    }
    let (_, sibling_reads) = &reads[1];
    ensure!(
        sibling_reads.saw(&marker("below"), None),
        "the sibling's tap missed the marker it relayed to its child"
    );
    drop(app);
    Ok(())
}

crate::tests! {
    grandchild_cannot_answer_calls_to_its_parent,
    grandchild_cannot_send_to_channels_it_was_not_given,
    intermediate_cannot_forge_outside_its_subtree,
    stopped_intermediate_delays_only_its_subtree,
    receiver_that_falls_behind_is_closed_not_grown,
    message_size_limit_is_clamped_to_the_length_field,
    setuid_program_refuses_child_mode,
    forwarded_log_flood_is_cut,
    relay_does_not_echo_a_flood_back_to_a_child_that_does_not_read,
    relay_holds_a_child_back_while_its_parent_does_not_drain,
    hop_password_never_reaches_a_sibling_subtree => 120,
}
