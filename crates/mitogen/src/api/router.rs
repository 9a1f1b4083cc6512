//! [`Router`]: the program's entry into the tree of contexts.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::builder::RouterBuilder;
use super::connect_options::{hop_methods, ConnectOptions, IntoTarget};
use super::shared_hops::SharedHops;
use crate::core::call::PendingCall;
use crate::core::channel::{Receiver, Sender};
use crate::core::context::{Context, DEFAULT_SHUTDOWN_TIMEOUT};
use crate::core::error::{Error, Result};
use crate::core::message::ContextId;
use crate::core::payload::Payload;
use crate::core::remote::{IntoArgs, RemoteFn};
use crate::core::router::{current_inner, RouterInner};
use crate::core::signals::Subscription;
use crate::methods::doas::Doas;
use crate::methods::local::Local;
use crate::methods::ssh::Ssh;
use crate::methods::su::Su;
use crate::methods::sudo::Sudo;
use crate::methods::Method;
use crate::target::Target;

/// Shuts the router down when the last user-held [`Router`] clone goes.
struct Owner(Arc<RouterInner>);

impl Drop for Owner {
    fn drop(&mut self) {
        shutdown_inner(&self.0, DEFAULT_SHUTDOWN_TIMEOUT);
    }
}

fn shutdown_inner(inner: &Arc<RouterInner>, timeout: Duration) {
    if !inner.begin_shutdown() {
        return;
    }
    inner.signals.shutdown.fire(&());
    let deadline = Instant::now() + timeout;
    let children: Vec<Context> = inner.take_children();
    for c in &children {
        c.request_shutdown();
    }
    for c in &children {
        c.finish_shutdown(deadline);
    }
    inner.stop();
    SharedHops::of(inner).clear();
}

/// Starting contexts from a context, for chains read left to right.
impl Context {
    /// Starts a context with `method` through this one (which ships the
    /// program onwards itself): `web.start(Sudo::new())` is
    /// `router.start(Some(&web), Sudo::new())`. The new context is a child
    /// of this one, and is shut down with the router that made this one.
    ///
    /// ```no_run
    /// # fn demo(router: mitogen::Router) -> mitogen::Result<()> {
    /// use mitogen::{Ssh, Sudo};
    /// let root = router.ssh(Ssh::new("web1"))?.start(Sudo::new())?;
    /// # Ok(()) }
    /// ```
    pub fn start(&self, method: impl Into<Method>) -> Result<Context> {
        let router = Router {
            inner: self.router(),
            owner: None,
        };
        router.start(Some(self), method)
    }
}

/// The master's router: starts contexts and makes channels.
///
/// A program gets one from [`#[mitogen::main]`](crate::main) (or [`crate::run`]).
/// Clones share it; when the last clone is dropped, every context it started is
/// shut down (asked politely, then killed after a grace period) and reaped.
#[derive(Clone)]
pub struct Router {
    inner: Arc<RouterInner>,
    /// Held only for its `Drop`: the last user-held clone shuts the router down.
    #[allow(dead_code)]
    owner: Option<Arc<Owner>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("id", &self.inner.id)
            .field("name", &self.inner.name)
            .finish()
    }
}

impl Router {
    /// The router a [`RouterBuilder`] made: this handle, and its clones,
    /// own it (the last one shuts it down).
    pub(super) fn owning(inner: Arc<RouterInner>) -> Router {
        Router {
            owner: Some(Arc::new(Owner(inner.clone()))),
            inner,
        }
    }

    /// A master router with default settings; see [`RouterBuilder`].
    pub fn new() -> Result<Router> {
        RouterBuilder::default().build()
    }

    /// Settings for a master router.
    pub fn builder() -> RouterBuilder {
        RouterBuilder::default()
    }

    /// This process's router, while it runs: in the master, the first one
    /// built (the one [`#[mitogen::main]`](crate::main) and [`crate::run`]
    /// make); in a child context, the child's. Code that was not handed a
    /// router (a `main` taking no argument, a remote function) starts contexts
    /// and makes channels with it. `None` before any router is built and once
    /// the master's last clone is dropped.
    pub fn current() -> Option<Router> {
        current_inner().map(|inner| Router { inner, owner: None })
    }

    /// This process's context id (0 in the master).
    pub fn id(&self) -> ContextId {
        self.inner.id
    }

    /// This process's context name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The context that started this one (`None` in the master): what a
    /// child calls its parent's services through. Only what the parent's
    /// rules allow a child succeeds there: a child has no authority over
    /// its parent.
    pub fn parent(&self) -> Option<Context> {
        let id = *self.inner.ancestors.first()?;
        let name = self.inner.name_of(id);
        Some(Context::new(self.inner.clone(), id, &name, None))
    }

