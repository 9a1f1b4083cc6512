//! The parent side of a connection: starting a child and bootstrapping it.
//!
//! Every connection method ends up here: it prepares a command (the program
//! itself for `local`; later `ssh … sh -c STAGE`, `sudo …`), and
//! [`connect_command`] starts it, waits for the child's greeting, sends its
//! configuration and hands the stream to the broker.

pub mod bootstrap;
pub(crate) mod spawn;

use std::os::fd::AsFd;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::core::context::{ChildProcess, Context};
use crate::core::error::{Error, Result};
use crate::core::latch::Latch;
use crate::core::log::current_max_level;
use crate::core::message::{handles, Message};
use crate::core::router::RouterInner;
use crate::core::side::Side;
use crate::core::stream::{FrameReader, Stream};
use crate::master::process_monitor::{ExitCell, ProcessWatch};
use bootstrap::{ChildConfig, StepError, GREETING};
use spawn::{create_child, Spawned};

/// Environment variable that starts the program in child mode.
pub const CHILD_ENV: &str = "MITOGEN_CHILD";

/// Environment variable naming the parent's pid, so the child can arm its
/// parent-death signal without a race.
pub const PARENT_PID_ENV: &str = "MITOGEN_PARENT_PID";

/// Runs `f` on the broker thread and returns its result. Children are started
/// there because Linux's parent-death signal follows the *thread* that forked:
/// a child forked by a short-lived user thread would be killed when that thread
/// ends.
fn on_broker<T: Send + 'static>(
    router: &Arc<RouterInner>,
    deadline: Instant,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    if router.broker.on_broker_thread() {
        return Ok(f());
    }
    let latch = Arc::new(Latch::new());
    let l2 = latch.clone();
    router.broker.defer(move |_| {
        l2.put(f());
    });
    latch
        .get_deadline(Some(deadline))
        .map_err(|_| Error::RouterShutdown)
}

/// Starts `cmd` as a child context named `name` and bootstraps it.
pub(crate) fn connect_command(
    router: &Arc<RouterInner>,
    mut cmd: Command,
    name: &str,
    timeout: Duration,
) -> Result<Context> {
    if router.is_shut_down() {
        return Err(Error::RouterShutdown);
    }
    let deadline = Instant::now() + timeout;
    let id = router.alloc_context_id();
    cmd.env(CHILD_ENV, "1")
        .env(PARENT_PID_ENV, std::process::id().to_string());
    let fail = |reason: String| Error::Connect {
        context: name.to_owned(),
        reason,
    };
    let Spawned { mut child, fd } = on_broker(router, deadline, move || create_child(cmd))?
        .map_err(|e| fail(format!("cannot start the program: {e}")))?;

    let abort = |child: &mut std::process::Child, why: String, noise: &[u8]| {
        let _ = child.kill();
        let status = child.wait().ok();
        let mut reason = why;
        if let Some(s) = status {
            reason.push_str(&format!(" (process {s})"));
        }
        if !noise.is_empty() {
            let tail = String::from_utf8_lossy(&noise[noise.len().saturating_sub(512)..]);
            reason.push_str(&format!("; it printed: {:?}", tail.trim()));
        }
        fail(reason)
    };

    let rest = match bootstrap::discard_until(fd.as_fd(), GREETING, deadline) {
        Ok((_noise, rest)) => rest,
        Err((StepError::Timeout, noise)) => {
            return Err(abort(
                &mut child,
                format!("no greeting within {timeout:?}"),
                &noise,
            ))
        }
        Err((e, noise)) => {
            return Err(abort(
                &mut child,
                format!("before its greeting: {e}"),
                &noise,
            ))
        }
    };

    let mut ancestors = vec![router.id];
    ancestors.extend_from_slice(&router.ancestors);
    let config = ChildConfig {
        id,
        name: name.to_owned(),
        ancestors,
        max_message_size: router.max_message_size as u64,
        log_level: current_max_level(),
    };
    let body = postcard::to_allocvec(&config).map_err(|e| Error::encode("child config", e))?;
    let msg = Message {
        dst: id,
        src: router.id,
        auth_id: router.id,
        handle: handles::BOOTSTRAP,
        body: Bytes::from(body),
        ..Default::default()
    };
    let mut frame = msg.encode_header().to_vec();
    frame.extend_from_slice(&msg.body);
    if let Err(e) = bootstrap::write_all(fd.as_fd(), &frame, deadline) {
        return Err(abort(
            &mut child,
            format!("sending configuration: {e}"),
            &[],
        ));
    }

    let side = Arc::new(Side::new(fd).map_err(|e| Error::io("stream setup", e))?);
    let stream = Arc::new(Stream::new(name.to_owned(), side.clone(), side, false));
    stream.set_remote_id(id);

    let pid = child.id();
    let exit = Arc::new(ExitCell::default());
    let pidfd = rustix::process::Pid::from_raw(pid as i32)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok());
    match ProcessWatch::new(child, exit.clone()) {
        Ok(w) => router.broker.add_process(w),
        Err(e) => tracing::warn!(context = name, "cannot watch process {pid}: {e}"),
    }
    router.add_route(id, name, stream.clone());
    router
        .broker
        .add_stream(stream, FrameReader::new(router.max_message_size, &rest));
    tracing::debug!(context = name, id, pid, "connected");
    Ok(Context::new(
        router.clone(),
        id,
        name,
        Some(Arc::new(ChildProcess { pid, pidfd, exit })),
    ))
}
