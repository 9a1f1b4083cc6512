//! The child side: what a process started in child mode does instead of the
//! program's `main` (the seed's `ExternalContext`).
//!
//! 1. Take fds 0 and 1 (the socketpair, or ssh's pipes) as the parent stream, and
//!    put `/dev/null` on stdin and pipes on stdout/stderr, whose lines the broker
//!    forwards to the master as log records.
//! 2. Arm the parent-death signal (local children), write the greeting, read the
//!    configuration frame (from the prelude line, when the first stage
//!    started the build from its cache: the parent sent it without waiting). A child started from a host's cache of builds marks
//!    its build as used and removes builds gone unused ([`cache`]).
//!    Asked for a direct socket (the docker and podman hops), offer one
//!    ([`direct`]) and run the stream over it if the parent takes it.
//! 3. Start the router and broker; forward `tracing` events to the master.
//! 4. Run calls on the main thread until a parent asks for shutdown; exit at once
//!    if the parent stream is lost.

pub(crate) mod cache;
pub(crate) mod direct;
pub(crate) mod dispatch;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::core::detach;
use crate::core::handshake::{
    self, ChildConfig, BAD_HASH, CHILD_ENV, GREETING, HASH_ENV, PARENT_PID_ENV, PIPED_ENV,
    PRELUDE_ENV,
};
use crate::core::latch::Latch;
use crate::core::log::{level_from_u8, log_dir_layer, ForwardLayer};
use crate::core::message::{handles, Header, Message, DEFAULT_MAX_MESSAGE_SIZE, HEADER_LEN};
use crate::core::router::{Policy, RouterInner, Sink};
use crate::core::side::Side;
use crate::core::stream::{FrameReader, Stream};

/// How long a child waits for its configuration after greeting.
const CONFIG_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a child keeps running its current call after a shutdown request.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// How long a child exiting waits for its last messages to leave.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the child and exits the process.
pub(crate) fn main() -> ! {
    let code = match run() {
        Ok(()) => 0,
        Err(e) => {
            // stderr may be a pipe nobody reads any more: a failed write must
            // not turn a clean exit into a panic.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "mitogen child {}: {e}",
                std::process::id()
            );
            1
        }
    };
    std::process::exit(code)
}

fn dup_high(fd: impl AsFd) -> std::io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, 3)?)
}

/// Moves the stream off fds 0/1 and gives them harmless replacements.
fn take_stdio() -> std::io::Result<(Arc<Side>, Arc<Side>, OwnedFd, OwnedFd)> {
    let stdin = rustix::stdio::stdin();
    let stdout = rustix::stdio::stdout();
    let same = {
        let a = rustix::fs::fstat(stdin)?;
        let b = rustix::fs::fstat(stdout)?;
        a.st_dev == b.st_dev && a.st_ino == b.st_ino
    };
    // sshd's pipes are 64 KiB: a wider one lets it go on writing frames
    // while this process waits for a CPU.
    crate::sys::widen_stream_pipe(stdin);
    if !same {
        crate::sys::widen_stream_pipe(stdout);
    }
    let rx = Arc::new(Side::new(dup_high(stdin)?)?);
    let tx = if same {
        rx.clone()
    } else {
        Arc::new(Side::new(dup_high(stdout)?)?)
    };
    let null = rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    rustix::stdio::dup2_stdin(&null)?;
    let (out_r, out_w) = crate::sys::pipe()?;
    let (err_r, err_w) = crate::sys::pipe()?;
    rustix::stdio::dup2_stdout(&out_w)?;
    rustix::stdio::dup2_stderr(&err_w)?;
    Ok((rx, tx, out_r, err_r))
}

/// Asks the kernel to kill us when the parent that started us dies, then checks
/// that it has not died already (in which case we were re-parented).
fn arm_parent_death_signal() {
    let Some(expected) = std::env::var(PARENT_PID_ENV)
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
    else {
        return;
    };
    if crate::sys::die_with_parent(expected).is_err() {
        std::process::exit(1);
    }
}

/// With `MITOGEN_HASH` set (started by the first stage from a cache), checks
/// that our own executable is the build the master meant: a truncated or
/// corrupt cache entry must be replaced, never run further.
fn own_hash_is_right() -> bool {
    let Some(expected) = std::env::var_os(HASH_ENV) else {
        return true;
    };
    match crate::sys::read_own_exe() {
        Ok(bytes) => {
            crate::core::binary::content_hash(&bytes).as_bytes() == expected.as_encoded_bytes()
        }
        Err(_) => false,
    }
}

