//! Typed channels across contexts: [`Sender`] and [`Receiver`].
//!
//! A receiver owns a handle in its process's router; a sender is that
//! handle's address (context id, handle number) and the channel's key, and can
//! itself be sent anywhere, for example as an argument of a remote call, so a
//! child can stream results back to whoever made the receiver.
//!
//! The key is a capability: the receiver takes only messages that carry it
//! (in `reply_to`, flagged `FLAG_KEYED`), and both the handle and the key are
//! drawn at random, so a context that was never handed the sender (nor sits
//! on the path a sender travelled) cannot send to the channel.
//!
//! A channel ends when its last sender is dropped, wherever the copies went
//! (see [`senders`]), or when a sender calls [`Sender::close`].

mod flow;
mod senders;
mod window;

pub(crate) use flow::install as install_credit;
pub(crate) use senders::{encoding_for, Home};
pub use window::DEFAULT_WINDOW;

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{Error, Result};
use super::latch::{Latch, LatchError};
use super::message::{ContextId, Message, FLAG_CONTROL, FLAG_KEYED};
use super::payload::Payload;
use super::router::{Policy, Presence, RouterInner, Sink};
use super::select::Selectable;
use flow::{credit_message, Credit};
use senders::{lookup_window, settle, Control, Holder};
use window::{weight, Ended};

/// Tells the sender of `msg`, a channel value that reached no receiver in
/// `router`, that the channel takes nothing more (see [`flow`]).
pub(crate) fn tell_gone(router: &RouterInner, msg: &Message) {
    let (handle, key) = (msg.handle, msg.reply_to);
    let reason = "the receiver is gone";
    if msg.src == router.id {
        let id = (router.id, handle, key);
        if let Some(w) = lookup_window(id) {
            w.end(Ended::Closed(reason.into()));
            settle(id);
        }
        return;
    }
    router.send(credit_message(
        msg.src,
        &Credit::Closed {
            handle,
            key,
            reason: reason.into(),
        },
    ));
}

/// The receiving end of a channel: values of type `T` sent to its handle.
///
/// It ends with [`Error::ChannelClosed`] once every [`Sender`] is dropped (in
/// this process and in every context a copy was passed to, or that context
/// disconnected), or when a sender calls [`Sender::close`], after the values
/// sent before. A receiver made for a particular context
/// ([`Context::channel`](crate::Context::channel)) also ends with
/// [`Error::Disconnected`] when that context goes away.
///
/// It is a [`futures_core::Stream`] of `Result<T>`: values, then the error
/// that ended it unless that was the channel closing, then the end.
///
/// Its memory is bounded by the channel's window (see
/// [`Sender`](Sender#flow-control)): each process that sends may have at
/// most [`window`](Self::window) bytes queued here, and credit goes back as
/// values are *taken* (`recv`, `try_recv`, the stream), so a receiver that
/// is not read holds senders back instead of filling up. A process that
/// sends past its window is cut off: the channel ends with
/// [`Error::ChannelClosed`] naming it, after the values queued before.
/// Dropping the receiver fails every sender waiting for credit.
pub struct Receiver<T> {
    router: Arc<RouterInner>,
    handle: u32,
    key: u32,
    latch: Arc<Latch<Message>>,
    /// For a receiver tied to a context: the router's record of it, kept
    /// so that the receiver's error names it after it is gone.
    _presence: Option<Presence>,
    home: Arc<Home>,
    /// The stream has yielded its last item.
    done: AtomicBool,
    _t: PhantomData<fn() -> T>,
}

impl<T: Payload> Receiver<T> {
    pub(crate) fn new(router: Arc<RouterInner>, respondent: Option<ContextId>) -> Receiver<T> {
        Self::with_window_size(router, respondent, DEFAULT_WINDOW)
    }

    /// A receiver whose senders each get a window of `window` bytes.
    pub(crate) fn with_window_size(
        router: Arc<RouterInner>,
        respondent: Option<ContextId>,
        window: usize,
    ) -> Receiver<T> {
        let presence = respondent.map(|id| router.presence(id));
        let latch = Arc::new(Latch::new());
        let key = router.token();
        let mut home = None;
        let handle = router.add_handler_made(
            |handle| {
                let h = Home::new(
                    (router.id, handle, key),
                    latch.clone(),
                    &router,
                    window as u64,
                );
                home = Some(h.clone());
                Sink::Channel(h)
            },
            respondent,
            false,
            Policy::Any,
            Some(key),
        );
        let home = home.unwrap_or_else(|| {
            Home::new(
                (router.id, handle, key),
                latch.clone(),
                &router,
                window as u64,
            )
        });
        Receiver {
            router,
            handle,
            key,
            latch,
            _presence: presence,
            home,
            done: AtomicBool::new(false),
            _t: PhantomData,
        }
    }

