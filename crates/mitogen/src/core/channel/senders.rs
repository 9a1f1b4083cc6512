//! Who still holds a [`Sender`](crate::Sender): how a channel ends when its
//! last sender is dropped, in whichever process the copies went.
//!
//! Every process counts its own copies of a sender in one [`Holder`] per
//! channel (the copies share it). The receiver keeps a [`Tally`]:
//!
//! * its own process's holder (alive or not);
//! * per context, *tickets*: a copy encoded for that context (a call
//!   argument, a value sent to a channel) adds one; when that context's last
//!   copy is dropped it sends `Gone(n)`, n being the copies it decoded, which
//!   takes n away. A process that hands its copy on to another context sends
//!   `Handed(to)` first (on the same path as its later `Gone`, so in order);
//! * the contexts that disconnected: their tickets no longer count.
//!
//! The receiver ends (after the values already queued) once its own holder
//! is gone and every live context's tickets are zero. Counts are signed, so a
//! `Gone` that overtakes the `Handed` it answers (two different paths) only
//! delays the end. A copy encoded where the destination is unknown (by hand,
//! or in a reply) *pins* the channel: it then ends only by `close` or
//! disconnection, as before.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::core::latch::{Latch, Put};
use crate::core::message::{ContextId, Message, FLAG_CONTROL, FLAG_KEYED};
use crate::core::router::RouterInner;
use crate::core::signals::Subscription;

use super::flow::{credit_message, Arrival, Credit, Flow};
use super::window::{weight, Ended, OnBlock, Window};

/// A channel's address: (receiver's context, handle, key).
pub(crate) type ChannelId = (ContextId, u32, u32);

/// What a channel's control message (`FLAG_CONTROL`) says to its receiver.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum Control {
    /// Nothing: look at the tally again (sent within the receiver's process).
    Wake,
    /// The sending context dropped its last copy, having decoded `n`.
    Gone(u32),
    /// The sending context encoded a copy for another context.
    Handed(ContextId),
    /// A copy was encoded for an unknown destination.
    Pinned,
    /// The sending context waits for credit: give back what was taken (see
    /// [`flow`](super::flow)).
    Want,
}

thread_local! {
    /// The context the message being encoded on this thread goes to.
    static DESTINATION: Cell<Option<ContextId>> = const { Cell::new(None) };
}

/// Runs `f` (which encodes a message for context `dst`) so that senders
/// encoded in it know where they go.
pub(crate) fn encoding_for<R>(dst: ContextId, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<ContextId>);
    impl Drop for Restore {
        fn drop(&mut self) {
            DESTINATION.with(|d| d.set(self.0));
        }
    }
    let _restore = Restore(DESTINATION.with(|d| d.replace(Some(dst))));
    f()
}

fn destination() -> Option<ContextId> {
    DESTINATION.with(|d| d.get())
}

/// The receiver's side: the tally, and how to wake the receiver.
pub(crate) struct Home {
    id: ChannelId,
    latch: Arc<Latch<Message>>,
    router: Weak<RouterInner>,
    tally: Mutex<Tally>,
    /// The windows of the processes that send (see [`flow`](super::flow)).
    flow: Flow,
}

#[derive(Default)]
struct Tally {
    /// A sender has existed (until then the channel cannot end this way).
    started: bool,
    /// This process's holder.
    local: Weak<Holder>,
    tickets: HashMap<ContextId, i64>,
    dead: HashSet<ContextId>,
    pinned: bool,
    watch: Option<Subscription>,
}

impl Home {
    pub(crate) fn new(
        id: ChannelId,
        latch: Arc<Latch<Message>>,
        router: &Arc<RouterInner>,
        window: u64,
    ) -> Arc<Home> {
        let home = Arc::new(Home {
            id,
            latch,
            router: Arc::downgrade(router),
            tally: Mutex::new(Tally::default()),
            flow: Flow::new(window),
        });
        registry().insert(
            id,
            Entry {
                holder: Weak::new(),
                home: Arc::downgrade(&home),
                window: None,
                owner: Arc::downgrade(router),
            },
        );
        home
    }

