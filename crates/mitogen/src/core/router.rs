//! The router: delivers every message to a local handle or along a stream.
//!
//! Each process has one. It knows its own context id, the handles registered in
//! this process, and for every other context it has heard of, the stream that
//! leads there (a direct child, or a child through which a deeper context is
//! reached). Anything it has no route for goes to its parent, if it has one.
//!
//! It is also where the security rules live: a message arriving from a child's
//! stream must come from that child's subtree, its authority is the id the
//! router assigns (never what the sender claims), and handles that run code
//! accept only messages carrying a parent's authority.
//!
//! When a stream disconnects, every handle waiting on a context behind it gets a
//! DEAD message at once, so no caller waits for a reply that cannot come.
//!
//! What the router knows of a context (its route, name, parent, disconnect
//! latch, log budgets) is forgotten once the context is gone and nothing
//! holds a [`Presence`] on it any more, so a long-lived master does not grow
//! with every context it ever had.
//!
//! The routing decisions are in `routing`, what a disconnection sets off in
//! `disconnect`, the rate limit of the logs of refused messages in
//! `log_budget`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, Weak};

use bytes::Bytes;
use mio::Poll;

use super::broker::Broker;
use super::channel::Home;
use super::int_hash::IntHash;
use super::latch::Latch;
use super::log::{self, LogRecord};
use super::message::{handles, ContextId, Message, FIRST_USER_HANDLE, MAX_MESSAGE_SIZE_LIMIT};
use super::stream::Stream;

mod disconnect;
mod log_budget;
mod routing;

use log_budget::LogBudget;

/// Log records a second the master takes from each context (see
/// [`RouterInner::install_log_receiver`]).
pub(crate) const FORWARDED_PER_SEC: u32 = 10_000;

/// A hold on what a router knows of one context: its name and its
/// disconnect latch. A [`Context`](crate::Context) handle (and every call
/// pending on it) and a receiver tied to a context hold one, so whatever
/// they report after the context is gone still names it and knows it is
/// gone. Once the context is gone and its last hold is dropped, the router
/// forgets it.
pub(crate) struct Presence {
    router: Arc<RouterInner>,
    id: ContextId,
    latch: Arc<Latch<()>>,
}

impl Presence {
    /// The latch closed when the context disconnects.
    pub(crate) fn latch(&self) -> &Arc<Latch<()>> {
        &self.latch
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        let router = self.router.clone();
        let id = self.id;
        // Our own reference must be gone before the count is looked at.
        self.latch = Arc::new(Latch::new());
        router.prune_gone(Some(id));
    }
}

/// The router of this process, once one is running: what a [`Sender`] decoded
/// from a message sends through.
///
/// [`Sender`]: super::channel::Sender
static CURRENT: OnceLock<Weak<RouterInner>> = OnceLock::new();

/// Makes `inner` this process's router (the first one only).
pub(crate) fn set_current(inner: &Arc<RouterInner>) {
    let _ = CURRENT.set(Arc::downgrade(inner));
}

/// This process's router, while it runs.
pub(crate) fn current_inner() -> Option<Arc<RouterInner>> {
    CURRENT.get().and_then(Weak::upgrade)
}

/// What the layer above core keeps about the contexts a router started, told
/// when one of them is shut down. Core knows it only through this trait, so
/// that nothing in `core/` depends on the public API (`api::shared_hops`
/// implements it: a hop `Router::connect` started for one context alone goes
/// with it).
pub(crate) trait ContextHooks: std::any::Any + Send + Sync {
    /// `id` is being shut down by its own `Context::shutdown`.
    fn closing(&self, id: ContextId);
    /// `id` has been shut down.
    fn gone(&self, router: &Arc<RouterInner>, id: ContextId);
}

/// Who may send to a handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Only messages carrying the authority of this context or one of its parents
    /// (the seed's `has_parent_authority`). Every handle that runs code or changes
    /// the context's state uses it.
    ParentsOnly,
    /// Any context that can reach this one, subject to the handle's
    /// respondent and key (replies and channels check those).
    Any,
}

/// Where a handle's messages go.
#[derive(Clone)]
pub(crate) enum Sink {
    /// Queued for a waiting thread or future.
    Latch(Arc<Latch<Message>>),
    /// Run on the broker thread as it arrives (must not block).
    Func(Arc<dyn Fn(Message) + Send + Sync>),
    /// A channel's receiver: values are checked against their sender's
    /// window before they are queued (see `core::channel::flow`).
    Channel(Arc<Home>),
}

