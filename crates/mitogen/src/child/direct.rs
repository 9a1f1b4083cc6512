//! The child's half of the direct socket (the parent's half, and why, is
//! in `parent/direct.rs`): asked in its configuration, the child makes a
//! socketpair, writes the parent's secret into one end, reports the other
//! end's descriptor with its pid and pid namespace, and runs its parent
//! stream over the socket if the parent answers that it took it.
//!
//! The transport it was started on (the engine client's pipes) then stays
//! open as the lifeline: its end means the client died, and the child shuts
//! its socket down, which the broker reads as the parent gone, as any
//! parent stream's end.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use crate::core::handshake::{self, DirectOffer, DIRECT_STAY, DIRECT_TOKEN_LEN, DIRECT_USE};
use crate::core::side::Side;

/// In debug builds only: `PID NS FD` replacing what the report says (each
/// field `-` to keep it; `FD` may be `a`, the child's own end, where no
/// secret waits), so the tests can play a child that names another
/// process. It gives a child nothing it could not do itself: the report is
/// the child's word in any case, and the parent checks it.
#[cfg(debug_assertions)]
pub const REPORT_OVERRIDE_ENV: &str = "MITOGEN_TEST_DIRECT_REPORT";

/// Offers the parent a direct socket as the configuration asked (`token`).
/// Returns the socket when the parent took it; `None` when the stream stays
/// on `rx`/`tx`.
pub(crate) fn offer(
    rx: &Side,
    tx: &Side,
    token: &[u8; DIRECT_TOKEN_LEN],
    deadline: Instant,
) -> std::io::Result<Option<OwnedFd>> {
    let step = |e: handshake::StepError| std::io::Error::other(format!("direct socket: {e}"));
    let made = make(token);
    let report = made.as_ref().ok().map(|(a, b, ns)| {
        let offer = DirectOffer {
            pid: std::process::id(),
            ns: *ns,
            fd: b.as_raw_fd(),
        };
        overridden(offer, a.as_raw_fd())
    });
    handshake::write_all(
        tx.as_fd(),
        &handshake::encode_direct_report(report),
        deadline,
    )
    .map_err(step)?;
    match (
        handshake::read_byte(rx.as_fd(), deadline).map_err(step)?,
        made,
    ) {
        (DIRECT_USE, Ok((a, b, _))) => {
            // The parent holds its own duplicate of `b` now.
            drop(b);
            Ok(Some(a))
        }
        (DIRECT_STAY, _) => Ok(None),
        (other, _) => Err(std::io::Error::other(format!(
            "direct socket: unexpected answer {other:#04x}"
        ))),
    }
}

/// The socketpair, the secret written into `a` (it waits at `b`), and our
/// pid namespace.
fn make(token: &[u8; DIRECT_TOKEN_LEN]) -> std::io::Result<(OwnedFd, OwnedFd, u64)> {
    let ns = crate::sys::own_pid_namespace()?;
    let (a, b) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    // Into an empty socket buffer: never blocks.
    let n = rustix::io::write(&a, token)?;
    if n != token.len() {
        return Err(std::io::Error::other("short write of the secret"));
    }
    Ok((a, b, ns))
}

#[cfg(debug_assertions)]
fn overridden(mut offer: DirectOffer, a: i32) -> DirectOffer {
    let Some(text) = std::env::var(REPORT_OVERRIDE_ENV).ok() else {
        return offer;
    };
    let f: Vec<&str> = text.split(' ').collect();
    let field = |i: usize| f.get(i).copied().filter(|v| *v != "-");
    if let Some(p) = field(0).and_then(|v| v.parse().ok()) {
        offer.pid = p;
    }
    if let Some(n) = field(1).and_then(|v| v.parse().ok()) {
        offer.ns = n;
    }
    match field(2) {
        Some("a") => offer.fd = a,
        Some(v) => offer.fd = v.parse().unwrap_or(offer.fd),
        None => {}
    }
    offer
}

#[cfg(not(debug_assertions))]
fn overridden(offer: DirectOffer, _: i32) -> DirectOffer {
    offer
}

/// Watches the transport the child was started on, now only the lifeline:
/// at its end (or error), `socket` is shut down, so the broker finds its
/// parent stream closed. Whatever arrives on it meanwhile is dropped.
pub(crate) fn watch_lifeline(rx: Arc<Side>, tx: Arc<Side>, socket: OwnedFd) {
    let run = move || {
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 512];
        loop {
            let mut fds = [rustix::event::PollFd::new(
                &*rx,
                rustix::event::PollFlags::IN,
            )];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(_) => break,
            }
            match rustix::io::read(&*rx, &mut buf) {
                Ok(([], _)) => break,
                Ok(_) | Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => {}
                Err(_) => break,
            }
        }
        tracing::debug!("the transport closed: leaving the direct socket");
        let _ = rustix::net::shutdown(&socket, rustix::net::Shutdown::Both);
        // Held until here: the client's end of our stdout stays open.
        drop(tx);
    };
    if let Err(e) = std::thread::Builder::new()
        .name("mitogen-lifeline".into())
        .spawn(run)
    {
        // Without a watch the child would outlive a dead client: better
        // not to run at all.
        tracing::error!("cannot watch the transport: {e}");
        std::process::exit(1);
    }
}