    /// The queue the reader takes from.
    pub(crate) fn latch(&self) -> &Arc<Latch<Message>> {
        &self.latch
    }

    /// The window each sending process gets.
    pub(crate) fn window_size(&self) -> u64 {
        self.flow.size()
    }

    /// A message for this channel arrived in `router` (any thread): values
    /// are checked against their sender's window and queued for the reader;
    /// control and DEAD messages are queued as before.
    pub(crate) fn arrive(&self, router: &RouterInner, msg: Message) {
        if msg.is_dead() || msg.flags & FLAG_CONTROL != 0 {
            router.queue(&self.latch, msg);
            return;
        }
        let src = msg.src;
        match self.flow.arrive(src, weight(&msg)) {
            // Bounded by the sender's window, not by the router's limit.
            Arrival::Take => {
                if self.latch.put_within(msg, 0, usize::MAX) == Put::Closed {
                    self.end_flow(router, "the channel is closed");
                    self.tell_closed(router, src, "the channel is closed");
                }
            }
            Arrival::Over { outstanding } => {
                let reason = format!(
                    "context {:?} sent past its window: {outstanding} bytes not yet taken by \
                     the reader, window {} bytes; channel closed",
                    router.name_of(src),
                    self.flow.size()
                );
                tracing::warn!(src, handle = self.id.1, "{reason}");
                self.latch.close(&reason);
                router.del_handler(self.id.1);
                self.end_flow(router, &reason);
            }
            Arrival::Closed { tell } => {
                if tell {
                    let reason = self.flow.ended().unwrap_or_default();
                    self.tell_closed(router, src, &reason);
                }
            }
        }
    }

    /// The reader took `msg` (a value): give credit back if a batch is done.
    pub(crate) fn taken(&self, router: &RouterInner, msg: &Message) {
        if let Some(n) = self.flow.taken(msg.src, weight(msg)) {
            self.grant(router, msg.src, n);
        }
    }

    fn grant(&self, router: &RouterInner, to: ContextId, bytes: u64) {
        if to == router.id {
            if let Some(w) = lookup_window(self.id) {
                w.grant(bytes);
                settle(self.id);
            }
            return;
        }
        let (_, handle, key) = self.id;
        router.send(credit_message(to, &Credit::Grant { handle, key, bytes }));
    }

    /// The channel takes nothing more: every process that sent (and every
    /// copy of the sender in this process) is told, once.
    pub(crate) fn end_flow(&self, router: &RouterInner, reason: &str) {
        if let Some((reason, tell)) = self.flow.end(reason) {
            for c in tell {
                self.tell_closed(router, c, &reason);
            }
            if let Some(w) = lookup_window(self.id) {
                w.end(Ended::Closed(reason));
                settle(self.id);
            }
        }
    }

    fn tell_closed(&self, router: &RouterInner, to: ContextId, reason: &str) {
        if to == router.id {
            return;
        }
        let (_, handle, key) = self.id;
        router.send(credit_message(
            to,
            &Credit::Closed {
                handle,
                key,
                reason: reason.to_owned(),
            },
        ));
    }

    fn lock(&self) -> MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True once no sender is left anywhere (see the module docs).
    pub(crate) fn ended(&self) -> bool {
        let t = self.lock();
        t.started
            && !t.pinned
            && t.local.strong_count() == 0
            && t.tickets.iter().all(|(c, n)| *n == 0 || t.dead.contains(c))
    }

    /// Applies a control message that reached the receiver.
    pub(crate) fn apply(&self, src: ContextId, control: Control) {
        match control {
            Control::Wake => {}
            Control::Handed(to) => self.add(to, 1),
            Control::Pinned => self.lock().pinned = true,
            // A gone holder's window lingers in its process until what it
            // sent is given back (see `Entry::window`).
            Control::Want | Control::Gone(_) => {
                if let (Some(n), Some(router)) = (self.flow.wanted(src), self.router.upgrade()) {
                    self.grant(&router, src, n);
                }
            }
        }
        if let Control::Gone(n) = control {
            self.add(src, -i64::from(n));
        }
    }