struct HandleEntry {
    sink: Sink,
    /// The context expected to answer; if it disconnects, the handle gets a DEAD
    /// message. A reply handle takes messages from this very context only; a
    /// channel tied to a context, from that context's subtree.
    respondent: Option<ContextId>,
    /// Removed after one delivery (replies).
    once: bool,
    policy: Policy,
    /// A channel's key: only messages flagged `FLAG_KEYED` carrying it in
    /// `reply_to` are taken.
    key: Option<u32>,
}

/// Shared state of one process's router.
pub(crate) struct RouterInner {
    pub(crate) id: ContextId,
    pub(crate) name: String,
    pub(crate) broker: Broker,
    pub(crate) max_message_size: usize,
    /// Our parent first, then its parent, up to the master.
    pub(crate) ancestors: Vec<ContextId>,
    parent: Option<Arc<Stream>>,
    handles: Mutex<HashMap<u32, HandleEntry, IntHash>>,
    routes: RwLock<HashMap<ContextId, Arc<Stream>>>,
    /// `routes.len()`, readable without the lock by a thread polling for work.
    route_count: AtomicUsize,
    /// The name of every context with a route, and of every gone one that
    /// something still holds a [`Presence`] on (its errors name it).
    names: RwLock<HashMap<ContextId, String>>,
    /// The disconnect latch of the same contexts (closed once gone).
    disconnects: Mutex<HashMap<ContextId, Arc<Latch<()>>>>,
    next_context_id: AtomicU32,
    shut: AtomicBool,
    parent_lost: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// The builds of the program this router can ship.
    pub(crate) binaries: crate::core::binary::Binaries,
    /// Bytes of the program uploaded by first stages so far.
    pub(crate) uploaded: std::sync::atomic::AtomicU64,
    /// The parent of every context below us that we did not start ourselves
    /// (from `connect_via` in the master, from `ADD_ROUTE` elsewhere); direct
    /// children are absent, their parent is us.
    parents: Mutex<HashMap<ContextId, ContextId>>,
    /// Whether children may send to contexts outside their own subtree.
    allow_lateral: AtomicBool,
    /// Rate limit of the logs of refused messages.
    log_budget: LogBudget,
    /// Rate limits of the master's forwarded log records, and of its
    /// warnings that it drops some (see [`Self::install_log_receiver`]).
    forwarded_budget: LogBudget,
    forwarded_warnings: LogBudget,
    /// Processes joined through a unix-socket listener: they act for this
    /// router's context (see `crate::unix`).
    unix_clients: RwLock<HashSet<ContextId>>,
    /// Observer hooks: disconnect, route added/removed, shutdown.
    pub(crate) signals: super::signals::RouterSignals,
    /// Contexts this router started, for shutdown.
    children: Mutex<Vec<crate::core::context::Context>>,
    /// How long `Context::call` waits when not told (`RouterBuilder::call_timeout`).
    pub(crate) call_timeout: std::sync::OnceLock<std::time::Duration>,
    /// What the layer above keeps about the contexts this router started
    /// (the hops `Router::connect` shares between targets).
    pub(crate) hooks: OnceLock<Arc<dyn ContextHooks>>,
}

impl RouterInner {
    /// Context `id` is being shut down by its own `shutdown` (see
    /// [`ContextHooks::closing`]).
    pub(crate) fn context_closing(&self, id: ContextId) {
        if let Some(hooks) = self.hooks.get() {
            hooks.closing(id);
        }
    }

    /// Context `id` has been shut down (see [`ContextHooks::gone`]).
    pub(crate) fn context_gone(self: &Arc<Self>, id: ContextId) {
        if let Some(hooks) = self.hooks.get() {
            hooks.gone(self, id);
        }
    }