    /// Largest message body this router sends or accepts: the limit its
    /// builder was given (or its parent's, in a child), clamped to what a
    /// frame's length field holds (`u32::MAX - 1` bytes).
    pub fn max_message_size(&self) -> usize {
        self.inner.max_message_size
    }

    /// Bytes of the program this router has uploaded to remote caches so far
    /// (0 while every host had this build cached).
    pub fn uploaded_bytes(&self) -> u64 {
        self.inner.uploaded.load(Ordering::Relaxed)
    }

    /// Registered reply and channel handles of this router. Not a stable
    /// interface: for tests that check that nothing is left behind.
    #[doc(hidden)]
    pub fn handle_count(&self) -> usize {
        self.inner.handle_count()
    }

    /// Records this router keeps per context (routes, names, disconnect
    /// latches, parents, log budgets). Not a stable interface: for tests that
    /// check that a context that is gone, and that nothing holds on to, is
    /// forgotten.
    #[doc(hidden)]
    pub fn context_records(&self) -> usize {
        self.inner.context_records()
    }

    /// Records of the hops [`connect`](Self::connect) shares. Not a stable
    /// interface: for tests that check that nothing is left behind.
    #[doc(hidden)]
    pub fn shared_hop_records(&self) -> usize {
        SharedHops::of(&self.inner).records()
    }

    fn check_can_spawn(&self, method: &Method) -> Result<()> {
        if !crate::entry::ENTERED.load(Ordering::Relaxed) {
            return Err(Error::NoEntryPoint {
                context: method
                    .name()
                    .map(str::to_owned)
                    .unwrap_or_else(|| method.default_name()),
            });
        }
        Ok(())
    }

    /// Starts a new process of this program on this machine and returns its
    /// context.
    pub fn local(&self) -> Result<Context> {
        self.local_with(Local::new())
    }

    /// [`local`](Self::local) with options.
    pub fn local_with(&self, opts: Local) -> Result<Context> {
        self.start(None, opts)
    }

    /// Starts a context on another host over ssh, shipping this program there
    /// if that host does not have this build cached yet.
    pub fn ssh(&self, opts: Ssh) -> Result<Context> {
        self.start(None, opts)
    }

    /// Starts a context as another user on this machine with sudo, copying
    /// this program into that user's own cache if it does not have this
    /// build yet:
    ///
    /// ```no_run
    /// # fn demo(router: mitogen::Router, pw: mitogen::Secret) -> mitogen::Result<()> {
    /// use mitogen::Sudo;
    /// let root = router.sudo(Sudo::new().password(pw))?;
    /// # Ok(()) }
    /// ```
    ///
    /// A wrong password, a password needed but not given, an unknown user, a
    /// refusal by sudo's policy and a missing sudo are each an
    /// [`Error::Transport`] with its
    /// [`TransportFailure`](crate::TransportFailure).
    pub fn sudo(&self, opts: Sudo) -> Result<Context> {
        self.start(None, opts)
    }

    /// Starts a context as another user on this machine with su:
    ///
    /// ```no_run
    /// # fn demo(router: mitogen::Router) -> mitogen::Result<()> {
    /// use mitogen::Su;
    /// let app = router.su(Su::user("app"))?;   // as root: no password
    /// # Ok(()) }
    /// ```
    ///
    /// A wrong password, a password needed but not given and an unknown user
    /// are each an [`Error::Transport`] with its
    /// [`TransportFailure`](crate::TransportFailure).
    pub fn su(&self, opts: Su) -> Result<Context> {
        self.start(None, opts)
    }

    /// Starts a context as another user on this machine with doas:
    ///
    /// ```no_run
    /// # fn demo(router: mitogen::Router) -> mitogen::Result<()> {
    /// use mitogen::Doas;
    /// let root = router.doas(Doas::new())?;   // a `permit nopass` rule
    /// # Ok(()) }
    /// ```
    ///
    /// A wrong password, a password needed but not given, an unknown user, a
    /// refusal by doas's rules and a missing doas are each an
    /// [`Error::Transport`] with its
    /// [`TransportFailure`](crate::TransportFailure).
    pub fn doas(&self, opts: Doas) -> Result<Context> {
        self.start(None, opts)
    }

