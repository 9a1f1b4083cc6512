//! A hostile container: root inside it owns the context there and can write
//! anything on the docker client's stdout, but it is a child like any other.

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use mitogen::testing::message::handles;
use mitogen::{Local, Router};

use super::{Container, Flavour};
use crate::calls::{add, get_value};
use crate::capture;
use crate::security::{evil_call, expect_logged, frame_reply, EVIL, NO_AUTHORITY};
use crate::util::Guard;

/// Writes `bytes` raw on this context's parent stream: the direct socket
/// when there is one (the lowest socket descriptor above 2), else the
/// docker client's stdout, the lowest write-only pipe descriptor above 2
/// (fds 1 and 2 are the log pipes).
#[mitogen::remote]
pub fn write_up_stream(bytes: Vec<u8>) -> std::io::Result<()> {
    use std::os::fd::{BorrowedFd, RawFd};
    let write_only = |fd: RawFd| {
        std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
            .ok()
            .and_then(|info| {
                let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?;
                u32::from_str_radix(flags.trim(), 8).ok()
            })
            .is_some_and(|f| f & 3 == 1)
    };
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let socket = fds.iter().copied().filter(|&fd| {
        fd > 2
            && std::fs::read_link(format!("/proc/self/fd/{fd}"))
                .is_ok_and(|p| p.to_string_lossy().starts_with("socket:"))
    });
    let fd: RawFd = match socket.min() {
        Some(fd) => fd,
        None => fds
            .into_iter()
            .filter(|&fd: &RawFd| {
                fd > 2
                    && std::fs::read_link(format!("/proc/self/fd/{fd}"))
                        .is_ok_and(|p| p.to_string_lossy().starts_with("pipe:"))
                    && write_only(fd)
            })
            .min()
            .ok_or_else(|| std::io::Error::other("no write pipe"))?,
    };
    // SAFETY: the descriptor stays open for the life of the process.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    crate::bad_input::write_all_raw(fd, &bytes)
}

/// From inside a container, forged calls into its parent (a local context
/// on the host) and into the master are refused and logged; the parent
/// keeps serving, no forged call runs, and the container's own link stays:
/// over the direct socket and over the client's pipe alike.
pub fn container_cannot_call_its_parent(router: &Router) -> Result<()> {
    for direct in [true, false] {
        forged_calls_are_refused(router, direct)
            .with_context(|| format!("direct socket {direct}"))?;
    }
    Ok(())
}

fn forged_calls_are_refused(router: &Router, direct: bool) -> Result<()> {
    let c = Container::start(Flavour::Busybox, &[])?;
    let mid = Guard(router.start(None, Local::new().name("host-mid"))?);
    let inner = Guard(router.start(Some(&mid), mitogen::Docker::exec(&c.name).direct(direct))?);
    let mark = capture::mark();
    let me = inner.id();
    let mut frames = frame_reply(mid.id(), me, me, handles::CALL_FUNCTION, 7000, &evil_call());
    frames.extend(frame_reply(
        mitogen::testing::message::MASTER_ID,
        me,
        me,
        handles::CALL_FUNCTION,
        7001,
        &evil_call(),
    ));
    inner
        .call_timeout(write_up_stream, (frames,), Duration::from_secs(30))
        .context("writing from inside the container")?;
    expect_logged(mark, Some(mid.name()), NO_AUTHORITY)?;
    ensure!(
        mid.call_timeout(add, (2, 3), Duration::from_secs(10))? == 5,
        "the host-side parent stopped answering"
    );
    ensure!(
        mid.call(get_value, ())? != EVIL,
        "a forged call ran on the host"
    );
    ensure!(
        inner.call(add, (1, 1))? == 2,
        "the container's link was lost"
    );
    Ok(())
}

crate::tests! {
    container_cannot_call_its_parent => 120,
}
