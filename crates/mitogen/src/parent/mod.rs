//! The parent side of a connection: starting a child and bootstrapping it.
//!
//! Every connection method ends up here: it prepares a `Launch` (the program
//! itself for `local`; `ssh … sh -c STAGE` for ssh), and `connect` starts it,
//! runs the first stage when there is one, waits for the child's greeting, sends
//! its configuration and hands the stream to the broker. Behind a first stage
//! the configuration (and a first call, [`first_call`]) goes out before the
//! stage has said anything, as the prelude line: no round trip of its own.

mod direct;
pub(crate) mod first_call;
pub(crate) mod first_stage;
pub(crate) mod prompt;
#[cfg(test)]
mod prompt_tests;
pub(crate) mod pty;
mod runnable;
pub(crate) mod spawn;
pub(crate) mod via;

use std::os::fd::{AsFd, OwnedFd};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::core::context::{ChildProcess, Context};
use crate::core::error::{Error, Result, TransportFailure};
use crate::core::handshake::{self, ChildConfig, StepError, GREETING};
use crate::core::latch::Latch;
use crate::core::log::current_max_level;
use crate::core::message::{handles, Message};
use crate::core::process_monitor::{ExitCell, ProcessWatch};
use crate::core::router::{Policy, RouterInner, Sink};
use crate::core::side::Side;
use crate::core::stream::{FrameReader, Stream};
use first_stage::{Compression, BAD_HASH};
use spawn::{create_child, Spawned};

pub(crate) use crate::core::handshake::{CHILD_ENV, HASH_ENV, PARENT_PID_ENV};

/// How a method starts its child.
pub(crate) struct Launch<'a> {
    /// Builds the command; the flag asks the first stage to force an upload.
    pub command: &'a dyn Fn(bool) -> Command,
    /// Context name.
    pub name: &'a str,
    /// Time allowed from start to greeting.
    pub timeout: Duration,
    /// `Some` when the command runs the first stage rather than the program.
    pub stage: Option<Compression>,
    /// Classifies the transport's stderr on failure (e.g. ssh's messages).
    pub classify: &'a dyn Fn(&str) -> TransportFailure,
    /// The new context's id, when the master chose it (a context started by an
    /// intermediate); otherwise this router allocates one.
    pub id: Option<crate::core::message::ContextId>,
    /// `Some` when the transport may prompt for a password on its terminal.
    pub prompt: Option<PromptSpec>,
    /// True when the stream's far end is the new context itself on this
    /// machine (local, sudo, doas), false when a transport paces the data
    /// through a network (ssh). Only frames from local peers are relayed
    /// cut-through: one that trickles in over a slow link would hold the
    /// outgoing stream for everyone else meanwhile.
    pub local_peer: bool,
    /// Whether to offer the child a direct socket (`direct`) once started
    /// behind a first stage: the container engines' hops, whose transport
    /// relays every byte through a daemon on this same machine.
    pub direct: bool,
}

/// How a method's transport prompts.
#[derive(Clone, Debug, Default)]
pub(crate) struct PromptSpec {
    /// The answer, if the caller gave one.
    pub password: Option<crate::core::secret::Secret>,
    /// What prompts and failures look like.
    pub style: prompt::PromptStyle,
    /// More prompt endings, given by the caller (e.g. a localised `su`).
    pub extra_prompts: Vec<String>,
    /// The one prompt answered, when the tool was told what to print (sudo's
    /// `-p`): any other password prompt is refused unanswered.
    pub exact_prompt: Option<String>,
    /// More failure phrases, given by the caller; checked before the style's.
    pub extra_failures: Vec<(String, TransportFailure)>,
    /// The transport reads its password from stdin, which must be a terminal
    /// (su): the child gets a full pty, in raw mode, as stdin, stdout and
    /// stderr, and the stream runs over it (the seed's `tty_create_child`).
    /// Otherwise the pty is only its controlling terminal and the stream runs
    /// over a socketpair (`hybrid_tty_create_child`).
    pub full_pty: bool,
}

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