fn run() -> std::io::Result<()> {
    arm_parent_death_signal();
    let hash = std::env::var(HASH_ENV).ok();
    let piped = hash.is_some() && std::env::var_os(PIPED_ENV).is_some_and(|v| v == "1");
    let handed = hash
        .as_ref()
        .and_then(|_| std::env::var_os(PRELUDE_ENV))
        .filter(|v| !v.is_empty());
    // Started by the first stage: from inside the cache directory it checked.
    let stage_dir = hash.as_ref().and_then(|_| cache::take_stage_dir());
    let hash_ok = own_hash_is_right();
    let cache_entry = hash
        .zip(stage_dir)
        .and_then(|(h, dir)| cache::Entry::own(dir, &h));
    // Commands the child runs must not mistake themselves for contexts. No other
    // thread exists yet, so changing the environment is safe.
    for var in [
        CHILD_ENV,
        HASH_ENV,
        PARENT_PID_ENV,
        PIPED_ENV,
        cache::CWD_ENV,
    ] {
        std::env::remove_var(var);
    }
    let (rx, tx, out_r, err_r) = take_stdio()?;
    let deadline = Instant::now() + CONFIG_TIMEOUT;
    let step = |e: handshake::StepError| std::io::Error::other(format!("bootstrap: {e}"));
    if !hash_ok {
        let mut line = BAD_HASH.to_vec();
        line.push(b'\n');
        let _ = handshake::write_all(tx.as_fd(), &line, deadline);
        // Out of the way, so the next start finds no entry and uploads; but
        // only while its name still refers to this file.
        if let Some(entry) = cache_entry {
            entry.remove();
        }
        return Err(std::io::Error::other(
            "own executable does not match its hash",
        ));
    }
    handshake::write_all(tx.as_fd(), GREETING, deadline).map_err(step)?;
    if let Some(entry) = cache_entry {
        cache::tend_in_background(entry);
    }
    // Started from the cache by the first stage: the configuration (and
    // maybe a first call) came behind the stage, as the prelude line;
    // otherwise it follows the greeting as a frame.
    let (header, body, initial) = if let Some(line) = handed {
        // Uploaded: the stage skipped the prelude on its stdin and handed it
        // over in the environment.
        let frames = handshake::decode_prelude(line.as_encoded_bytes()).map_err(step)?;
        let (header, body, more) = first_frame(&frames)?;
        (header, body.to_vec(), more.to_vec())
    } else if piped {
        let (frames, rest) = handshake::read_prelude(rx.as_fd(), deadline).map_err(step)?;
        let (header, body, more) = first_frame(&frames)?;
        let mut initial = more.to_vec();
        initial.extend_from_slice(&rest);
        (header, body.to_vec(), initial)
    } else {
        let (header, body) =
            handshake::read_frame(rx.as_fd(), DEFAULT_MAX_MESSAGE_SIZE, deadline).map_err(step)?;
        (header, body, Vec::new())
    };
    if header.handle != handles::BOOTSTRAP {
        return Err(std::io::Error::other("first frame is not a configuration"));
    }
    let config: ChildConfig = postcard::from_bytes(&body)
        .map_err(|e| std::io::Error::other(format!("bad configuration: {e}")))?;

    // Asked for a direct socket (a container engine's hop): offered now,
    // before the stream exists, so no frame ever changes transport.
    let direct = match &config.direct {
        Some(token) => direct::offer(&rx, &tx, token, deadline)?,
        None => None,
    };

    dispatch::install_panic_hook();
    let parent_id = config.ancestors.first().copied().unwrap_or(0);
    let stream = match direct {
        Some(socket) => {
            let watched = socket.try_clone()?;
            let side = Arc::new(Side::new(socket)?);
            direct::watch_lifeline(rx, tx, watched);
            Arc::new(Stream::new("parent".into(), side.clone(), side, true))
        }
        None => Arc::new(Stream::new("parent".into(), rx, tx, true)),
    };
    stream.set_remote_id(parent_id);
    stream.set_local_peer(config.parent_is_local);
    let router = RouterInner::start(
        config.id,
        config.name.clone(),
        config.ancestors.clone(),
        Some(stream.clone()),
        config.max_message_size as usize,
    )?;
    crate::core::router::set_current(&router);
    // This process is the program started through its entry point, so it may
    // start children of its own (they enter child mode the same way).
    crate::entry::ENTERED.store(true, std::sync::atomic::Ordering::Relaxed);
    crate::core::route_control::install(&router);
    crate::service::install(&router);
    router.set_allow_lateral(config.allow_lateral);
    install_logging(&router, &config);

    let calls: Arc<Latch<Message>> = Arc::new(Latch::new());
    let inflight = Arc::new(dispatch::Inflight::default());
    {
        // Entered as it arrives, so that a cancellation finds a call still
        // queued; then queued as for any handle (bounded the same way).
        let (calls, weak) = (calls.clone(), Arc::downgrade(&router));
        let arrivals = inflight.clone();
        router.add_handler_at(
            handles::CALL_FUNCTION,
            Sink::Func(Arc::new(move |msg: Message| {
                let Some(router) = weak.upgrade() else { return };
                arrivals.arrived(&msg);
                router.queue(&calls, msg);
            })),
            None,
            false,
            Policy::ParentsOnly,
        );
        let inflight = inflight.clone();
        router.add_handler_at(
            handles::CANCEL_CALL,
            Sink::Func(Arc::new(move |msg: Message| {
                // The reply handle of the call; anything else is ignored.
                let Some(handle) = crate::core::cancel::decode_cancel(&msg.body) else {
                    tracing::debug!(src = msg.src, "malformed call cancellation ignored");
                    return;
                };
                if inflight.cancel(msg.src, handle) {
                    tracing::debug!(src = msg.src, "call cancelled by its caller");
                }
            })),
            None,
            false,
            Policy::ParentsOnly,
        );
    }
    let c2 = calls.clone();
    let weak = Arc::downgrade(&router);
    router.add_handler_at(
        handles::SHUTDOWN,
        Sink::Func(Arc::new(move |_msg| {
            c2.close("shutdown requested");
            // Queued calls finish first; a call that never returns must not keep
            // the process alive forever after its parent asked it to go.
            if let Some(r) = weak.upgrade() {
                r.broker.call_later(SHUTDOWN_GRACE, |_| {
                    tracing::warn!("still busy {SHUTDOWN_GRACE:?} after shutdown; exiting");
                    std::process::exit(0);
                });
            }
        })),
        None,
        false,
        Policy::ParentsOnly,
    );
    let c3 = calls.clone();
    router.on_parent_lost(move || {
        if detach::is_detached() {
            // Asked to outlive the parent: finish the queued work, then exit
            // as after a shutdown.
            c3.close("parent gone; detached");
            return;
        }
        // Nobody is left to serve: leave at once, whatever the main thread is
        // doing. Our own children see their streams close and do the same.
        std::process::exit(0);
    });
    router.broker.add_log_pipe(out_r, "stdout");
    router.broker.add_log_pipe(err_r, "stderr");
    // Frames that came with the configuration (a first call in the
    // prelude) are complete already: routed here, before the broker reads
    // anything after them; a partial one stays in the reader.
    let mut reader = FrameReader::new(router.max_message_size, &initial);
    while let Some(msg) = reader
        .next_message()
        .map_err(|e| std::io::Error::other(format!("bootstrap: after the configuration: {e}")))?
    {
        router.route(msg, Some(&stream));
    }
    router.broker.add_stream(stream.clone(), reader);

    dispatch::Dispatcher::new(router.clone(), inflight).run(&calls, &stream);

    tracing::debug!("shutting down");
    stream.flush_blocking(Instant::now() + FLUSH_TIMEOUT);
    Ok(())
}

