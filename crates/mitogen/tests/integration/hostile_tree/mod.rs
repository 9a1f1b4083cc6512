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
//!
//! This module holds what the parts share: raw frames and writing them on a
//! context's parent stream, and the warning checks. The tests are in the
//! parts: `forgery` (forged replies, sends and frames from outside a subtree,
//! a stopped intermediate), `floods` (queues, message sizes, relayed and
//! logged floods), `setuid` and `password` (a hop's password and its
//! siblings).

pub mod floods;
pub mod forgery;
pub mod password;
pub mod setuid;

use std::time::Duration;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use mitogen::testing::message::{ContextId, Message};
use mitogen::{Context, Sender};

use crate::capture;

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

/// The key a sender carries (it travels as `(context, handle, key, window)`).
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
    crate::bad_input::write_all_raw(fd, &bytes)
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
