//! [`Context`]: a handle on another process in the tree, to call into it.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::call::{encode_call, CallChain, PendingCall};
use super::channel::{encoding_for, Receiver, Sender};
use super::error::{Error, Result};
use super::message::{handles, ContextId, Message};
use super::payload::Payload;
use super::remote::{IntoArgs, RemoteFn};
use super::router::{Presence, RouterInner};
use super::signals::Subscription;
use crate::core::process_monitor::ExitCell;

/// How long [`Context::shutdown`] waits for an orderly exit before killing.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// How a shutdown ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exited {
    /// The context left within the grace period.
    InTime,
    /// Its local process had to be killed.
    Killed,
    /// A remote context still had not disconnected.
    StillThere,
}

/// The local process behind a context this router started.
pub(crate) struct ChildProcess {
    pub pid: u32,
    pub pidfd: Option<crate::sys::ProcessHandle>,
    pub exit: Arc<ExitCell>,
    /// The transport's prompt terminal, held open while it runs (closing it
    /// would hang the transport up).
    pub _pty: Option<OwnedFd>,
}

impl ChildProcess {
    /// Sends SIGKILL, race-free through the pidfd.
    pub(crate) fn kill(&self) {
        if self.exit.status().is_some() {
            return;
        }
        if let Some(fd) = &self.pidfd {
            let _ = fd.kill();
        }
    }
}

/// A context: another process of this program (on this machine, another user, or
/// another host), reachable through the router.
///
/// Cloning is cheap; all clones refer to the same context.
///
/// ```no_run
/// #[mitogen::remote]
/// fn hostname() -> std::io::Result<String> {
///     std::fs::read_to_string("/etc/hostname")
/// }
///
/// # fn demo(router: mitogen::Router) -> mitogen::Result<()> {
/// let child = router.local()?;
/// let name = child.call(hostname, ())?;
/// child.shutdown()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Context {
    router: Arc<RouterInner>,
    id: ContextId,
    name: Arc<str>,
    process: Option<Arc<ChildProcess>>,
    /// Keeps the router's record of this context (its disconnect latch,
    /// its name) while any clone of this handle lives.
    presence: Arc<Presence>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish()
    }
}

impl Context {
    pub(crate) fn new(
        router: Arc<RouterInner>,
        id: ContextId,
        name: &str,
        process: Option<Arc<ChildProcess>>,
    ) -> Context {
        Context {
            presence: Arc::new(router.presence(id)),
            router,
            id,
            name: name.into(),
            process,
        }
    }

    pub(crate) fn router(&self) -> Arc<RouterInner> {
        self.router.clone()
    }

    /// The context's id in the tree (the master is 0).
    pub fn id(&self) -> ContextId {
        self.id
    }