    /// Adds `n` tickets for context `to`, watching it for disconnection.
    fn add(self: &Home, to: ContextId, n: i64) {
        let router = self.router.upgrade();
        let mut t = self.lock();
        let slot = t.tickets.entry(to).or_insert(0);
        *slot = slot.saturating_add(n);
        let Some(router) = router else { return };
        if to == router.id || t.dead.contains(&to) {
            return;
        }
        if t.watch.is_none() {
            let id = self.id;
            t.watch = Some(router.signals.disconnect.connect(
                move |(c, _): &(ContextId, String)| {
                    let Some(home) = lookup_home(id) else { return };
                    let mut t = home.lock();
                    // Only contexts that got a copy matter (a `Handed` to one
                    // that is gone already is caught in `add`).
                    if t.tickets.contains_key(c) {
                        t.dead.insert(*c);
                        drop(t);
                        home.wake();
                    }
                },
            ));
        }
        // It may have gone before the watch began.
        if router.disconnect_latch(to).is_closed() {
            t.dead.insert(to);
        }
    }

    fn wake(&self) {
        let mut msg = control_message(self.id, Control::Wake);
        msg.src = self.id.0;
        self.latch.put(msg);
    }

    /// The holder of this process, made if it has none.
    pub(crate) fn holder(self: &Arc<Home>) -> Arc<Holder> {
        holder_for(self.id, None, self.flow.size())
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let mut reg = registry();
        if let Some(e) = reg.get_mut(&self.id) {
            e.home = Weak::new();
            // This process's window of the channel goes with the receiver.
            e.window = None;
            if e.holder.strong_count() == 0 {
                reg.remove(&self.id);
            }
        }
    }
}

/// One process's copies of one channel's sender.
pub(crate) struct Holder {
    id: ChannelId,
    /// In the receiver's process.
    home: Option<Arc<Home>>,
    /// Elsewhere: the router that reports `Gone`.
    router: Option<Arc<RouterInner>>,
    decoded: AtomicU32,
    /// This process's credit on the channel (shared with the registry, where
    /// it outlives the holder until what was sent is given back).
    window: Arc<Window>,
}

impl Holder {
    /// This process's credit on the channel.
    pub(crate) fn window(&self) -> &Arc<Window> {
        &self.window
    }

    /// The router that sends this process's control messages.
    fn router(&self) -> Option<Arc<RouterInner>> {
        match (&self.home, &self.router) {
            (Some(home), _) => home.router.upgrade(),
            (None, r) => r.clone(),
        }
    }

    /// Records that a copy was encoded for wherever this thread's message goes.
    pub(crate) fn encoded(&self) {
        let control = match destination() {
            Some(to) => Control::Handed(to),
            None => Control::Pinned,
        };
        match (&self.home, &self.router) {
            (Some(home), _) => home.apply(self.id.0, control),
            (None, Some(router)) => router.send(control_message(self.id, control)),
            (None, None) => {}
        }
    }

