//! [`Router`]: the program's entry into the tree of contexts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::core::channel::{Receiver, Sender};
use crate::core::context::{Context, DEFAULT_SHUTDOWN_TIMEOUT};
use crate::core::error::{Error, Result};
use crate::core::message::{ContextId, DEFAULT_MAX_MESSAGE_SIZE, MASTER_ID};
use crate::core::payload::Payload;
use crate::core::router::RouterInner;
use crate::core::signals::Subscription;
use crate::methods::local::Local;
use crate::methods::ssh::Ssh;
use crate::methods::Method;
use crate::target::{Hop, Target};

static CURRENT: OnceLock<Weak<RouterInner>> = OnceLock::new();

/// Set by [`crate::run`]: children can only be started by a program whose
/// `main` goes through the entry point, or the child would run `main` again.
pub(crate) static ENTERED: AtomicBool = AtomicBool::new(false);

pub(crate) fn set_current(inner: &Arc<RouterInner>) {
    let _ = CURRENT.set(Arc::downgrade(inner));
}

pub(crate) fn current_inner() -> Option<Arc<RouterInner>> {
    CURRENT.get().and_then(Weak::upgrade)
}

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
}

/// Options for [`Router::connect_with`] that apply to the hops of a target.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// ssh configuration file (`ssh -F`).
    pub ssh_config: Option<std::path::PathBuf>,
    /// ssh options (`ssh -o OPTION`), e.g. `StrictHostKeyChecking=accept-new`.
    pub ssh_options: Vec<String>,
    /// Time allowed for each hop to start.
    pub connect_timeout: Option<Duration>,
    /// Password for the `sudo`, `su` and `doas` hops that ask for one. It
    /// travels only to the context that runs that hop's tool.
    pub password: Option<crate::core::secret::Secret>,
}

/// The method that starts `hop`, with the options that apply to it.
fn hop_method(hop: &Hop, options: &ConnectOptions) -> std::result::Result<Method, String> {
    Ok(match hop {
        Hop::Local => {
            let mut local = Local::new();
            if let Some(t) = options.connect_timeout {
                local = local.connect_timeout(t);
            }
            Method::Local(local)
        }
        Hop::Ssh { user, host, port } => {
            let mut ssh = Ssh::new(host.clone());
            if let Some(u) = user {
                ssh = ssh.user(u.clone());
            }
            if let Some(p) = port {
                ssh = ssh.port(*p);
            }
            if let Some(f) = &options.ssh_config {
                ssh = ssh.config_file(f.clone());
            }
            for o in &options.ssh_options {
                ssh = ssh.ssh_args(["-o".to_owned(), o.clone()]);
            }
            if let Some(t) = options.connect_timeout {
                ssh = ssh.connect_timeout(t);
            }
            Method::Ssh(ssh)
        }
        Hop::Sudo { user } => {
            let mut sudo = crate::methods::sudo::Sudo::new();
            if let Some(u) = user {
                sudo = sudo.user(u.clone());
            }
            if let Some(p) = &options.password {
                sudo = sudo.password(p.clone());
            }
            if let Some(t) = options.connect_timeout {
                sudo = sudo.connect_timeout(t);
            }
            Method::Sudo(sudo)
        }
        Hop::Su { user } => {
            let mut su = crate::methods::su::Su::user(user.as_deref().unwrap_or("root"));
            if let Some(p) = &options.password {
                su = su.password(p.clone());
            }
            if let Some(t) = options.connect_timeout {
                su = su.connect_timeout(t);
            }
            Method::Su(su)
        }
        Hop::Doas { user } => {
            let mut doas = crate::methods::doas::Doas::new();
            if let Some(u) = user {
                doas = doas.user(u.clone());
            }
            if let Some(p) = &options.password {
                doas = doas.password(p.clone());
            }
            if let Some(t) = options.connect_timeout {
                doas = doas.connect_timeout(t);
            }
            Method::Doas(doas)
        }
    })
}

/// Settings of a master router.
#[derive(Clone, Debug)]
pub struct RouterBuilder {
    max_message_size: usize,
    allow_lateral: bool,
    binaries: Vec<(String, std::path::PathBuf)>,
}

impl Default for RouterBuilder {
    fn default() -> Self {
        RouterBuilder {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            allow_lateral: false,
            binaries: Vec::new(),
        }
    }
}

impl RouterBuilder {
    /// Largest message body sent or accepted (default 128 MiB); children get
    /// the same limit.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Gives the router a build of this program for another system, named as
    /// `uname -sm` prints it there (`"Linux aarch64"`); hosts of that system
    /// get it instead of the master's own executable.
    pub fn binary(
        mut self,
        system: impl Into<String>,
        path: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.binaries.push((system.into(), path.into()));
        self
    }

    /// Lets contexts send messages to contexts outside their own subtree (a
    /// sibling, a cousin). Off by default: a child may only message its
    /// ancestors and its own descendants. Calls and shutdowns still need parent
    /// authority either way.
    pub fn allow_lateral_messages(mut self, on: bool) -> Self {
        self.allow_lateral = on;
        self
    }

