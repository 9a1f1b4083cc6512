//! Where a message goes: the checks every message passes (source behind the
//! stream it came on, authority assigned here, no crossing between subtrees
//! unless allowed), the choice of stream, and answering the sender of what
//! cannot be delivered.

use std::sync::Arc;

use bytes::Bytes;

use super::{HandleEntry, Policy, RouterInner, Sink};
use crate::core::latch::{Latch, Put};
use crate::core::message::{
    ContextId, Header, Message, FLAG_CONTROL, FLAG_DEAD, FLAG_KEYED, FLAG_SECRET, FLAG_TRAILER,
};
use crate::core::stream::{SendStatus, Stream};

impl RouterInner {
    /// Delivers `msg`, which arrived on `from` (None: sent by this process).
    pub(crate) fn route(&self, mut msg: Message, from: Option<&Arc<Stream>>) {
        if let Some(stream) = from {
            if stream.is_parent {
                // Our parent vouches for what it forwards.
            } else {
                // From below: the source must live behind this very stream, and
                // the authority is the source, whatever the frame claimed.
                if !self.is_behind(msg.src, stream) {
                    if let Some(suppressed) = self.log_budget.take(stream.remote_id()) {
                        tracing::warn!(
                            suppressed,
                            stream = %stream.name(),
                            src = msg.src,
                            handle = msg.handle,
                            "dropping message whose source is not behind the stream it came from"
                        );
                    }
                    return;
                }
                msg.auth_id = self.authority_of(msg.src);
            }
        } else {
            msg.auth_id = self.id;
        }

        if msg.dst == self.id {
            if msg.flags & FLAG_TRAILER != 0 && !strip_trailer(&mut msg) {
                tracing::warn!(
                    src = msg.src,
                    handle = msg.handle,
                    "dropping a message that a relay lost half-way"
                );
                self.bounce(
                    &msg,
                    "a relay on its way lost it half-way (its source died or stopped)",
                );
                return;
            }
            self.deliver_local(msg);
            return;
        }
        let stream = match self.next_stream(msg.src, msg.dst, from) {
            Ok(s) => s,
            Err(NoWay::Lateral) => {
                // From one subtree into another: a child may talk to its
                // ancestors and its own descendants, not its siblings.
                self.refuse(
                    &msg,
                    "refused: message from one child's subtree to another's",
                    "refused: contexts may not message other subtrees",
                );
                return;
            }
            Err(NoWay::BackDown) => {
                // From below, for a context behind the very stream it came
                // on: the sender's own routers would have delivered it, so it
                // is a forgery, and echoing it back would let a context that
                // never reads its stream grow our queue towards it without
                // end.
                self.refuse(
                    &msg,
                    "refused: message from below for a context behind the stream it came on",
                    "refused: a message may not come back down its own stream",
                );
                return;
            }
            Err(NoWay::NoRoute) => {
                let reason = format!("no route to context {}", msg.dst);
                tracing::debug!(handle = msg.handle, "{reason}");
                self.bounce(&msg, &reason);
                return;
            }
        };
        if stream.send(&msg) == SendStatus::Disconnected {
            let reason = self.disconnect_reason(msg.dst);
            self.bounce(&msg, &reason);
        } else if let Some(from) = from {
            if !from.is_parent && stream.is_parent && stream.pending_bytes() > RELAY_HOLD {
                self.hold(from, &stream);
            }
        }
    }

    /// Stops reading `from`, a child's stream, until `up`, our parent stream,
    /// has drained to half of [`RELAY_HOLD`]: what a subtree sends up must not
    /// pile up here faster than our parent takes it (a flood, or a fast
    /// local child behind a slow ssh hop). The child's own stream then fills,
    /// and its senders wait (flow control) or its writes block. Only the
    /// parent stream holds a child's back: it drains as the parent reads,
    /// and no parent waits for its child's stream to drain before it reads,
    /// so holds cannot wait on each other in a circle.
    fn hold(&self, from: &Arc<Stream>, up: &Arc<Stream>) {
        if !from.hold() {
            return;
        }
        tracing::debug!(
            stream = %from.name(),
            queued = up.pending_bytes(),
            "pausing reading: the parent stream is not draining as fast"
        );
        watch_hold(self, from.clone(), up.clone());
    }