    /// The context's name (used in logs and errors).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id, for contexts this router started on this machine.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.pid)
    }

    /// Calls `f(args)` in the context and waits for the result, at most the
    /// router's default call timeout if it has one
    /// ([`RouterBuilder::call_timeout`](crate::RouterBuilder::call_timeout)).
    ///
    /// `args` is the argument tuple, or for a function of one argument the
    /// bare value (see [`IntoArgs`]): `ctx.call(disk_free, "/")`,
    /// `ctx.call(add, (1, 2))`, `ctx.call(noop, ())`.
    ///
    /// Fails with [`Error::Call`] when the function returns an error, panics or
    /// does not exist there, with [`Error::Disconnected`] as soon as the
    /// context goes away, and with [`Error::Timeout`] when the default
    /// timeout runs out (the call is then cancelled, see [`PendingCall`]).
    pub fn call<F: RemoteFn>(&self, f: F, args: impl IntoArgs<F>) -> Result<F::Output> {
        let pending = self.call_async(f, args);
        match self.router.call_timeout.get() {
            Some(t) => pending.get_timeout(*t),
            None => pending.get(),
        }
    }

    /// Like [`call`](Self::call), with a deadline (instead of the router's
    /// default one).
    pub fn call_timeout<F: RemoteFn>(
        &self,
        f: F,
        args: impl IntoArgs<F>,
        timeout: Duration,
    ) -> Result<F::Output> {
        self.call_async(f, args).get_timeout(timeout)
    }

    /// [`call_timeout`](Self::call_timeout) for arguments that hold a secret:
    /// the frame is marked so every hop wipes it (see `FLAG_SECRET`).
    pub(crate) fn call_secret<F: RemoteFn>(
        &self,
        _f: F,
        args: F::Args,
        timeout: Duration,
    ) -> Result<F::Output> {
        let body = super::call::encode_secret_call(F::NAME, &args);
        drop(args);
        PendingCall::start_flagged(self, body, super::message::FLAG_SECRET).get_timeout(timeout)
    }

    /// Starts a call and returns at once; wait with [`PendingCall::get`] or
    /// `.await`. Many calls started this way are pipelined on the connection.
    /// Dropping the [`PendingCall`] before the result came cancels the call.
    pub fn call_async<F: RemoteFn>(&self, _f: F, args: impl IntoArgs<F>) -> PendingCall<F::Output> {
        let args = args.into_args();
        let body = encoding_for(self.id, || encode_call(F::NAME, None, &args));
        PendingCall::start(self, body)
    }

    /// Starts a call whose result is not wanted. A failure is logged in the
    /// context.
    pub fn call_no_reply<F: RemoteFn>(&self, _f: F, args: impl IntoArgs<F>) -> Result<()> {
        self.send_call(F::NAME, None, &args.into_args())
    }

    pub(crate) fn send_call<A: serde::Serialize>(
        &self,
        name: &str,
        chain: Option<u64>,
        args: &A,
    ) -> Result<()> {
        let body = encoding_for(self.id, || encode_call(name, chain, args))?;
        if body.len() > self.router.max_message_size {
            return Err(Error::TooLarge {
                len: body.len(),
                max: self.router.max_message_size,
            });
        }
        self.router.send(Message {
            dst: self.id,
            handle: handles::CALL_FUNCTION,
            body,
            ..Default::default()
        });
        Ok(())
    }

    /// A [`CallChain`] for pipelined calls into this context.
    pub fn chain(&self) -> CallChain {
        CallChain::new(self)
    }

    /// A channel whose receiver lives here and ends with [`Error::Disconnected`]
    /// when this context goes away; pass the sender to a remote function.
    pub fn channel<T: Payload>(&self) -> (Sender<T>, Receiver<T>) {
        let rx = Receiver::new(self.router.clone(), Some(self.id));
        (rx.sender(), rx)
    }

    /// [`channel`](Self::channel) with a window of `window` bytes for each
    /// process that sends, instead of [`DEFAULT_WINDOW`](crate::DEFAULT_WINDOW)
    /// (see [`Sender`]): smaller to bound the memory of a channel many
    /// contexts send to, larger for a link with a large bandwidth-delay
    /// product.
    pub fn channel_with_window<T: Payload>(&self, window: usize) -> (Sender<T>, Receiver<T>) {
        let rx = Receiver::with_window_size(self.router.clone(), Some(self.id), window);
        (rx.sender(), rx)
    }

    /// True once the connection to the context is gone.
    pub fn is_disconnected(&self) -> bool {
        self.presence.latch().is_closed()
    }

    /// Calls `f` once when this context becomes unreachable (at once, if it
    /// already is). `f` runs on the broker thread and must not block; see
    /// [`crate::Router::on_disconnect`]. Dropping the returned
    /// [`Subscription`] unregisters it.
    pub fn on_disconnect(&self, f: impl Fn() + Send + Sync + 'static) -> Subscription {
        let id = self.id;
        // Registered first, checked second, so a disconnect can never slip
        // between the two; the flag keeps `f` to one call if both see it.
        let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let once: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            if !fired.swap(true, std::sync::atomic::Ordering::AcqRel) {
                f()
            }
        });
        let hook = once.clone();
        let sub = self
            .router
            .signals
            .disconnect
            .connect(move |(gone, _): &(ContextId, String)| {
                if *gone == id {
                    hook()
                }
            });
        if self.is_disconnected() {
            once();
        }
        sub
    }

    /// Lets the context (and the contexts it started) outlive this master:
    /// it stops exiting when its parent goes away (the parent-death signal is
    /// disarmed and the parent-lost exit skipped), leaves the master's
    /// session, and this router no longer shuts it or its subtree down when
    /// it is dropped.
    ///
    /// The trade-off: once its parent is gone, nothing can reach it any more
    /// (no calls, no shutdown; its logs go nowhere). It finishes the calls
    /// already queued, then exits, taking its own children with it. Give it
    /// its work with [`call_no_reply`](Self::call_no_reply) after `detach`
    /// (calls run in order, so a long call queued before would hold the
    /// detach back). Work that never ends makes a process that never ends.
    pub fn detach(&self) -> Result<()> {
        self.call(crate::core::detach::detach_self, ())?;
        self.router.forget_children_below(self.id);
        Ok(())
    }

    /// Waits up to `timeout` for the context to disconnect; true if it did.
    pub fn wait_disconnect(&self, timeout: Duration) -> bool {
        let latch = self.presence.latch();
        let _ = latch.get_timeout(timeout);
        latch.is_closed()
    }

    /// Asks the context to finish its queued calls and exit, waiting up to
    /// `DEFAULT_SHUTDOWN_TIMEOUT` (5 s); a local process still running then is
    /// killed, and the result is [`Error::ShutdownTimedOut`].
    ///
    /// A hop that [`Router::connect`](crate::Router::connect) started for this
    /// context (and shares with no other) is shut down after it.
    pub fn shutdown(&self) -> Result<()> {
        self.shutdown_timeout(DEFAULT_SHUTDOWN_TIMEOUT)
    }

    /// [`shutdown`](Self::shutdown) with a chosen grace period. A zero period
    /// kills a local process at once, and asks a remote context to exit
    /// without waiting: the caller asked for that, so it is not an error (nor
    /// logged as a fault).
    ///
    /// Fails with [`Error::ShutdownTimedOut`] when the context had not exited
    /// when the period ran out: `killed` is true when its local process was
    /// killed; a remote context that does not leave is ended by its parent
    /// hop when that goes.
    pub fn shutdown_timeout(&self, timeout: Duration) -> Result<()> {
        self.router.context_closing(self.id);
        let outcome = if timeout.is_zero() {
            match &self.process {
                Some(p) => {
                    p.kill();
                    p.exit.wait(Duration::from_secs(2));
                }
                // Nothing here to kill: asked, and not waited for.
                None => self.request_shutdown(),
            }
            Exited::InTime
        } else {
            let deadline = Instant::now() + timeout;
            self.request_shutdown();
            self.finish_shutdown(deadline)
        };
        // Whatever happened, the context is done for: a hop shared only with
        // it goes too.
        self.router.context_gone(self.id);
        match outcome {
            Exited::InTime => Ok(()),
            Exited::Killed | Exited::StillThere => Err(Error::ShutdownTimedOut {
                context: self.name.to_string(),
                grace: timeout,
                killed: outcome == Exited::Killed,
            }),
        }
    }

    pub(crate) fn request_shutdown(&self) {
        self.router.send(Message {
            dst: self.id,
            handle: handles::SHUTDOWN,
            ..Default::default()
        });
    }

    /// Waits for the exit until `deadline`, then kills and reaps.
    pub(crate) fn finish_shutdown(&self, deadline: Instant) -> Exited {
        let left = deadline.saturating_duration_since(Instant::now());
        let disconnected = self.wait_disconnect(left);
        match &self.process {
            Some(p) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if p.exit.wait(left).is_none() {
                    tracing::warn!(context = %self.name, pid = p.pid, "did not exit in time; killing it");
                    p.kill();
                    p.exit.wait(Duration::from_secs(2));
                    return Exited::Killed;
                }
                Exited::InTime
            }
            None if disconnected => Exited::InTime,
            None => {
                tracing::warn!(context = %self.name, "did not exit in time; left to its parent hop");
                Exited::StillThere
            }
        }
    }

    /// The exit status of the local process behind the context, once it has
    /// exited and been reaped.
    pub fn exit_status(&self) -> Option<std::process::ExitStatus> {
        self.process.as_ref().and_then(|p| p.exit.status())
    }
}
