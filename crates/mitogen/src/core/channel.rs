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

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{Error, Result};
use super::latch::{Latch, LatchError};
use super::message::{ContextId, Message, FLAG_KEYED};
use super::payload::Payload;
use super::router::{Policy, Presence, RouterInner, Sink};
use super::select::Selectable;

/// The receiving end of a channel: values of type `T` sent to its handle.
///
/// A receiver made for a particular context ([`Context::channel`](crate::Context::channel))
/// ends with [`Error::Disconnected`] when that context goes away; any receiver ends
/// with [`Error::ChannelClosed`] when a sender calls [`Sender::close`].
pub struct Receiver<T> {
    router: Arc<RouterInner>,
    handle: u32,
    key: u32,
    latch: Arc<Latch<Message>>,
    /// For a receiver tied to a context: the router's record of it, kept
    /// so that the receiver's error names it after it is gone.
    _presence: Option<Presence>,
    _t: PhantomData<fn() -> T>,
}

impl<T: Payload> Receiver<T> {
    pub(crate) fn new(router: Arc<RouterInner>, respondent: Option<ContextId>) -> Receiver<T> {
        let presence = respondent.map(|id| router.presence(id));
        let latch = Arc::new(Latch::new());
        let key = router.token();
        let handle = router.add_handler(
            Sink::Latch(latch.clone()),
            respondent,
            false,
            Policy::Any,
            Some(key),
        );
        Receiver {
            router,
            handle,
            key,
            latch,
            _presence: presence,
            _t: PhantomData,
        }
    }

    /// A sender that delivers to this receiver, from whichever context it is
    /// handed to (it carries the channel's key; see the module docs).
    pub fn sender(&self) -> Sender<T> {
        Sender {
            context: self.router.id,
            handle: self.handle,
            key: self.key,
            router: Some(self.router.clone()),
            _t: PhantomData,
        }
    }

    /// The router handle this receiver listens on.
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// Waits for the next value, until the channel closes or its context
    /// disconnects.
    pub fn recv(&self) -> Result<T> {
        self.finish(self.latch.get(), None)
    }

    /// Waits at most `timeout` for the next value.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T> {
        self.finish(self.latch.get_timeout(timeout), Some(timeout))
    }

    /// Waits until `deadline` for the next value.
    pub fn recv_deadline(&self, deadline: Instant) -> Result<T> {
        let waited = deadline.saturating_duration_since(Instant::now());
        self.finish(self.latch.get_deadline(Some(deadline)), Some(waited))
    }

    /// The next value if one has arrived.
    pub fn try_recv(&self) -> Result<Option<T>> {
        match self.latch.try_get() {
            Err(LatchError::Empty) => Ok(None),
            r => self.finish(r, None).map(Some),
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

    fn finish(&self, r: Result<Message, LatchError>, waited: Option<Duration>) -> Result<T> {
        match r {
            Ok(msg) => {
                if msg.is_dead() && msg.is_disconnect() {
                    // The router has dropped the handle: nothing can arrive any
                    // more, so every later wait must end the same way at once
                    // instead of blocking forever.
                    self.latch.put(msg.clone());
                }
                message_to_value(&self.router, msg)
            }
            Err(e) => Err(e.into_error(waited)),
        }
    }
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

impl<T> Selectable for Receiver<T> {
    fn latch(&self) -> &Arc<Latch<Message>> {
        &self.latch
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.router.del_handler(self.handle);
    }
}

/// Future returned by [`Receiver::recv_async`].
pub struct Recv<'a, T> {
    receiver: &'a Receiver<T>,
}

impl<T: Payload> Future for Recv<'_, T> {
    type Output = Result<T>;
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<T>> {
        match self.receiver.latch.poll_get(cx) {
            Poll::Ready(r) => Poll::Ready(self.receiver.finish(r, None)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The sending end of a channel; cheap to clone, and serializable so it can be
/// passed to a remote function.
///
/// It carries the channel's key, drawn at random with the receiver: the
/// receiver takes values only from senders, so a context can send to a
/// channel only if a sender was handed to it (or passed through it on the way
/// to a context below it). Hand a sender only to contexts that may send.
pub struct Sender<T> {
    context: ContextId,
    handle: u32,
    key: u32,
    router: Option<Arc<RouterInner>>,
    _t: PhantomData<fn(T)>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            context: self.context,
            handle: self.handle,
            key: self.key,
            router: self.router.clone(),
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

    /// Sends a value. When the stream towards the receiver has a lot queued, this
    /// waits for it to drain (flow control), so a fast producer cannot exhaust
    /// memory; the wait ends early if the stream disconnects.
    pub fn send(&self, value: T) -> Result<()> {
        let router = self.router()?;
        let body = value.encode()?;
        if body.len() > router.max_message_size {
            return Err(Error::TooLarge {
                len: body.len(),
                max: router.max_message_size,
            });
        }
        if let Some(stream) = router.stream_towards(self.context) {
            if stream.is_dead() || !stream.wait_for_room(None) {
                return Err(Error::Disconnected {
                    context: router.name_of(self.context),
                    reason: "stream closed".into(),
                });
            }
        }
        router.send(Message {
            dst: self.context,
            handle: self.handle,
            reply_to: self.key,
            flags: FLAG_KEYED,
            body,
            ..Default::default()
        });
        Ok(())
    }

    /// Tells the receiver that nothing more will come: its `recv` returns
    /// [`Error::ChannelClosed`] after the values already sent.
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
        (self.context, self.handle, self.key).serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Sender<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (context, handle, key) = <(ContextId, u32, u32)>::deserialize(d)?;
        Ok(Sender {
            context,
            handle,
            key,
            router: None,
            _t: PhantomData,
        })
    }
}
