//! Where a message goes: the checks every message passes (source behind the
//! stream it came on, authority assigned here, no crossing between subtrees
//! unless allowed), the choice of stream, and answering the sender of what
//! cannot be delivered.

use std::sync::Arc;

use bytes::Bytes;

use super::{Policy, RouterInner, Sink};
use crate::core::message::{ContextId, Header, Message, FLAG_DEAD, FLAG_SECRET, FLAG_TRAILER};
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
                if let Some(suppressed) = self.log_budget.take(msg.src) {
                    tracing::warn!(
                        suppressed,
                        src = msg.src,
                        dst = msg.dst,
                        handle = msg.handle,
                        "refused: message from one child's subtree to another's"
                    );
                }
                self.bounce(&msg, "refused: contexts may not message other subtrees");
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
        }
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
                    if !f.is_parent
                        && !Arc::ptr_eq(f, &s)
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

    /// Tells the sender of an undeliverable message that its reply will never come.
    pub(super) fn bounce(&self, msg: &Message, reason: &str) {
        if msg.reply_to != 0 && !msg.is_dead() {
            let dead = Message::disconnected(msg.src, msg.dst, msg.reply_to, reason);
            if msg.src == self.id {
                self.deliver_local(dead);
            } else {
                self.route(dead, None);
            }
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
                    // Reply and channel handles are numbered in order, so any
                    // context could guess one. A handle waiting on a context
                    // takes messages only from that context's subtree (a
                    // sender may be handed down), or from this process:
                    // otherwise a child could answer calls made to its sibling.
                    if let Some(r) = e.respondent {
                        if msg.src != self.id && !self.descends_from(msg.src, r) {
                            drop(handles);
                            if let Some(suppressed) = self.log_budget.take(msg.src) {
                                tracing::warn!(
                                    suppressed,
                                    src = msg.src,
                                    respondent = r,
                                    handle = msg.handle,
                                    "refused: reply or channel message not from the context it waits on"
                                );
                            }
                            self.bounce(&msg, "refused: not from the context this handle waits on");
                            return;
                        }
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
            Some(Sink::Latch(l)) => {
                l.put(msg);
            }
            Some(Sink::Func(f)) => f(msg),
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
                    self.bounce(
                        &msg,
                        &format!("no handle {} in {:?}", msg.handle, self.name),
                    );
                }
            }
        }
    }
}

/// Why a message has nowhere to go.
enum NoWay {
    /// It would cross from one child's subtree into another's.
    Lateral,
    /// No route to its destination.
    NoRoute,
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
