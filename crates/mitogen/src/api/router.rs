//! [`Router`]: the program's entry into the tree of contexts.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::shared_hops::SharedHops;
use crate::core::channel::{Receiver, Sender};
use crate::core::context::{Context, DEFAULT_SHUTDOWN_TIMEOUT};
use crate::core::error::{Error, Result};
use crate::core::message::{ContextId, DEFAULT_MAX_MESSAGE_SIZE, MASTER_ID};
use crate::core::payload::Payload;
use crate::core::router::{current_inner, set_current, RouterInner};
use crate::core::signals::Subscription;
use crate::methods::doas::Doas;
use crate::methods::local::Local;
use crate::methods::ssh::Ssh;
use crate::methods::su::Su;
use crate::methods::sudo::Sudo;
use crate::methods::Method;
use crate::target::{Hop, Target};

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

/// Options for [`Router::connect_with`] that apply to the hops of a target.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// ssh configuration file (`ssh -F`).
    pub ssh_config: Option<std::path::PathBuf>,
    /// ssh options (`ssh -o OPTION`), e.g. `StrictHostKeyChecking=accept-new`.
    pub ssh_options: Vec<String>,
    /// Time allowed for each hop to start.
    pub connect_timeout: Option<Duration>,
    /// Password for the target's one `sudo`, `su` or `doas` hop (one without
    /// an entry in [`hop_passwords`](Self::hop_passwords)). It travels only to
    /// the context that runs that hop's tool. A target with more than one such
    /// hop is refused with [`Error::BadTarget`]: a password meant for one hop
    /// is never typed into another hop's prompt.
    pub password: Option<crate::core::secret::Secret>,
    /// Passwords of particular hops, each keyed by the hop's path: the
    /// target up to and including that hop, as [`Target`] writes it (e.g.
    /// `web1/sudo:app`, which is also that context's name). A password is
    /// typed only into its own hop's prompt (an ssh hop's login, a sudo or
    /// doas hop's caller, an su hop's target user). Keys naming no hop of a
    /// target are ignored, so one set of options can serve several targets.
    pub hop_passwords: std::collections::BTreeMap<String, crate::core::secret::Secret>,
}

impl ConnectOptions {
    /// Adds the password of the hop whose path is `hop` (see
    /// [`hop_passwords`](Self::hop_passwords)).
    pub fn hop_password(
        mut self,
        hop: impl Into<String>,
        password: impl Into<crate::core::secret::Secret>,
    ) -> ConnectOptions {
        self.hop_passwords.insert(hop.into(), password.into());
        self
    }

    /// The password for each hop of `target`, or why they cannot be given.
    fn passwords_for(&self, target: &Target) -> std::result::Result<Passwords, String> {
        let mut out = Vec::new();
        let mut shared = Vec::new();
        for (i, hop) in target.hops().iter().enumerate() {
            let path = target.prefix(i + 1);
            let switch = matches!(hop, Hop::Sudo { .. } | Hop::Su { .. } | Hop::Doas { .. });
            match self.hop_passwords.get(&path) {
                Some(_) if matches!(hop, Hop::Local) => {
                    return Err(format!("hop {path:?} is local and takes no password"))
                }
                Some(_) if matches!(hop, Hop::Setns { .. } | Hop::Chroot { .. }) => {
                    return Err(format!("hop {path:?} takes no password"))
                }
                Some(p) => out.push(Some(p.clone())),
                None if switch && self.password.is_some() => {
                    shared.push(path.clone());
                    out.push(self.password.clone());
                }
                None => out.push(None),
            }
        }
        if shared.len() > 1 {
            return Err(format!(
                "one password would go to {} hops ({}); give each its own \
                 (ConnectOptions::hop_passwords, or `--password-file HOP=FILE`)",
                shared.len(),
                shared.join(", ")
            ));
        }
        Ok(out)
    }
}