    /// Creates a router and starts its broker thread.
    pub(crate) fn start(
        id: ContextId,
        name: String,
        ancestors: Vec<ContextId>,
        parent: Option<Arc<Stream>>,
        max_message_size: usize,
    ) -> std::io::Result<Arc<RouterInner>> {
        super::token::init()?;
        let (broker, poll): (Broker, Poll) = Broker::new()?;
        let inner = Arc::new(RouterInner {
            id,
            name,
            broker,
            max_message_size: max_message_size.min(MAX_MESSAGE_SIZE_LIMIT),
            ancestors,
            parent,
            handles: Mutex::new(HashMap::default()),
            routes: RwLock::new(HashMap::new()),
            route_count: AtomicUsize::new(0),
            names: RwLock::new(HashMap::new()),
            disconnects: Mutex::new(HashMap::new()),
            next_context_id: AtomicU32::new(id + 1),
            shut: AtomicBool::new(false),
            parent_lost: Mutex::new(None),
            binaries: Default::default(),
            uploaded: Default::default(),
            children: Mutex::new(Vec::new()),
            hooks: OnceLock::new(),
            log_budget: LogBudget::new(),
            forwarded_budget: LogBudget::per_second(FORWARDED_PER_SEC),
            forwarded_warnings: LogBudget::per_second(1),
            signals: Default::default(),
            unix_clients: RwLock::new(HashSet::new()),
            allow_lateral: AtomicBool::new(false),
            parents: Mutex::new(HashMap::new()),
            call_timeout: std::sync::OnceLock::new(),
        });
        inner.broker.start(poll, inner.clone())?;
        super::channel::install_credit(&inner);
        Ok(inner)
    }