    /// True when context `src` is reached through `stream`.
    fn is_behind(&self, src: ContextId, stream: &Arc<Stream>) -> bool {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&src)
            .is_some_and(|s| Arc::ptr_eq(s, stream))
    }

    /// The authority a message from `src` (below us) carries: its own, or ours
    /// for a unix client, which acts for the master that admitted it.
    fn authority_of(&self, src: ContextId) -> ContextId {
        if self.is_unix_client(src) {
            self.id
        } else {
            src
        }
    }

    /// The stream a message from `src` to `dst` (not us), which arrived on
    /// `from`, leaves on.
    fn next_stream(
        &self,
        src: ContextId,
        dst: ContextId,
        from: Option<&Arc<Stream>>,
    ) -> Result<Arc<Stream>, NoWay> {
        let stream = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&dst)
            .cloned();
        match stream {
            Some(s) => {
                if let Some(f) = from {
                    if !f.is_parent && Arc::ptr_eq(f, &s) {
                        return Err(NoWay::BackDown);
                    }
                    if !f.is_parent
                        && !self.allow_lateral()
                        && !self.is_unix_client(src)
                        && !self.is_unix_client(dst)
                    {
                        return Err(NoWay::Lateral);
                    }
                }
                Ok(s)
            }
            None => match &self.parent {
                Some(p) if from.is_none_or(|f| !Arc::ptr_eq(f, p)) => Ok(p.clone()),
                _ => Err(NoWay::NoRoute),
            },
        }
    }

    /// Where a frame with header `h` arriving on `from` is relayed, if
    /// [`route`](Self::route) would send it out on another stream: that stream,
    /// and the header as it leaves (authority set). Checks as `route` does,
    /// without logging: anything refused is refused again, and logged, when
    /// the whole frame has arrived.
    pub(crate) fn cut_through_target(
        &self,
        h: &Header,
        from: &Arc<Stream>,
    ) -> Option<(Arc<Stream>, Message)> {
        if h.flags & (FLAG_SECRET | FLAG_DEAD) != 0 || h.dst == self.id {
            return None;
        }
        let mut head = h.into_message(Bytes::new());
        if !from.is_parent {
            if !self.is_behind(h.src, from) {
                return None;
            }
            head.auth_id = self.authority_of(h.src);
        }
        let out = self.next_stream(h.src, h.dst, Some(from)).ok()?;
        (!Arc::ptr_eq(&out, from) && !out.is_dead()).then_some((out, head))
    }

    /// [`bounce`](Self::bounce) for a frame of which only the header is at hand.
    pub(crate) fn bounce_header(&self, h: &Header, reason: &str) {
        let msg = h.into_message(Bytes::new());
        self.bounce(&msg, reason);
    }

    /// Refuses `msg`: logs `why` (within the sender's log budget) and tells
    /// the sender `answer` if it waits for a reply.
    fn refuse(&self, msg: &Message, why: &str, answer: &str) {
        if let Some(suppressed) = self.log_budget.take(msg.src) {
            tracing::warn!(
                suppressed,
                src = msg.src,
                dst = msg.dst,
                handle = msg.handle,
                "{why}"
            );
        }
        self.bounce(msg, answer);
    }

    /// Tells the sender of an undeliverable message that its reply will never come.
    ///
    /// Not when the stream back to the sender already holds more than
    /// [`BOUNCE_LIMIT`]: a context that sends refused messages and never reads
    /// its stream would otherwise make us queue an answer to each, without
    /// end. An honest sender reads its stream, so its queue is far below that.
    pub(super) fn bounce(&self, msg: &Message, reason: &str) {
        if msg.wants_reply() {
            let dead = Message::disconnected(msg.src, msg.dst, msg.reply_to, reason);
            if msg.src == self.id {
                self.deliver_local(dead);
                return;
            }
            if self
                .stream_towards(msg.src)
                .is_some_and(|s| s.pending_bytes() > BOUNCE_LIMIT)
            {
                if let Some(suppressed) = self.log_budget.take(msg.src) {
                    tracing::warn!(
                        suppressed,
                        src = msg.src,
                        handle = msg.handle,
                        "not answering a refused message: the stream towards its sender \
                         does not drain"
                    );
                }
                return;
            }
            self.route(dead, None);
        }
    }

    fn deliver_local(&self, msg: Message) {
        let sink = {
            let mut handles = self.lock_handles();
            match handles.get(&msg.handle) {
                None => None,
                Some(e) => {
                    if e.policy == Policy::ParentsOnly && !self.has_parent_authority(&msg) {
                        drop(handles);
                        if let Some(suppressed) = self.log_budget.take(msg.src) {
                            tracing::warn!(
                                suppressed,
                                src = msg.src,
                                auth_id = msg.auth_id,
                                handle = msg.handle,
                                "refused: message lacks parent authority"
                            );
                        }
                        self.bounce(&msg, "refused: sender lacks parent authority");
                        return;
                    }
                    if let Some(refusal) = self.check_sender(e, &msg) {
                        drop(handles);
                        if let Some(suppressed) = self.log_budget.take(msg.src) {
                            tracing::warn!(
                                suppressed,
                                src = msg.src,
                                respondent = e_respondent(&refusal),
                                handle = msg.handle,
                                "refused: {}",
                                refusal.what()
                            );
                        }
                        // Answered as if the handle did not exist, so that a
                        // refusal does not tell a guesser it found one.
                        self.bounce(&msg, &self.no_handle(msg.handle));
                        self.tell_channel_gone(&msg);
                        return;
                    }
                    let sink = e.sink.clone();
                    if e.once {
                        handles.remove(&msg.handle);
                    }
                    Some(sink)
                }
            }
        };
        match sink {
            Some(Sink::Latch(l)) => self.queue(&l, msg),
            Some(Sink::Func(f)) => f(msg),
            Some(Sink::Channel(home)) => home.arrive(self, msg),
            None => {
                if !msg.is_dead() {
                    if let Some(suppressed) = self.log_budget.take(msg.src) {
                        tracing::debug!(
                            suppressed,
                            handle = msg.handle,
                            src = msg.src,
                            "message for unknown handle"
                        );
                    }
                    self.bounce(&msg, &self.no_handle(msg.handle));
                    self.tell_channel_gone(&msg);
                }
            }
        }
    }

    /// A channel value for a handle that is gone (its receiver dropped, or
    /// the channel cut off): tells the sending context, so that its senders
    /// fail at once instead of waiting for credit that cannot come. Like a
    /// bounce, not when the stream back does not drain.
    fn tell_channel_gone(&self, msg: &Message) {
        if msg.flags & (FLAG_KEYED | FLAG_DEAD | FLAG_CONTROL) != FLAG_KEYED {
            return;
        }
        if msg.src != self.id
            && self
                .stream_towards(msg.src)
                .is_some_and(|s| s.pending_bytes() > BOUNCE_LIMIT)
        {
            return;
        }
        crate::core::channel::tell_gone(self, msg);
    }
}