/// The method that starts `hop`, with the options that apply to it and its
/// own password.
fn hop_method(
    hop: &Hop,
    options: &ConnectOptions,
    password: Option<crate::core::secret::Secret>,
) -> std::result::Result<Method, String> {
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
            if let Some(p) = password {
                ssh = ssh.password(p);
            }
            Method::Ssh(ssh)
        }
        Hop::Sudo { user } => {
            let mut sudo = crate::methods::sudo::Sudo::new();
            if let Some(u) = user {
                sudo = sudo.user(u.clone());
            }
            if let Some(p) = password {
                sudo = sudo.password(p);
            }
            if let Some(t) = options.connect_timeout {
                sudo = sudo.connect_timeout(t);
            }
            Method::Sudo(sudo)
        }
        Hop::Su { user } => {
            let mut su = crate::methods::su::Su::user(user.as_deref().unwrap_or("root"));
            if let Some(p) = password {
                su = su.password(p);
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
            if let Some(p) = password {
                doas = doas.password(p);
            }
            if let Some(t) = options.connect_timeout {
                doas = doas.connect_timeout(t);
            }
            Method::Doas(doas)
        }
        Hop::Container(c) => {
            if password.is_some() {
                return Err(format!("container hop {c} takes no password"));
            }
            c.to_method(options.connect_timeout)
        }
        Hop::Setns { leader } => {
            let mut setns = crate::methods::Setns::leader(leader.clone());
            if let Some(t) = options.connect_timeout {
                setns = setns.connect_timeout(t);
            }
            Method::Setns(setns)
        }
        Hop::Chroot { path } => {
            let mut chroot = crate::methods::Chroot::new(path);
            if let Some(t) = options.connect_timeout {
                chroot = chroot.connect_timeout(t);
            }
            Method::Chroot(chroot)
        }
    })
}

/// The method of every hop of `target`, each named by the target up to it
/// (`bastion/web1`) and given its own password, checked before anything
/// starts; with the passwords, hop by hop.
fn hop_methods(target: &Target, options: &ConnectOptions) -> Result<(Vec<Method>, Passwords)> {
    let bad = |reason| Error::BadTarget {
        target: target.to_string(),
        reason,
    };
    let passwords = options.passwords_for(target).map_err(bad)?;
    let mut methods = Vec::new();
    for (i, (hop, password)) in target.hops().iter().zip(&passwords).enumerate() {
        let name = target.prefix(i + 1);
        let method = hop_method(hop, options, password.clone()).map_err(bad)?;
        methods.push(method.named(name));
    }
    Ok((methods, passwords))
}

/// What [`Router::connect`] takes: a [`Target`], or a string parsed as one
/// (a string that does not parse fails with [`Error::BadTarget`]).
pub trait IntoTarget {
    /// The target, parsed if need be.
    fn into_target(self) -> Result<Target>;
}

impl IntoTarget for Target {
    fn into_target(self) -> Result<Target> {
        Ok(self)
    }
}

impl IntoTarget for &Target {
    fn into_target(self) -> Result<Target> {
        Ok(self.clone())
    }
}

impl IntoTarget for &str {
    fn into_target(self) -> Result<Target> {
        self.parse()
    }
}

impl IntoTarget for String {
    fn into_target(self) -> Result<Target> {
        self.parse()
    }
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

/// The password of each hop of a target, the first hop first.
type Passwords = Vec<Option<crate::core::secret::Secret>>;

/// Settings of a master router.
#[derive(Clone, Debug)]
pub struct RouterBuilder {
    max_message_size: usize,
    allow_lateral: bool,
    binaries: Vec<(String, std::path::PathBuf)>,
    call_timeout: Option<Duration>,
}

impl Default for RouterBuilder {
    fn default() -> Self {
        RouterBuilder {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            allow_lateral: false,
            binaries: Vec::new(),
            call_timeout: None,
        }
    }
}

impl RouterBuilder {
    /// Largest message body sent or accepted (default 128 MiB); children get
    /// the same limit. A larger value than a frame's 32-bit length field
    /// holds is clamped to `u32::MAX - 1` bytes (one byte is kept for a
    /// relay's trailer), so a length is never cut short on the wire;
    /// [`Router::max_message_size`] gives the limit in force. Larger data is
    /// streamed in chunks ([`Blob`](crate::Blob) over a channel).
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

    /// How long [`Context::call`] and [`CallChain::call`](crate::CallChain::call)
    /// wait for a result before they fail with [`Error::Timeout`] (and cancel
    /// the call); by default they wait until the context goes away.
    /// [`Context::call_timeout`] and [`PendingCall`](crate::PendingCall)'s
    /// own waits are not affected. It applies to the calls this router
    /// makes: contexts it starts do not inherit it (a remote function that
    /// calls onwards chooses its own deadlines).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = Some(timeout);
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
        crate::service::install(&inner);
        inner.set_allow_lateral(self.allow_lateral);
        for (system, path) in &self.binaries {
            inner.binaries.add(system, path)?;
        }
        if let Some(t) = self.call_timeout {
            let _ = inner.call_timeout.set(t);
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
        let started = self.start(parent.as_ref().map(|p| p.context()), methods[last].clone());
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