    /// Records that a copy was decoded in this process.
    fn decoded(&self) {
        match &self.home {
            // A copy encoded for the receiver's own process has arrived.
            Some(home) => home.add(self.id.0, -1),
            None => {
                self.decoded.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl OnBlock for Holder {
    fn blocked(&self) {
        if let Some(router) = self.router() {
            router.send(control_message(self.id, Control::Want));
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        {
            let mut reg = registry();
            if let Some(e) = reg.get_mut(&self.id) {
                if e.holder.strong_count() == 0 {
                    if self.window.is_done() {
                        e.window = None;
                    }
                    if e.home.strong_count() == 0 && e.window.is_none() {
                        reg.remove(&self.id);
                    }
                }
            }
        }
        match (&self.home, &self.router) {
            (Some(home), _) => home.wake(),
            (None, Some(router)) => {
                let n = self.decoded.load(Ordering::Relaxed);
                router.send(control_message(self.id, Control::Gone(n)));
            }
            (None, None) => {}
        }
    }
}

/// The holder of this process for a sender just decoded.
pub(crate) fn decoded(id: ChannelId, router: Option<Arc<RouterInner>>, window: u64) -> Arc<Holder> {
    let h = holder_for(id, router, window);
    h.decoded();
    h
}

fn holder_for(id: ChannelId, router: Option<Arc<RouterInner>>, window: u64) -> Arc<Holder> {
    let mut reg = registry();
    let e = reg.entry(id).or_insert_with(|| Entry {
        holder: Weak::new(),
        home: Weak::new(),
        window: None,
        owner: router.as_ref().map(Arc::downgrade).unwrap_or_default(),
    });
    if let Some(h) = e.holder.upgrade() {
        return h;
    }
    let home = e.home.upgrade();
    // A window left by an earlier holder carries on: what it sent still
    // counts until given back.
    let window = e
        .window
        .get_or_insert_with(|| Arc::new(Window::new(window)))
        .clone();
    let h = Arc::new(Holder {
        id,
        router: if home.is_some() { None } else { router },
        home,
        decoded: AtomicU32::new(0),
        window,
    });
    e.holder = Arc::downgrade(&h);
    if let Some(home) = &h.home {
        let mut t = home.lock();
        t.started = true;
        t.local = Arc::downgrade(&h);
    }
    h
}

fn lookup_home(id: ChannelId) -> Option<Arc<Home>> {
    registry().get(&id).and_then(|e| e.home.upgrade())
}

/// This process's window of channel `id`, if it has one.
pub(crate) fn lookup_window(id: ChannelId) -> Option<Arc<Window>> {
    registry().get(&id).and_then(|e| e.window.clone())
}

/// Forgets the window of channel `id` once no holder uses it and it has
/// nothing in flight (or ended), and the entry once nothing is left.
pub(crate) fn settle(id: ChannelId) {
    let mut reg = registry();
    let Some(e) = reg.get_mut(&id) else { return };
    if e.holder.strong_count() > 0 {
        return;
    }
    if e.window.as_ref().is_some_and(|w| w.is_done()) {
        e.window = None;
    }
    if e.window.is_none() && e.home.strong_count() == 0 {
        reg.remove(&id);
    }
}

/// Ends every window `router`'s process holds on channels received in
/// context `gone` (it disconnected), or on every channel (`None`: the
/// router shut down): their senders' waits end with the reason.
pub(crate) fn end_windows(router: &RouterInner, gone: Option<(ContextId, &str)>) {
    let windows: Vec<(ChannelId, Arc<Window>)> = registry()
        .iter()
        .filter(|(id, e)| {
            std::ptr::eq(e.owner.as_ptr(), router) && gone.is_none_or(|(c, _)| id.0 == c)
        })
        .filter_map(|(id, e)| Some((*id, e.window.clone()?)))
        .collect();
    for (id, w) in windows {
        w.end(match gone {
            Some((_, name)) => Ended::Disconnected {
                context: name.to_owned(),
                reason: "disconnected while a sender waited for credit".into(),
            },
            None => Ended::Closed("router shut down".into()),
        });
        settle(id);
    }
}

/// A control message for channel `id`.
pub(crate) fn control_message(id: ChannelId, control: Control) -> Message {
    Message {
        dst: id.0,
        handle: id.1,
        reply_to: id.2,
        flags: FLAG_KEYED | FLAG_CONTROL,
        body: Bytes::from(postcard::to_allocvec(&control).unwrap_or_default()),
        ..Default::default()
    }
}

struct Entry {
    holder: Weak<Holder>,
    home: Weak<Home>,
    /// This process's window: kept while a holder lives, and after it while
    /// what it sent is not yet given back (a new holder carries on with it,
    /// so one process never has more than one window's worth in flight).
    window: Option<Arc<Window>>,
    /// The router the channel's messages leave by, for [`end_windows`].
    owner: Weak<RouterInner>,
}

/// Every channel this process holds a sender of or receives on.
fn registry() -> MutexGuard<'static, HashMap<ChannelId, Entry>> {
    static REGISTRY: OnceLock<Mutex<HashMap<ChannelId, Entry>>> = OnceLock::new();
    REGISTRY
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}