/// Splits the first frame (the configuration) off the prelude's frames:
/// `(header, body, the frames after it)`.
fn first_frame(frames: &[u8]) -> std::io::Result<(Header, &[u8], &[u8])> {
    let bad = |why: String| std::io::Error::other(format!("bootstrap: prelude: {why}"));
    let head = frames
        .get(..HEADER_LEN)
        .ok_or_else(|| bad("no configuration in it".into()))?;
    let header = Header::parse(head, DEFAULT_MAX_MESSAGE_SIZE).map_err(|e| bad(e.to_string()))?;
    let end = HEADER_LEN + header.len;
    let body = frames
        .get(HEADER_LEN..end)
        .ok_or_else(|| bad("configuration cut short".into()))?;
    Ok((header, body, &frames[end..]))
}

fn install_logging(router: &Arc<RouterInner>, config: &ChildConfig) {
    use tracing_subscriber::prelude::*;
    let forward = level_from_u8(config.log_level).map(|max| ForwardLayer::new(router, max));
    let filter = match level_from_u8(config.log_level) {
        Some(l) => tracing_subscriber::filter::LevelFilter::from_level(l),
        None => tracing_subscriber::filter::LevelFilter::OFF,
    };
    let file = log_dir_layer();
    let max = if file.is_some() {
        tracing_subscriber::filter::LevelFilter::TRACE
    } else {
        filter
    };
    let _ = tracing_subscriber::registry()
        .with(forward.with_filter(filter))
        .with(file)
        .with(max)
        .try_init();
}