    /// A sender that delivers to this receiver, from whichever context it is
    /// handed to (it carries the channel's key; see the module docs). A
    /// receiver that has ended stays ended: what a new sender sends then is
    /// dropped.
    pub fn sender(&self) -> Sender<T> {
        Sender {
            context: self.router.id,
            handle: self.handle,
            key: self.key,
            router: Some(self.router.clone()),
            holder: self.home.holder(),
            _t: PhantomData,
        }
    }

    /// The window each process sending to this receiver gets, in bytes
    /// (see [`Sender`](Sender#flow-control)).
    pub fn window(&self) -> usize {
        usize::try_from(self.home.window_size()).unwrap_or(usize::MAX)
    }

    /// The router handle this receiver listens on.
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// Waits for the next value, until the channel closes or its context
    /// disconnects.
    pub fn recv(&self) -> Result<T> {
        loop {
            if let Some(r) = self.finish(self.latch.get(), None) {
                return r;
            }
        }
    }

    /// Waits at most `timeout` for the next value.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.recv_until(deadline, timeout),
            None => self.recv(),
        }
    }

    /// Waits until `deadline` for the next value.
    pub fn recv_deadline(&self, deadline: Instant) -> Result<T> {
        self.recv_until(deadline, deadline.saturating_duration_since(Instant::now()))
    }

    /// Waits until `deadline`; a time-out error names `waited`.
    fn recv_until(&self, deadline: Instant, waited: Duration) -> Result<T> {
        loop {
            let r = self.latch.get_deadline(Some(deadline));
            if let Some(r) = self.finish(r, Some(waited)) {
                return r;
            }
        }
    }

    /// The next value if one has arrived.
    pub fn try_recv(&self) -> Result<Option<T>> {
        loop {
            match self.latch.try_get() {
                Err(LatchError::Empty) => return Ok(None),
                r => {
                    if let Some(r) = self.finish(r, None) {
                        return r.map(Some);
                    }
                }
            }
        }
    }

    /// The next value, as a future (any executor).
    pub fn recv_async(&self) -> Recv<'_, T> {
        Recv { receiver: self }
    }

    /// Iterates over values until the channel closes or disconnects; the
    /// terminating error is dropped (use [`recv`](Self::recv) to see it).
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        std::iter::from_fn(move || self.recv().ok())
    }

    /// What a latch result means for the caller: `None` when it was a
    /// control message that did not end the channel (wait again).
    fn finish(
        &self,
        r: Result<Message, LatchError>,
        waited: Option<Duration>,
    ) -> Option<Result<T>> {
        match r {
            Ok(msg) if is_control(&msg) => {
                self.control(msg);
                None
            }
            Ok(msg) => {
                if !msg.is_dead() {
                    self.home.taken(&self.router, &msg);
                }
                if msg.is_dead() && msg.is_disconnect() {
                    // The router has dropped the handle: nothing can arrive any
                    // more, so every later wait must end the same way at once
                    // instead of blocking forever.
                    self.latch.put(msg.clone());
                }
                Some(message_to_value(&self.router, msg))
            }
            Err(e) => Some(Err(e.into_error(waited))),
        }
    }

    /// Applies a control message (see [`senders`]) and ends the channel if
    /// no sender is left.
    fn control(&self, msg: Message) {
        match postcard::from_bytes::<Control>(&msg.body) {
            Ok(c) => self.home.apply(msg.src, c),
            Err(_) => tracing::debug!(src = msg.src, "undecodable channel control message"),
        }
        if self.home.ended() {
            // Values already queued still come out; then every wait ends
            // at once with the reason.
            self.latch.close("every sender was dropped");
        }
    }

    fn poll_value(&self, cx: &mut TaskContext<'_>) -> Poll<Result<T>> {
        loop {
            match self.latch.poll_get(cx) {
                Poll::Ready(r) => {
                    if let Some(r) = self.finish(r, None) {
                        return Poll::Ready(r);
                    }
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

fn is_control(msg: &Message) -> bool {
    msg.flags & FLAG_CONTROL != 0 && !msg.is_dead()
}

/// Turns a received message into a value, or the error a DEAD message carries.
pub(crate) fn message_to_value<T: Payload>(router: &RouterInner, msg: Message) -> Result<T> {
    if msg.is_dead() {
        let reason = msg.dead_reason();
        if msg.is_disconnect() {
            return Err(Error::Disconnected {
                context: router.name_of(msg.src),
                reason,
            });
        }
        return Err(Error::ChannelClosed(reason));
    }
    T::decode(msg.body)
}

impl<T: Payload> Selectable for Receiver<T> {
    fn latch(&self) -> &Arc<Latch<Message>> {
        &self.latch
    }

    /// Control messages at the front are applied here, so that they do not
    /// make a [`Select`](crate::Select) report a receiver with nothing to read.
    fn is_ready(&self) -> bool {
        while let Some(msg) = self.latch.take_front_if(is_control) {
            self.control(msg);
        }
        self.latch.is_ready()
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.router.del_handler(self.handle);
        // Senders waiting for credit (here and in every context that sent)
        // fail now rather than wait for ever.
        self.home.end_flow(&self.router, "the receiver was dropped");
    }
}

/// Future returned by [`Receiver::recv_async`].
pub struct Recv<'a, T> {
    receiver: &'a Receiver<T>,
}

impl<T: Payload> Future for Recv<'_, T> {
    type Output = Result<T>;
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<T>> {
        self.receiver.poll_value(cx)
    }
}

/// Values until the channel ends: a closed channel ends the stream; any
/// other error (a disconnection, a value that does not decode) is yielded
/// once, and the stream ends after it.
impl<T: Payload> futures_core::Stream for Receiver<T> {
    type Item = Result<T>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Result<T>>> {
        if self.done.load(Ordering::Relaxed) {
            return Poll::Ready(None);
        }
        match self.poll_value(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(v)) => Poll::Ready(Some(Ok(v))),
            Poll::Ready(Err(e)) => {
                self.done.store(true, Ordering::Relaxed);
                match e {
                    Error::ChannelClosed(_) => Poll::Ready(None),
                    e => Poll::Ready(Some(Err(e))),
                }
            }
        }
    }
}

/// The sending end of a channel; cheap to clone, and serializable so it can be
/// passed to a remote function.
///
/// The receiver ends once every copy is dropped: the clones in this process
/// and the copies passed to other contexts (each context reports when its
/// last copy goes; one that disconnects no longer counts). Passed as a call
/// argument or sent on a channel, a copy counts for the context it goes to; a
/// copy serialized anywhere else (returned by a remote function, or encoded
/// by hand) keeps the channel open until [`close`](Self::close) or
/// disconnection, as the destination is not known then.
///
/// It carries the channel's key, drawn at random with the receiver: the
/// receiver takes values only from senders, so a context can send to a
/// channel only if a sender was handed to it (or passed through it on the way
/// to a context below it). Hand a sender only to contexts that may send.
///
/// # Flow control
///
/// Each process holding copies of a sender has a *window* on the channel
/// ([`DEFAULT_WINDOW`], 32 MiB, unless the receiver
/// was made by [`Context::channel_with_window`](crate::Context::channel_with_window)
/// or [`Router::channel_with_window`](crate::Router::channel_with_window)):
/// the bytes it sent (each value's encoded size, a [`Blob`](crate::Blob)'s
/// length, plus 64 per value) that the receiver's reader has not yet taken.
/// [`send`](Self::send) waits while the window is spent, until the reader
/// takes values (credit comes back every eighth of a window);
/// [`send_timeout`](Self::send_timeout) waits at most its time-out and
/// [`send_async`](Self::send_async) awaits credit without a thread. A value
/// larger than the window goes when nothing is in flight. The wait ends
/// with an error when the receiver is dropped or the channel cut off
/// ([`Error::ChannelClosed`]), or its context disconnects
/// ([`Error::Disconnected`]). The clones in one process share one window,
/// so the receiver holds at most the window times the number of processes
/// that send, and no hop between holds more than the windows crossing it.
///
/// ```no_run
/// # fn f(ctx: &mitogen::Context) -> mitogen::Result<()> {
/// // 1 MiB in flight at most: the producer keeps pace with the reader.
/// let (tx, rx) = ctx.channel_with_window::<mitogen::Blob>(1 << 20);
/// std::thread::spawn(move || -> mitogen::Result<()> {
///     for _ in 0..1024 {
///         tx.send(mitogen::Blob::from(vec![0u8; 64 * 1024]))?;
///     }
///     Ok(())
/// });
/// let total: usize = rx.iter().map(|b| b.len()).sum();
/// assert_eq!(total, 64 << 20);
/// # Ok(()) }
/// ```
pub struct Sender<T> {
    context: ContextId,
    handle: u32,
    key: u32,
    router: Option<Arc<RouterInner>>,
    /// This process's copies of this channel's sender: the receiver ends
    /// when the last copy anywhere is gone.
    holder: Arc<Holder>,
    _t: PhantomData<fn(T)>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            context: self.context,
            handle: self.handle,
            key: self.key,
            router: self.router.clone(),
            holder: self.holder.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sender({}:{})", self.context, self.handle)
    }
}