    fn lock_handles(&self) -> MutexGuard<'_, HashMap<u32, HandleEntry, IntHash>> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` when the parent stream disconnects (child processes exit then).
    pub(crate) fn on_parent_lost(&self, f: impl FnOnce() + Send + 'static) {
        *self.parent_lost.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(f));
    }

    /// A new context id (the master hands them out).
    pub(crate) fn alloc_context_id(&self) -> ContextId {
        self.next_context_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A fresh unguessable number (a channel key).
    pub(crate) fn token(&self) -> u32 {
        super::token::next()
    }

    /// Registers a handle at a fresh unguessable number and returns it. Only
    /// messages carrying `key` (with `FLAG_KEYED`) reach a keyed handle.
    pub(crate) fn add_handler(
        &self,
        sink: Sink,
        respondent: Option<ContextId>,
        once: bool,
        policy: Policy,
        key: Option<u32>,
    ) -> u32 {
        self.add_handler_made(|_| sink, respondent, once, policy, key)
    }

    /// [`add_handler`](Self::add_handler) with a sink made once the handle
    /// number is known (a channel's sink names its own handle).
    pub(crate) fn add_handler_made(
        &self,
        make: impl FnOnce(u32) -> Sink,
        respondent: Option<ContextId>,
        once: bool,
        policy: Policy,
        key: Option<u32>,
    ) -> u32 {
        if let Some(r) = respondent.filter(|r| self.is_disconnected(*r)) {
            // It waits on a context that is gone already: its waiter is told
            // at once, and the handle is never registered.
            let handle = super::token::next().max(FIRST_USER_HANDLE);
            let msg = Message::disconnected(self.id, r, handle, &self.disconnect_reason(r));
            match make(handle) {
                Sink::Latch(l) => {
                    l.put(msg);
                }
                Sink::Channel(home) => {
                    home.latch().put(msg);
                }
                Sink::Func(_) => {}
            }
            return handle;
        }
        let mut handles = self.lock_handles();
        let handle = loop {
            // Numbers below 1000 are the well-known handles; a clash with a
            // live handle is rare (2^32 numbers) and drawn again.
            let handle = super::token::next();
            if handle >= FIRST_USER_HANDLE && !handles.contains_key(&handle) {
                break handle;
            }
        };
        let entry = HandleEntry {
            sink: make(handle),
            respondent,
            once,
            policy,
            key,
        };
        handles.insert(handle, entry);
        handle
    }

    /// When `entry` waits on a context that is gone already, tells its waiter
    /// at once and returns the (unregistered) handle it would have had.
    fn refuse_if_gone(&self, entry: &HandleEntry) -> Option<u32> {
        let r = entry.respondent?;
        if !self.is_disconnected(r) {
            return None;
        }
        let handle = super::token::next().max(FIRST_USER_HANDLE);
        if let Sink::Latch(l) = &entry.sink {
            l.put(Message::disconnected(
                self.id,
                r,
                handle,
                &self.disconnect_reason(r),
            ));
        }
        Some(handle)
    }

    /// Registers a handler at a fixed (well-known) handle.
    pub(crate) fn add_handler_at(
        &self,
        handle: u32,
        sink: Sink,
        respondent: Option<ContextId>,
        once: bool,
        policy: Policy,
    ) {
        let entry = HandleEntry {
            sink,
            respondent,
            once,
            policy,
            key: None,
        };
        if self.refuse_if_gone(&entry).is_none() {
            self.lock_handles().insert(handle, entry);
        }
    }

    /// Unregisters a handle.
    pub(crate) fn del_handler(&self, handle: u32) {
        self.lock_handles().remove(&handle);
    }

    /// Records `id`'s name and the stream that leads to it.
    pub(crate) fn add_route(&self, id: ContextId, name: &str, stream: Arc<Stream>) {
        {
            // All three under the routes lock (taken first, as
            // `prune_gone` does), so a prune never sees the name or latch
            // of a context whose route is about to appear.
            let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
            self.disconnects
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(id)
                .or_insert_with(|| Arc::new(Latch::new()));
            self.names
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, name.to_owned());
            routes.insert(id, stream);
            self.route_count.store(routes.len(), Ordering::Release);
        }
        self.signals.route_added.fire(&(id, name.to_owned()));
    }

    /// True while some context is reachable below this one: this context
    /// relays for others.
    pub(crate) fn has_routes(&self) -> bool {
        self.route_count.load(Ordering::Acquire) > 0
    }

    /// The name of context `id`, or a placeholder.
    pub(crate) fn name_of(&self, id: ContextId) -> String {
        if id == self.id {
            return self.name.clone();
        }
        self.names
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("context {id}"))
    }

    /// A latch closed when context `id` disconnects.
    ///
    /// In the master, a context id it handed out that has neither a route
    /// nor a record any more belongs to a context that is gone and was
    /// forgotten: its latch is closed at once (and not recorded).
    pub(crate) fn disconnect_latch(&self, id: ContextId) -> Arc<Latch<()>> {
        let forgotten = self.forgotten(id);
        let mut disconnects = self.disconnects.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = disconnects.get(&id) {
            return l.clone();
        }
        let latch = Arc::new(Latch::new());
        if forgotten {
            latch.close("disconnected");
        } else {
            disconnects.insert(id, latch.clone());
        }
        latch
    }

    /// A hold on what this router knows of context `id`, kept until the
    /// holder is dropped (see [`Presence`]).
    pub(crate) fn presence(self: &Arc<Self>, id: ContextId) -> Presence {
        Presence {
            latch: self.disconnect_latch(id),
            router: self.clone(),
            id,
        }
    }

    /// Forgets the name, disconnect latch and log budgets of every context
    /// that has no route (it is gone, or was never reached) and that nothing
    /// holds a [`Presence`] on: nobody can ask about it any more. `only`
    /// limits the sweep to one context.
    pub(crate) fn prune_gone(&self, only: Option<ContextId>) {
        // Lock order: routes, then disconnects, then names (as `add_route`).
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        let mut disconnects = self.disconnects.lock().unwrap_or_else(|e| e.into_inner());
        let unheld = |id: &ContextId, latch: &Arc<Latch<()>>| {
            Arc::strong_count(latch) == 1 && !routes.contains_key(id)
        };
        let gone: Vec<ContextId> = match only {
            Some(id) => disconnects
                .get(&id)
                .filter(|l| unheld(&id, l))
                .map(|_| id)
                .into_iter()
                .collect(),
            None => disconnects
                .iter()
                .filter(|(id, l)| unheld(id, l))
                .map(|(id, _)| *id)
                .collect(),
        };
        for id in &gone {
            disconnects.remove(id);
        }
        let mut names = self.names.write().unwrap_or_else(|e| e.into_inner());
        if only.is_none() {
            names.retain(|id, _| routes.contains_key(id) || disconnects.contains_key(id));
        } else {
            for id in &gone {
                names.remove(id);
            }
        }
        drop((names, disconnects, routes));
        for budget in [
            &self.log_budget,
            &self.forwarded_budget,
            &self.forwarded_warnings,
        ] {
            budget.forget(&gone);
        }
    }

    fn is_disconnected(&self, id: ContextId) -> bool {
        if id == self.id {
            return false;
        }
        let known = self
            .disconnects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .map(|l| l.is_closed());
        known.unwrap_or_else(|| self.forgotten(id))
    }

    /// True in the master for an id it handed out whose context has no
    /// route and no record: it is gone, and was forgotten (ids are never
    /// handed out twice).
    fn forgotten(&self, id: ContextId) -> bool {
        self.parent.is_none()
            && id > self.id
            && id < self.next_context_id.load(Ordering::Relaxed)
            && self.route_to(id).is_none()
    }

    fn disconnect_reason(&self, id: ContextId) -> String {
        format!("context {:?} disconnected", self.name_of(id))
    }

    /// The stream a message to `dst` leaves on, if any.
    pub(crate) fn stream_towards(&self, dst: ContextId) -> Option<Arc<Stream>> {
        if dst == self.id {
            return None;
        }
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&dst)
            .cloned()
            .or_else(|| self.parent.clone())
    }

    /// True when `msg` carries the authority of this context or one of its
    /// ancestors.
    pub(crate) fn has_parent_authority(&self, msg: &Message) -> bool {
        msg.auth_id == self.id || self.ancestors.contains(&msg.auth_id)
    }

    /// Sends a message from this process.
    pub(crate) fn send(&self, mut msg: Message) {
        msg.src = self.id;
        self.route(msg, None)
    }

    /// True when `id` is `ancestor` or lives in `ancestor`'s subtree, as far as
    /// this router knows the tree below it.
    ///
    /// Sharing a stream is not enough: every context behind one child shares
    /// that child's stream, and a context must not speak for its cousins or
    /// its own parent. The parent of every context below this router is known
    /// (contexts it started itself, and every `ADD_ROUTE`, which names the new
    /// context's parent), so the walk is exact; anything not below us ends
    /// the walk at our own id.
    pub(crate) fn descends_from(&self, id: ContextId, ancestor: ContextId) -> bool {
        let parents = self.parents.lock().unwrap_or_else(|e| e.into_inner());
        let mut at = id;
        // Bounded, so a corrupt map can never loop forever.
        for _ in 0..=parents.len() + 1 {
            if at == ancestor {
                return true;
            }
            if at == self.id {
                return false;
            }
            at = parents.get(&at).copied().unwrap_or(self.id);
        }
        false
    }

    /// Records that `id` is a unix client acting for this router's context.
    pub(crate) fn add_unix_client(&self, id: ContextId) {
        self.unix_clients
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id);
    }

    /// True when `id` joined through a unix-socket listener.
    fn is_unix_client(&self, id: ContextId) -> bool {
        let clients = self.unix_clients.read().unwrap_or_else(|e| e.into_inner());
        !clients.is_empty() && clients.contains(&id)
    }

    /// Every context this router has a route to, with its name, in id order
    /// (unix clients left out: they are not contexts to call into).
    pub(crate) fn known_contexts(&self) -> Vec<(ContextId, String)> {
        let mut ids: Vec<ContextId> = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .filter(|id| !self.is_unix_client(*id))
            .collect();
        ids.sort_unstable();
        ids.into_iter().map(|id| (id, self.name_of(id))).collect()
    }

    /// Whether messages may cross from one child's subtree into another's.
    pub(crate) fn allow_lateral(&self) -> bool {
        self.allow_lateral.load(Ordering::Relaxed)
    }

    /// Allows (or refuses) messages between subtrees.
    pub(crate) fn set_allow_lateral(&self, on: bool) {
        self.allow_lateral.store(on, Ordering::Relaxed);
    }

    /// Records that `id` was started by `parent`.
    pub(crate) fn set_parent_of(&self, id: ContextId, parent: ContextId) {
        self.parents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, parent);
    }

    /// The parent of `id` (this router's own id for a direct child), if known.
    pub(crate) fn parent_of(&self, id: ContextId) -> Option<ContextId> {
        if id == self.id {
            return None;
        }
        let parents = self.parents.lock().unwrap_or_else(|e| e.into_inner());
        Some(parents.get(&id).copied().unwrap_or(self.id))
    }

    /// The stream messages to `id` leave on, if `id` is below us.
    pub(crate) fn route_to(&self, id: ContextId) -> Option<Arc<Stream>> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// Forwards a line of this process's stdout/stderr to the master.
    pub(crate) fn forward_output(&self, stream: &str, level: tracing::Level, line: &str) {
        self.forward_log(&LogRecord::new(level, stream, line));
    }

    /// Sends a log record towards the master (cut to [`log::MAX_RECORD`]
    /// bytes: a record is one message, and must fit one).
    pub(crate) fn forward_log(&self, rec: &LogRecord) {
        if rec.message.len() + rec.target.len() > log::MAX_RECORD {
            let mut rec = rec.clone();
            rec.truncate(log::MAX_RECORD);
            return self.forward_log(&rec);
        }
        if self.parent.is_none() {
            log::emit_remote(&self.name, rec);
            return;
        }
        let Ok(body) = postcard::to_allocvec(rec) else {
            return;
        };
        self.send(Message {
            dst: super::message::MASTER_ID,
            handle: handles::FORWARD_LOG,
            body: Bytes::from(body),
            ..Default::default()
        });
    }

    /// Installs the master's handler that turns forwarded records into events.
    ///
    /// What a context may make the master log is bounded: at most
    /// [`FORWARDED_PER_SEC`] records a second from each context (the first
    /// one after a cut says how many were dropped), each cut to
    /// [`log::MAX_RECORD`] bytes.
    pub(crate) fn install_log_receiver(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        self.add_handler_at(
            handles::FORWARD_LOG,
            Sink::Func(Arc::new(move |msg: Message| {
                let Some(router) = weak.upgrade() else { return };
                if router.forwarded_budget.take(msg.src).is_none() {
                    if let Some(before) = router.forwarded_warnings.take(msg.src) {
                        tracing::warn!(
                            context = %router.name_of(msg.src),
                            "dropping log records from a context sending more than \
                             {FORWARDED_PER_SEC} a second ({before} more dropped since \
                             the last such warning)"
                        );
                    }
                    return;
                }
                match postcard::from_bytes::<LogRecord>(&msg.body) {
                    Ok(mut rec) => {
                        rec.truncate(log::MAX_RECORD);
                        log::emit_remote(&router.name_of(msg.src), &rec)
                    }
                    Err(e) => tracing::warn!(src = msg.src, "undecodable log record: {e}"),
                }
            })),
            None,
            false,
            Policy::Any,
        );
    }

    /// Marks the router shut down; returns `false` if it already was.
    pub(crate) fn begin_shutdown(&self) -> bool {
        !self.shut.swap(true, Ordering::AcqRel)
    }

    /// True once shutdown has begun.
    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut.load(Ordering::Acquire)
    }

    /// Stops the broker (disconnecting every stream) and fails every handle.
    pub(crate) fn stop(&self) {
        self.broker.stop();
        let entries: Vec<HandleEntry> = self.lock_handles().drain().map(|(_, e)| e).collect();
        for e in entries {
            match e.sink {
                Sink::Latch(l) => l.close("router shut down"),
                Sink::Channel(home) => {
                    home.latch().close("router shut down");
                    home.end_flow(self, "router shut down");
                }
                Sink::Func(_) => {}
            }
        }
    }

    /// Keeps `ctx` for shutdown; forgets children that are already gone.
    pub(crate) fn remember_child(&self, ctx: crate::core::context::Context) {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        // A remote context has no process to reap: gone once disconnected.
        children
            .retain(|c| !(c.is_disconnected() && (c.pid().is_none() || c.exit_status().is_some())));
        children.push(ctx);
    }

    /// Drops `id` and every context below it from the shutdown list (they
    /// were detached and must outlive this router).
    pub(crate) fn forget_children_below(&self, id: ContextId) {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        children.retain(|c| !self.descends_from(c.id(), id));
    }

    /// Handles registered in this router (a measure for leak tests).
    pub(crate) fn handle_count(&self) -> usize {
        self.lock_handles().len()
    }

    /// Records this router keeps per context: routes, names, disconnect
    /// latches, parents, unix clients and log budgets (a measure for leak
    /// tests: it returns to its size once the contexts are gone and nothing
    /// holds on to them).
    pub(crate) fn context_records(&self) -> usize {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner()).len();
        let names = self.names.read().unwrap_or_else(|e| e.into_inner()).len();
        let latches = self
            .disconnects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        let parents = self.parents.lock().unwrap_or_else(|e| e.into_inner()).len();
        let clients = self
            .unix_clients
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        routes
            + names
            + latches
            + parents
            + clients
            + self.log_budget.len()
            + self.forwarded_budget.len()
            + self.forwarded_warnings.len()
    }

    /// Takes the list of contexts this router started.
    pub(crate) fn take_children(&self) -> Vec<crate::core::context::Context> {
        std::mem::take(&mut *self.children.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