    /// Starts the router's broker thread.
    pub fn build(self) -> Result<Router> {
        let inner = RouterInner::start(
            MASTER_ID,
            "master".into(),
            Vec::new(),
            None,
            self.max_message_size,
        )
        .map_err(|e| Error::io("starting the broker", e))?;
        inner.install_log_receiver();
        crate::core::route_control::install(&inner);
        inner.set_allow_lateral(self.allow_lateral);
        for (system, path) in &self.binaries {
            inner.binaries.add(system, path)?;
        }
        set_current(&inner);
        Ok(Router {
            owner: Some(Arc::new(Owner(inner.clone()))),
            inner,
        })
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
    /// A master router with default settings; see [`RouterBuilder`].
    pub fn new() -> Result<Router> {
        RouterBuilder::default().build()
    }

    /// Settings for a master router.
    pub fn builder() -> RouterBuilder {
        RouterBuilder::default()
    }

    /// The router of this process when it runs as a child context.
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

    /// Largest message body this router sends or accepts.
    pub fn max_message_size(&self) -> usize {
        self.inner.max_message_size
    }

    /// Bytes of the program this router has uploaded to remote caches so far
    /// (0 while every host had this build cached).
    pub fn uploaded_bytes(&self) -> u64 {
        self.inner.uploaded.load(Ordering::Relaxed)
    }

    fn check_can_spawn(&self) -> Result<()> {
        if !ENTERED.load(Ordering::Relaxed) {
            return Err(Error::Connect {
                context: "local".into(),
                reason: "the program's main must go through #[mitogen::main] or mitogen::run, \
                         so that a copy of it started as a child becomes a context"
                    .into(),
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
    pub fn start(&self, via: Option<&Context>, method: impl Into<Method>) -> Result<Context> {
        self.check_can_spawn()?;
        let method = method.into();
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

    /// Connects a context described by a target string such as `local`,
    /// `deploy@web1:2222` or `bastion/web1/local` (see [`Target`]); each hop
    /// after the first is started by the one before it.
    pub fn connect(&self, target: &Target) -> Result<Context> {
        self.connect_with(target, &ConnectOptions::default())
    }

    /// [`connect`](Self::connect) with options that apply to every hop.
    pub fn connect_with(&self, target: &Target, options: &ConnectOptions) -> Result<Context> {
        let mut hops = Vec::new();
        self.start_hops(target, options, &mut hops)?;
        hops.pop().ok_or_else(|| Error::BadTarget {
            target: target.to_string(),
            reason: "empty target".into(),
        })
    }

    /// [`connect_with`](Self::connect_with), returning the context of every
    /// hop, the first (nearest this process) first and the target's own last,
    /// so that a caller can shut the whole chain down (innermost first) when
    /// it is done. If a hop fails, the hops already started are shut down
    /// before the error is returned.
    pub fn connect_chain_with(
        &self,
        target: &Target,
        options: &ConnectOptions,
    ) -> Result<Vec<Context>> {
        let mut hops = Vec::new();
        if let Err(e) = self.start_hops(target, options, &mut hops) {
            for ctx in hops.iter().rev() {
                let _ = ctx.shutdown();
            }
            return Err(e);
        }
        if hops.is_empty() {
            return Err(Error::BadTarget {
                target: target.to_string(),
                reason: "empty target".into(),
            });
        }
        Ok(hops)
    }

    /// Starts the hops of `target` in order, each from the one before it,
    /// pushing each context onto `hops` as soon as it is up.
    fn start_hops(
        &self,
        target: &Target,
        options: &ConnectOptions,
        hops: &mut Vec<Context>,
    ) -> Result<()> {
        let mut name = String::new();
        for hop in target.hops() {
            if !name.is_empty() {
                name.push('/');
            }
            name.push_str(&hop.to_string());
            let method = hop_method(hop, options).map_err(|reason| Error::BadTarget {
                target: target.to_string(),
                reason,
            })?;
            let ctx = self.start(hops.last(), method.named(name.clone()))?;
            hops.push(ctx);
        }
        Ok(())
    }

    /// A channel whose receiver lives in this process; hand the sender to a
    /// remote function to stream values back.
    pub fn channel<T: Payload>(&self) -> (Sender<T>, Receiver<T>) {
        let rx = Receiver::new(self.inner.clone(), None);
        (rx.sender(), rx)
    }

    /// Calls `f(id, name)` when a context becomes unreachable: its stream
    /// closed, it was shut down, or a hop above it died (the hop's parent
    /// reports it with `DEL_ROUTE`). Fires once per context, after every call
    /// and channel waiting on it has failed.
    ///
    /// Observers run on the broker thread: they must return quickly and must
    /// not wait for a context (see [`crate::core::signals`]). Dropping the
    /// returned [`Subscription`] unregisters `f`.
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