impl RouterInner {
    /// Why `msg` may not reach the handle `e`, if it may not.
    ///
    /// A reply handle takes its answer from the context called and nobody
    /// else: not from a context below it (a less trusted grandchild, say
    /// `host/sudo:www-data` answering a call made to `host`), which could
    /// otherwise answer, or kill with DEAD, the calls made to its parent.
    /// Source checks already ensure that a message claiming to come from the
    /// context called really came from behind the stream towards it. A
    /// channel tied to a context takes values from that context's subtree
    /// (its sender may be handed down). A channel's key must match in every
    /// case. Messages from this process pass the respondent checks (it is
    /// the one that made the handle), not the key's.
    fn check_sender(&self, e: &HandleEntry, msg: &Message) -> Option<Refusal> {
        if let Some(key) = e.key {
            if msg.flags & FLAG_KEYED == 0 || msg.reply_to != key {
                return Some(Refusal::Key(e.respondent));
            }
        }
        let r = e.respondent?;
        if msg.src == self.id {
            return None;
        }
        if e.once {
            (msg.src != r).then_some(Refusal::NotCalled(r))
        } else {
            (!self.descends_from(msg.src, r)).then_some(Refusal::NotBelow(r))
        }
    }

    /// Queues `msg` for the thread that waits on its handle. What other
    /// contexts send is bounded: a receiver that falls too far behind (a
    /// flood, or a consumer slower than its producers) is closed with the
    /// reason, after the values already queued, and its handle removed; its
    /// values are never silently thinned out.
    pub(crate) fn queue(&self, latch: &Latch<Message>, msg: Message) {
        if msg.src == self.id {
            latch.put(msg);
            return;
        }
        let (src, handle) = (msg.src, msg.handle);
        // The bookkeeping of a queued message costs about this much besides
        // its body, so a flood of empty ones is bounded too.
        let weight = msg.body.len() + 64;
        let limit = self.receiver_limit();
        if latch.put_within(msg, weight, limit) != Put::Full {
            return;
        }
        let reason = format!(
            "the receiver fell behind: more than {} MiB from other contexts waiting to be \
             received (the last from {:?}); channel closed",
            limit >> 20,
            self.name_of(src)
        );
        tracing::warn!(src, handle, "{reason}");
        latch.close(&reason);
        self.del_handler(handle);
    }