impl<T: Payload> Sender<T> {
    fn router(&self) -> Result<Arc<RouterInner>> {
        match &self.router {
            Some(r) => Ok(r.clone()),
            None => super::router::current_inner().ok_or(Error::RouterShutdown),
        }
    }

    /// Sends a value. It waits while this process's window on the channel is
    /// spent (see [Flow control](Sender#flow-control)), and while the stream
    /// towards the receiver has a lot queued, so a fast producer cannot
    /// exhaust memory; the wait ends early if the receiver goes.
    pub fn send(&self, value: T) -> Result<()> {
        self.send_until(value, None)
    }

    /// [`send`](Self::send), waiting at most `timeout` for credit and for the
    /// stream towards the receiver to drain: fails with [`Error::Timeout`]
    /// (the value is not sent) if they do not come.
    pub fn send_timeout(&self, value: T, timeout: Duration) -> Result<()> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.send_until(value, Some((deadline, timeout))),
            None => self.send(value),
        }
    }

    /// [`send`](Self::send) as a future (any executor): ready at once unless
    /// the window is spent (it then awaits credit, woken by the grant) or the
    /// stream towards the receiver is congested, in which case the wait for
    /// it to drain happens on a thread of its own, not the executor's.
    pub fn send_async(&self, value: T) -> impl Future<Output = Result<()>> + Send + 'static {
        let prepared = self.prepare(value);
        let context = self.context;
        // This process's copies count until the value is sent: dropping the
        // sender before awaiting must not end the channel ahead of it.
        let holder = self.holder.clone();
        async move {
            let (router, msg) = prepared?;
            let w = weight(&msg);
            std::future::poll_fn(|cx| holder.window().poll_take(w, cx, &*holder)).await?;
            let Some(stream) = router.stream_towards(context) else {
                router.send(msg);
                return Ok(());
            };
            let ready = !stream.is_dead() && stream.wait_for_room(Some(Instant::now()));
            if !ready && !stream.is_dead() {
                let s = stream.clone();
                if let Err(e) = super::latch::off_thread(move || Ok(s.wait_for_room(None))).await {
                    holder.window().refund(w);
                    return Err(e);
                }
            }
            if stream.is_dead() {
                holder.window().refund(w);
                return Err(Error::Disconnected {
                    context: router.name_of(context),
                    reason: "stream closed".into(),
                });
            }
            router.send(msg);
            Ok(())
        }
    }

    /// Encodes `value` into its message.
    fn prepare(&self, value: T) -> Result<(Arc<RouterInner>, Message)> {
        let router = self.router()?;
        let body = encoding_for(self.context, || value.encode())?;
        if body.len() > router.max_message_size {
            return Err(Error::TooLarge {
                len: body.len(),
                max: router.max_message_size,
            });
        }
        let msg = Message {
            dst: self.context,
            handle: self.handle,
            reply_to: self.key,
            flags: FLAG_KEYED,
            body,
            ..Default::default()
        };
        Ok((router, msg))
    }

    fn send_until(&self, value: T, deadline: Option<(Instant, Duration)>) -> Result<()> {
        let (router, msg) = self.prepare(value)?;
        let w = weight(&msg);
        let window = self.holder.window();
        let waited = deadline.map_or(Duration::ZERO, |d| d.1);
        window.take(w, deadline.map(|d| d.0), waited, &*self.holder)?;
        if let Some(stream) = router.stream_towards(self.context) {
            let room = !stream.is_dead() && stream.wait_for_room(deadline.map(|d| d.0));
            if !room {
                window.refund(w);
                if let (Some((_, timeout)), false) = (deadline, stream.is_dead()) {
                    return Err(Error::Timeout(timeout));
                }
                return Err(Error::Disconnected {
                    context: router.name_of(self.context),
                    reason: "stream closed".into(),
                });
            }
        }
        router.send(msg);
        Ok(())
    }

    /// Tells the receiver that nothing more will come: its `recv` returns
    /// [`Error::ChannelClosed`] after the values already sent, even while
    /// other copies of this sender live (dropping them all does the same).
    pub fn close(&self) -> Result<()> {
        let router = self.router()?;
        let mut dead = Message::dead(
            self.context,
            router.id,
            self.handle,
            "sender closed the channel",
        );
        dead.flags |= FLAG_KEYED;
        dead.reply_to = self.key;
        router.send(dead);
        Ok(())
    }

    /// The context the receiver lives in.
    pub fn context_id(&self) -> ContextId {
        self.context
    }
}

/// A sender travels as `(context, handle, key)`: whoever it is handed to may
/// send to the channel.
impl<T> Serialize for Sender<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.holder.encoded();
        let window = self.holder.window().size();
        (self.context, self.handle, self.key, window).serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Sender<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (context, handle, key, window) = <(ContextId, u32, u32, u64)>::deserialize(d)?;
        let router = super::router::current_inner();
        Ok(Sender {
            context,
            handle,
            key,
            holder: senders::decoded((context, handle, key), router, window),
            router: None,
            _t: PhantomData,
        })
    }
}