/// Reads whatever `fd` (a captured stderr) has without waiting.
fn drain(fd: &Option<OwnedFd>) -> String {
    let Some(fd) = fd else { return String::new() };
    let _ = crate::core::side::set_nonblock(fd.as_fd(), true);
    let mut out = Vec::new();
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 8192];
    while let Ok((init, _)) = rustix::io::read(fd, &mut buf) {
        if init.is_empty() || out.len() > 64 * 1024 {
            break;
        }
        out.extend_from_slice(init);
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn tail(s: &str, n: usize) -> &str {
    let s = s.trim();
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// One attempt failed; `retry` asks for another with a forced upload.
struct Failed {
    error: Error,
    retry: bool,
}

/// Starts a child context as `launch` says and bootstraps it.
pub(crate) fn connect(router: &Arc<RouterInner>, launch: &Launch<'_>) -> Result<Context> {
    if router.is_shut_down() {
        return Err(Error::RouterShutdown);
    }
    let deadline = Instant::now() + launch.timeout;
    let first = first_call::take();
    let first = first.as_deref();
    match attempt(router, launch, false, deadline, first) {
        Ok(ctx) => Ok(ctx),
        Err(Failed { retry: true, error }) => {
            tracing::info!(
                context = launch.name,
                "cached program is unusable ({error}); uploading it again"
            );
            attempt(router, launch, true, deadline, first).map_err(|f| f.error)
        }
        Err(f) => Err(f.error),
    }
}

/// Unregisters a first call's reply handle unless the connection it rode
/// on succeeded.
struct ReplyHandle<'a> {
    router: &'a RouterInner,
    handle: u32,
}

impl Drop for ReplyHandle<'_> {
    fn drop(&mut self) {
        if self.handle != 0 {
            self.router.del_handler(self.handle);
        }
    }
}

/// The configuration frame for child `id`, and the first call's frame (empty
/// without one), whose reply is registered in `reply`.
fn opening_frames<'r>(
    router: &'r Arc<RouterInner>,
    launch: &Launch<'_>,
    id: crate::core::message::ContextId,
    first: Option<&first_call::FirstCall>,
    direct: Option<[u8; handshake::DIRECT_TOKEN_LEN]>,
) -> Result<(Vec<u8>, Vec<u8>, ReplyHandle<'r>)> {
    let mut ancestors = vec![router.id];
    ancestors.extend_from_slice(&router.ancestors);
    let config = ChildConfig {
        id,
        name: launch.name.to_owned(),
        ancestors,
        max_message_size: router.max_message_size as u64,
        log_level: current_max_level(),
        allow_lateral: router.allow_lateral(),
        parent_is_local: launch.local_peer,
        direct,
    };
    let body = postcard::to_allocvec(&config).map_err(|e| Error::Connect {
        context: launch.name.to_owned(),
        reason: format!("encoding configuration: {e}"),
    })?;
    let frame = |msg: Message| {
        let mut f = msg.encode_header().to_vec();
        f.extend_from_slice(&msg.body);
        f
    };
    let config = frame(Message {
        dst: id,
        src: router.id,
        auth_id: router.id,
        handle: handles::BOOTSTRAP,
        body: Bytes::from(body),
        ..Default::default()
    });
    let mut reply = ReplyHandle { router, handle: 0 };
    let Some(first) = first else {
        return Ok((config, Vec::new(), reply));
    };
    let body = (first.encode)(id)?;
    if body.len() > router.max_message_size {
        return Err(Error::TooLarge {
            len: body.len(),
            max: router.max_message_size,
        });
    }
    // A number reserved now (its respondent is set once the context has a
    // route: a handler waiting on a context not yet routed is failed at
    // once); nothing can answer it before the stream is read.
    reply.handle = router.add_handler(
        Sink::Latch(first.latch.clone()),
        None,
        true,
        Policy::Any,
        None,
    );
    let call = frame(Message {
        dst: id,
        src: router.id,
        auth_id: router.id,
        handle: handles::CALL_FUNCTION,
        reply_to: reply.handle,
        body,
        ..Default::default()
    });
    Ok((config, call, reply))
}