    /// Most bytes a receiver holds for its reader from other contexts: twice
    /// the largest message, and at least [`RECEIVER_LIMIT`].
    pub(crate) fn receiver_limit(&self) -> usize {
        self.max_message_size.saturating_mul(2).max(RECEIVER_LIMIT)
    }

    /// The reason given for a message to a handle that does not exist.
    fn no_handle(&self, handle: u32) -> String {
        format!("no handle {handle} in {:?}", self.name)
    }
}

/// Least number of bytes a receiver may hold for its reader (see
/// [`RouterInner::receiver_limit`]).
pub(crate) const RECEIVER_LIMIT: usize = 64 * 1024 * 1024;

/// Bytes queued on our parent stream beyond which we stop reading the child
/// stream that sent more (see `RouterInner::hold`).
pub(crate) const RELAY_HOLD: usize = crate::core::stream::HIGH_WATER;

/// How often a paused stream looks whether it may read again.
const HOLD_CHECK: std::time::Duration = std::time::Duration::from_millis(1);

/// Resumes reading `from` once `up` has drained (or either is gone).
fn watch_hold(router: &RouterInner, from: Arc<Stream>, up: Arc<Stream>) {
    router.broker.call_later(HOLD_CHECK, move |core| {
        if up.pending_bytes() <= RELAY_HOLD / 2 || up.is_dead() || from.is_dead() {
            from.release();
            core.resume_reading(&from);
        } else {
            watch_hold(core.router(), from, up);
        }
    });
}

/// Bytes queued towards a sender beyond which its refused messages are not
/// answered (see [`RouterInner::bounce`]).
pub(crate) const BOUNCE_LIMIT: usize = 64 * 1024 * 1024;

/// Why a message was refused by the handle it names.
enum Refusal {
    /// A reply not from the context called.
    NotCalled(ContextId),
    /// A channel value not from the subtree of the context it is tied to.
    NotBelow(ContextId),
    /// A channel value without the channel's key.
    Key(Option<ContextId>),
}

impl Refusal {
    fn what(&self) -> &'static str {
        match self {
            Refusal::NotCalled(_) => "reply not from the context called",
            Refusal::NotBelow(_) => "channel message not from the context it waits on",
            Refusal::Key(_) => "channel message without the channel's key",
        }
    }
}

/// The respondent named in a refusal's log record.
fn e_respondent(r: &Refusal) -> Option<ContextId> {
    match r {
        Refusal::NotCalled(c) | Refusal::NotBelow(c) => Some(*c),
        Refusal::Key(c) => *c,
    }
}

/// Why a message has nowhere to go.
enum NoWay {
    /// It would cross from one child's subtree into another's.
    Lateral,
    /// No route to its destination.
    NoRoute,
    /// It came from below for a context behind the same stream.
    BackDown,
}

/// Checks and removes the trailer byte of a frame relayed cut-through (see
/// `cut_through`): false when a relay lost the frame half-way.
fn strip_trailer(msg: &mut Message) -> bool {
    let Some((&last, _)) = msg.body.split_last() else {
        return false;
    };
    msg.body.truncate(msg.body.len() - 1);
    msg.flags &= !FLAG_TRAILER;
    last == 1
}