    /// Starts a context with any method, from this process (`via` = `None`) or
    /// as a child of another context, which then ships the program onwards
    /// itself:
    ///
    /// ```no_run
    /// # fn demo(router: mitogen::Router) -> mitogen::Result<()> {
    /// use mitogen::{Local, Ssh};
    /// let bastion = router.ssh(Ssh::new("bastion"))?;
    /// let web = router.start(Some(&bastion), Ssh::new("web1"))?;   // bastion → web1
    /// let worker = router.start(Some(&web), Local::new())?;        // a second process on web1
    /// # Ok(()) }
    /// ```
    ///
    /// [`Context::start`] says the same from the context's side:
    /// `web.start(Local::new())`.
    pub fn start(&self, via: Option<&Context>, method: impl Into<Method>) -> Result<Context> {
        let method = method.into();
        self.check_can_spawn(&method)?;
        let ctx = match via {
            None => method.connect(&self.inner, None)?,
            Some(via) => {
                let name = method
                    .name()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("{}/{}", via.name(), method.default_name()));
                let timeout = method.connect_timeout() + Duration::from_secs(5);
                crate::parent::via::connect_via(&self.inner, via, method, &name, timeout)?
            }
        };
        self.inner.remember_child(ctx.clone());
        Ok(ctx)
    }

    /// [`local`](Self::local) as a future, for async code under any runtime
    /// (tokio, async-std, smol, a plain `block_on`): the start-up runs on a
    /// thread of its own, so the executor is never blocked.
    ///
    /// ```no_run
    /// # async fn demo(router: mitogen::Router) -> mitogen::Result<()> {
    /// let ctx = router.local_async().await?;
    /// # Ok(()) }
    /// ```
    pub fn local_async(
        &self,
    ) -> impl std::future::Future<Output = Result<Context>> + Send + 'static {
        self.start_async(None, Local::new())
    }

    /// [`start`](Self::start) as a future (see [`local_async`](Self::local_async)).
    pub fn start_async(
        &self,
        via: Option<&Context>,
        method: impl Into<Method>,
    ) -> impl std::future::Future<Output = Result<Context>> + Send + 'static {
        let (router, via, method) = (self.clone(), via.cloned(), method.into());
        crate::core::latch::off_thread(move || router.start(via.as_ref(), method))
    }

    /// [`connect_with`](Self::connect_with) as a future (see
    /// [`local_async`](Self::local_async)).
    pub fn connect_async(
        &self,
        target: &Target,
        options: &ConnectOptions,
    ) -> impl std::future::Future<Output = Result<Context>> + Send + 'static {
        let (router, target, options) = (self.clone(), target.clone(), options.clone());
        crate::core::latch::off_thread(move || router.connect_with(&target, &options))
    }

    /// Connects a context described by a target string such as `local`,
    /// `deploy@web1:2222` or `bastion/web1/local` (see [`Target`]); each hop
    /// after the first is started by the one before it. The target is a
    /// [`Target`] or a string (`router.connect("deploy@web1/sudo")`), which
    /// fails to parse with [`Error::BadTarget`].
    ///
    /// The hops before the last are shared: connecting `bastion/web1` and
    /// then `bastion/web2` (with equal [`ConnectOptions`]) starts one
    /// `bastion` and runs both through it, also when two threads connect at
    /// once. Such a hop is shut down when the last context below it goes
    /// (shut down, or disconnected), and a hop that died is replaced by a
    /// fresh one at the next connect. Hops are the same hop when the target
    /// up to them and the options are equal: `deploy@web1:2222` with other
    /// ssh options, another ssh config, time-out or password is another hop.
    ///
    /// The last hop is always a new context, and it is the program's: a
    /// later target that begins with it (`bastion`, then `bastion/web1`)
    /// runs through it, and it stays up until the program shuts it down,
    /// taking the contexts below it along. If a later hop fails to start,
    /// the hops started for it alone are shut down before the error is
    /// returned.
    pub fn connect(&self, target: impl IntoTarget) -> Result<Context> {
        self.connect_with(target, &ConnectOptions::default())
    }

    /// [`connect`](Self::connect) with options that apply to every hop.
    pub fn connect_with(
        &self,
        target: impl IntoTarget,
        options: &ConnectOptions,
    ) -> Result<Context> {
        self.connect_offering(target, options, None)
    }

    /// Connects like [`connect_with`](Self::connect_with) and starts the new
    /// context's first call, `f(args)`, in the same go: the call travels
    /// with the context's configuration, behind the first stage, before
    /// anything has come back from the far side. Over a slow link a cached
    /// connect and its first result then take one round trip less than
    /// `connect_with` followed by a call: about what `ssh HOST true` takes
    /// (docs/performance.md, "Slow links"). Errors are those of
    /// `connect_with`; the call's own result comes from the returned
    /// [`PendingCall`], as from [`Context::call_async`].
    ///
    /// The call rides along when the target's last hop is started from this
    /// process and its arguments are small (a few KiB); otherwise it is made
    /// the ordinary way as soon as the context is up.
    ///
    /// ```no_run
    /// # #[mitogen::remote] fn uptime() -> String { String::new() }
    /// # fn demo(router: mitogen::Router) -> mitogen::Result<()> {
    /// let options = mitogen::ConnectOptions::default();
    /// let (ctx, pending) = router.connect_call("web1", &options, uptime, ())?;
    /// println!("{}: {}", ctx.name(), pending.get()?);
    /// # Ok(()) }
    /// ```
    pub fn connect_call<F: RemoteFn>(
        &self,
        target: impl IntoTarget,
        options: &ConnectOptions,
        _f: F,
        args: impl IntoArgs<F>,
    ) -> Result<(Context, PendingCall<F::Output>)> {
        let args = args.into_args();
        let first = std::rc::Rc::new(crate::parent::first_call::FirstCall {
            encode: Box::new(move |id| {
                crate::core::channel::encoding_for(id, || {
                    crate::core::call::encode_call(F::NAME, None, &args)
                })
            }),
            latch: Arc::new(crate::core::latch::Latch::new()),
            handle: std::sync::atomic::AtomicU32::new(0),
        });
        let ctx = self.connect_offering(target, options, Some(first.clone()))?;
        let pending = match first.handle() {
            0 => {
                // Not taken (the last hop was started through another
                // context): made now, with the same arguments.
                let body = (first.encode)(ctx.id());
                PendingCall::start(&ctx, body)
            }
            handle => PendingCall::sent(&ctx, first.latch.clone(), handle),
        };
        Ok((ctx, pending))
    }

    /// [`connect_with`](Self::connect_with), offering `first` to the start
    /// of the last hop (see [`connect_call`](Self::connect_call)).
    fn connect_offering(
        &self,
        target: impl IntoTarget,
        options: &ConnectOptions,
        first: Option<std::rc::Rc<crate::parent::first_call::FirstCall>>,
    ) -> Result<Context> {
        let target = &target.into_target()?;
        let (methods, passwords) = hop_methods(target, options)?;
        let Some(last) = methods.len().checked_sub(1) else {
            return Err(Error::BadTarget {
                target: target.to_string(),
                reason: "empty target".into(),
            });
        };
        let table = SharedHops::of(&self.inner);
        table.watch(&self.inner);
        let hops = target.hops();
        let keys: Vec<_> = (1..=hops.len())
            .map(|n| table.key(&hops[..n], options, &passwords[..n]))
            .collect();
        let parent = match last {
            0 => None,
            _ => Some(table.acquire(&self.inner, &keys, last - 1, &mut |via, i| {
                self.start(via, methods[i].clone())
            })?),
        };
        if let Some(first) = first {
            crate::parent::first_call::offer(first);
        }
        let started = self.start(parent.as_ref().map(|p| p.context()), methods[last].clone());
        // Withdrawn if the start did not take it.
        drop(crate::parent::first_call::take());
        table.finish_connect(&self.inner, &keys[last], parent, started)
    }

    /// [`connect_with`](Self::connect_with), returning the context of every
    /// hop, the first (nearest this process) first and the target's own last,
    /// so that a caller can shut the whole chain down (innermost first) when
    /// it is done. Every hop is started anew for this chain and is the
    /// program's: none is shared with [`connect`](Self::connect) or shut down
    /// for the caller. If a hop fails, the hops already started are shut down
    /// before the error is returned.
    pub fn connect_chain_with(
        &self,
        target: impl IntoTarget,
        options: &ConnectOptions,
    ) -> Result<Vec<Context>> {
        let target = &target.into_target()?;
        let (methods, _) = hop_methods(target, options)?;
        if methods.is_empty() {
            return Err(Error::BadTarget {
                target: target.to_string(),
                reason: "empty target".into(),
            });
        }
        let mut hops: Vec<Context> = Vec::new();
        for method in methods {
            match self.start(hops.last(), method) {
                Ok(ctx) => hops.push(ctx),
                Err(e) => {
                    for ctx in hops.iter().rev() {
                        let _ = ctx.shutdown();
                    }
                    return Err(e);
                }
            }
        }
        Ok(hops)
    }

    /// A channel whose receiver lives in this process; hand the sender to a
    /// remote function to stream values back.
    pub fn channel<T: Payload>(&self) -> (Sender<T>, Receiver<T>) {
        let rx = Receiver::new(self.inner.clone(), None);
        (rx.sender(), rx)
    }

    /// [`channel`](Self::channel) with a window of `window` bytes for each
    /// process that sends (see [`Sender`](crate::Sender#flow-control)).
    pub fn channel_with_window<T: Payload>(&self, window: usize) -> (Sender<T>, Receiver<T>) {
        let rx = Receiver::with_window_size(self.inner.clone(), None, window);
        (rx.sender(), rx)
    }

    /// Calls `f(id, name)` when a context becomes unreachable: its stream
    /// closed, it was shut down, or a hop above it died (the hop's parent
    /// reports it with `DEL_ROUTE`). Fires once per context, after every call
    /// and channel waiting on it has failed.
    ///
    /// Observers run on the broker thread: they must return quickly and must
    /// not wait for a context. Dropping the returned [`Subscription`]
    /// unregisters `f`.
    pub fn on_disconnect(
        &self,
        f: impl Fn(ContextId, &str) + Send + Sync + 'static,
    ) -> Subscription {
        self.inner
            .signals
            .disconnect
            .connect(move |(id, name): &(ContextId, String)| f(*id, name))
    }

    /// Calls `f(id, name)` when this router learns a route to a new context
    /// (one it starts, directly or through another context).
    pub fn on_route_added(
        &self,
        f: impl Fn(ContextId, &str) + Send + Sync + 'static,
    ) -> Subscription {
        self.inner
            .signals
            .route_added
            .connect(move |(id, name): &(ContextId, String)| f(*id, name))
    }

    /// Calls `f(id)` when this router forgets its route to a context.
    pub fn on_route_removed(&self, f: impl Fn(ContextId) + Send + Sync + 'static) -> Subscription {
        self.inner
            .signals
            .route_removed
            .connect(move |id: &ContextId| f(*id))
    }

    /// Calls `f` when the router begins to shut down ([`shutdown`](Self::shutdown)
    /// or the last clone dropped), before its contexts are asked to exit.
    pub fn on_shutdown(&self, f: impl Fn() + Send + Sync + 'static) -> Subscription {
        self.inner.signals.shutdown.connect(move |_: &()| f())
    }

    /// Lets other processes of this user join this router through a Unix
    /// socket at `path` (created mode 0600; removed when the [`Listener`] is
    /// dropped): each gets a [`crate::unix::Client`] from
    /// [`crate::unix::connect`] and may call into this router's contexts with
    /// the master's authority. Connections from other users are refused
    /// (`SO_PEERCRED`) and logged. The directory of `path` must belong to
    /// this user and be closed to group and others (not a symbolic link);
    /// [`listen_private`](Self::listen_private) picks one.
    ///
    /// [`Listener`]: crate::unix::Listener
    pub fn listen(&self, path: impl AsRef<std::path::Path>) -> Result<crate::unix::Listener> {
        crate::unix::listen(&self.inner, path.as_ref())
    }

    /// [`listen`](Self::listen) on a socket in `$XDG_RUNTIME_DIR` when it is
    /// private to this user, or else in a fresh 0700 directory of the
    /// temporary directory (removed with the socket); the
    /// [`Listener`](crate::unix::Listener) tells where.
    pub fn listen_private(&self) -> Result<crate::unix::Listener> {
        crate::unix::listen_private(&self.inner)
    }

    /// Shuts down every context this router started and stops its broker.
    /// Dropping the last clone does the same.
    pub fn shutdown(&self) {
        shutdown_inner(&self.inner, DEFAULT_SHUTDOWN_TIMEOUT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// These unit tests run without the entry point (`ENTERED` is never set
    /// here): starting a context must say so, naming the context asked for,
    /// whatever its method.
    #[test]
    fn missing_entry_point_is_its_own_error_naming_the_context() {
        let router = Router::new().expect("router");
        match router.ssh(Ssh::new("web1").user("deploy")) {
            Err(Error::NoEntryPoint { context }) => assert_eq!(context, "deploy@web1"),
            other => panic!("ssh without the entry point: {other:?}"),
        }
        let target: Target = "bastion/web1".parse().expect("target");
        match router.connect(&target) {
            Err(Error::NoEntryPoint { context }) => assert_eq!(context, "bastion"),
            other => panic!("a chain without the entry point: {other:?}"),
        }
        let err = router.local().expect_err("local without the entry point");
        assert!(
            err.to_string().contains("#[mitogen::main]"),
            "the message says what to do: {err}"
        );
        router.shutdown();
    }
}