fn attempt(
    router: &Arc<RouterInner>,
    launch: &Launch<'_>,
    force: bool,
    deadline: Instant,
    first: Option<&first_call::FirstCall>,
) -> Result<Context, Failed> {
    let name = launch.name;
    let id = launch.id.unwrap_or_else(|| router.alloc_context_id());
    // The offer rides in the prelude: behind a first stage only, never over
    // a prompting pty (the answer would go to the prompt).
    let direct = (launch.direct && launch.stage.is_some() && launch.prompt.is_none())
        .then(direct::token)
        .flatten();
    let (config_frame, call_frame, mut reply) = opening_frames(router, launch, id, first, direct)
        .map_err(|error| Failed {
        error,
        retry: false,
    })?;
    // Behind a first stage, the configuration and the first call (when it
    // is small) go out as the prelude line at once, without waiting for the
    // stage's status or the child's greeting: a build started from the cache
    // finds them on its stdin, and the stage skips the line when it has to
    // upload first. Only over a pty that the transport prompts on does the
    // line wait for the status (it would be typed into the prompt).
    let piped = launch.stage.is_some();
    let on_pty = launch.prompt.as_ref().is_some_and(|p| p.full_pty);
    let call_in_prelude = (config_frame.len() + call_frame.len()) * 2 < handshake::MAX_PRELUDE;
    let prelude = piped.then(|| {
        let mut frames = config_frame.clone();
        if call_in_prelude {
            frames.extend_from_slice(&call_frame);
        }
        handshake::encode_prelude(&frames)
    });
    let mut cmd = (launch.command)(force);
    if launch.stage.is_none() {
        cmd.env(CHILD_ENV, "1")
            .env(PARENT_PID_ENV, std::process::id().to_string());
    }
    let capture = launch.stage.is_some();
    let cmd_program = cmd.get_program().to_owned();
    let mut prompter = None;
    let mut full_pty = None;
    if let Some(spec) = &launch.prompt {
        let pty_error = |e| Failed {
            error: Error::io("opening a pty for the password prompt", e),
            retry: false,
        };
        let (master, s) = pty::open_pty()
            .and_then(|(m, s)| pty::attach(&mut cmd, &s).map(|()| (m, s)))
            .map_err(pty_error)?;
        if spec.full_pty {
            pty::make_raw(&s).map_err(pty_error)?;
            let writer = master.try_clone().map_err(pty_error)?;
            prompter = Some(prompt::Prompter::new(writer, None, spec, true));
            full_pty = Some((master, s));
        } else {
            prompter = Some(prompt::Prompter::new(master, Some(s), spec, false));
        }
    }
    let spawned = on_broker(router, deadline, move || match full_pty {
        Some((master, slave)) => spawn::create_child_on_pty(cmd, master, slave),
        None => create_child(cmd, capture),
    })
    .map_err(|error| Failed {
        error,
        retry: false,
    })?;
    let Spawned {
        mut child,
        fd,
        stderr,
    } = spawned.map_err(|e| Failed {
        // A transport's program (ssh, sudo, …) that is missing is a typed
        // error; a missing program of our own stays a plain one.
        error: if launch.stage.is_some() && e.kind() == std::io::ErrorKind::NotFound {
            Error::Transport {
                context: name.to_owned(),
                kind: TransportFailure::NotInstalled,
                detail: format!("cannot start {:?}: {e}", cmd_program),
                stderr: String::new(),
            }
        } else {
            Error::Connect {
                context: name.to_owned(),
                reason: format!("cannot start the program: {e}"),
            }
        },
        retry: false,
    })?;

    if let (Some(line), false) = (&prelude, on_pty) {
        // A transport that died already shows in the dialog below, which
        // reports it with what it printed.
        let _ = handshake::write_all(fd.as_fd(), line, deadline);
    }

    // Kills the half-started child and builds an error from everything it said.
    let mut abort =
        |why: String, noise: &[u8], retry: bool, refused: Option<TransportFailure>| -> Failed {
            let _ = child.kill();
            let status = child.wait().ok();
            // On a full pty the transport's messages are in the stream itself.
            let errors = match (&stderr, launch.stage) {
                (None, Some(_)) => String::from_utf8_lossy(noise).into_owned(),
                _ => drain(&stderr),
            };
            // A host that cannot run this build at all (no loader, an older
            // glibc) is named as such. A cached build is still uploaded once
            // more (`retry`): a `not found` can also be a cached file removed
            // between the stage's check and its `exec`.
            let cannot_run = launch.stage.and_then(|_| {
                let own = router.binaries.own().ok()?;
                runnable::explain(
                    &own.hash,
                    &own.bytes,
                    &format!("{errors}\n{}", String::from_utf8_lossy(noise)),
                )
            });
            let mut detail = match cannot_run {
                Some(cause) => format!("{cause} ({why})"),
                None => why.clone(),
            };
            if let Some(s) = status {
                detail.push_str(&format!(" (transport {s})"));
            }
            let noise = String::from_utf8_lossy(noise);
            if !noise.trim().is_empty() {
                detail.push_str(&format!("; it printed: {:?}", tail(&noise, 400)));
            }
            // A login shell that refuses to run anything (nologin) says so on
            // stdout, before the first stage could start: read that too.
            let kind = refused.or_else(|| {
                launch
                    .stage
                    .map(|_| (launch.classify)(&format!("{errors}\n{noise}")))
            });
            let error = if kind.is_some_and(|k| k != TransportFailure::Other)
                || !errors.trim().is_empty() && launch.stage.is_some()
            {
                Error::Transport {
                    context: name.to_owned(),
                    kind: kind.unwrap_or(TransportFailure::Other),
                    detail,
                    stderr: tail(&errors, 1000).to_owned(),
                }
            } else {
                Error::Connect {
                    context: name.to_owned(),
                    reason: detail,
                }
            };
            Failed { error, retry }
        };

    let mut rest = Vec::new();
    let mut cached = false;
    if let Some(compression) = launch.stage {
        let binaries = &router.binaries;
        match first_stage::run(
            fd.as_fd(),
            binaries,
            compression,
            deadline,
            prompter.as_mut(),
            prelude.as_deref().filter(|_| on_pty),
        ) {
            Ok(outcome) => {
                cached = outcome.uploaded == 0;
                router.uploaded.fetch_add(
                    outcome.uploaded as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                tracing::debug!(
                    context = name,
                    uploaded = outcome.uploaded,
                    "first stage done"
                );
                rest = outcome.rest;
            }
            Err(e) => return Err(abort(e.why, &e.noise, false, e.refused)),
        }
    }

    let (_noise, after) =
        match handshake::discard_until(fd.as_fd(), rest, GREETING, deadline, prompter.as_mut()) {
            Ok(x) => x,
            Err((e, noise)) => {
                let refused = match &e {
                    StepError::Refused(kind, _) => Some(*kind),
                    _ => None,
                };
                let bad_hash = noise.windows(BAD_HASH.len()).any(|w| w == BAD_HASH);
                // A cached binary that does not run or hashes wrong is replaced once.
                let retry = !force && cached && matches!(e, StepError::Eof);
                let (why, noise) = match first_stage::nodir_in(&noise) {
                    _ if bad_hash => ("the cached program is corrupt".to_owned(), noise),
                    Some((why, rest)) => (why, rest),
                    None => match e {
                        StepError::Timeout => {
                            (format!("no greeting within {:?}", launch.timeout), noise)
                        }
                        e => (format!("before its greeting: {e}"), noise),
                    },
                };
                return Err(abort(why, &noise, retry, refused));
            }
        };

    // Offered a direct socket, the child reports one after reading its
    // configuration; taken, the stream runs over it and the transport
    // stays only as the lifeline (what came on it after the report is no
    // frame of ours then).
    let (socket, after) = match direct {
        Some(token) => match direct::settle(fd.as_fd(), after, &token, name, deadline) {
            Ok((Some(socket), _)) => (Some(socket), Vec::new()),
            Ok((None, after)) => (None, after),
            Err(e) => return Err(abort(format!("after its greeting: {e}"), &[], false, None)),
        },
        None => (None, after),
    };
    let (fd, lifeline) = match socket {
        Some(socket) => (socket, Some(fd)),
        None => (fd, None),
    };

    // What the child has not had yet: behind a first stage the prelude
    // reached it (on its stdin when started from the cache, in its
    // environment after an upload), so at most a first call too large for it.
    let mut frames = Vec::new();
    if !piped {
        frames.extend_from_slice(&config_frame);
    }
    if !(piped && call_in_prelude) {
        frames.extend_from_slice(&call_frame);
    }
    if let Err(e) = handshake::write_all(fd.as_fd(), &frames, deadline) {
        return Err(abort(
            format!("sending configuration: {e}"),
            &[],
            false,
            None,
        ));
    }

    // What came in with the greeting: complete frames (a first call's reply
    // can be among them) are routed before the broker reads anything more,
    // once the context has its route; a partial one stays in the reader.
    let mut reader = FrameReader::new(router.max_message_size, &after);
    let mut early = Vec::new();
    loop {
        match reader.next_message() {
            Ok(Some(msg)) => early.push(msg),
            Ok(None) => break,
            Err(e) => return Err(abort(format!("after its greeting: {e}"), &[], false, None)),
        }
    }

    let side = match Side::new(fd) {
        Ok(s) => Arc::new(s),
        Err(e) => return Err(abort(format!("stream setup: {e}"), &[], false, None)),
    };
    let stream = Arc::new(Stream::new(
        name.to_owned(),
        side.clone(),
        side.clone(),
        false,
    ));
    stream.set_remote_id(id);
    stream.set_local_peer(launch.local_peer);

    let pid = child.id();
    let exit = Arc::new(ExitCell::default());
    let pidfd = crate::sys::ProcessHandle::open(pid).ok();
    // Over a direct socket, the transport (the engine's client) going ends
    // the context as its stream's end would: the socket is shut down, and
    // the broker reads its end. Its pipe is held open until then, so the
    // child's lifeline stays up. Only a weak hold on the socket: once the
    // stream is done with it, it closes, and the child sees that.
    let on_exit = lifeline.map(|pipe| {
        let socket = Arc::downgrade(&side);
        move || {
            drop(pipe);
            if let Some(side) = socket.upgrade() {
                let _ = rustix::net::shutdown(&*side, rustix::net::Shutdown::Both);
            }
        }
    });
    match ProcessWatch::new(child, exit.clone()) {
        Ok(w) => router.broker.add_process(match on_exit {
            Some(f) => w.on_exit(Box::new(f)),
            None => w,
        }),
        Err(e) => tracing::warn!(context = name, "cannot watch process {pid}: {e}"),
    }
    if let Some(err) = stderr {
        // The transport's own later messages (e.g. ssh's) become log records.
        router.broker.add_log_pipe(err, "transport");
    }
    router.add_route(id, name, stream.clone());
    if let Some(first) = first {
        // Only the new context may answer its first call.
        router.add_handler_at(
            reply.handle,
            Sink::Latch(first.latch.clone()),
            Some(id),
            true,
            Policy::Any,
        );
    }
    for msg in early {
        router.route(msg, Some(&stream));
    }
    router.broker.add_stream(stream, reader);
    tracing::debug!(context = name, id, pid, "connected");
    if let Some(first) = first {
        first
            .handle
            .store(reply.handle, std::sync::atomic::Ordering::Release);
    }
    reply.handle = 0;
    Ok(Context::new(
        router.clone(),
        id,
        name,
        Some(Arc::new(ChildProcess {
            pid,
            pidfd,
            exit,
            _pty: prompter.and_then(prompt::Prompter::into_master),
        })),
    ))
}
