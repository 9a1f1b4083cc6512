//! The receiver's side of channel windows: what each sending process has
//! sent and not yet been given back, and the credit messages.
//!
//! Per sending context the receiver keeps an [`Account`]: `outstanding`,
//! the bytes (by [`weight`](super::window::weight)) it received and has not
//! given back, and `pending`, the part of those its reader has taken. Once
//! `pending` reaches an eighth of the window it goes back to the sender in
//! one [`Credit::Grant`] (to the well-known handle
//! [`CHANNEL_CREDIT`](crate::core::message::handles::CHANNEL_CREDIT) of the
//! sending context; within the receiver's own process, directly), so a grant
//! costs one small message per eighth of a window. A sender that waits asks for
//! what was taken so far (`Control::Want`), which comes in order after its
//! values, so it is answered once the reader has taken them all.
//!
//! A sender that keeps to its window never makes `outstanding` exceed the
//! window when a value arrives unless nothing was outstanding before it
//! (the receiver's `outstanding` is never more than what the sender counts
//! in flight: grants leave the receiver before the sender learns of them).
//! A value that breaks this rule is refused and the channel closed, naming
//! the context ([`Arrival::Over`]).
//!
//! When the channel can take no more (receiver dropped, channel ended or
//! cut off), every context that sent is told ([`Credit::Closed`]), so that
//! none of its senders waits for credit that cannot come.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::core::message::{handles, ContextId, Message};
use crate::core::router::{Policy, RouterInner, Sink};

use super::senders::{end_windows, lookup_window, settle};
use super::window::Ended;

/// Longest close reason passed on from a credit message (the receiver's
/// context may be hostile; its words end up in an error).
const MAX_REASON: usize = 512;

/// A credit message, body of a message to
/// [`CHANNEL_CREDIT`](crate::core::message::handles::CHANNEL_CREDIT). The
/// channel is the sending context's `(src, handle, key)`: only the
/// receiver's context can speak for its channels.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum Credit {
    /// The reader took `bytes` of what this context sent.
    Grant { handle: u32, key: u32, bytes: u64 },
    /// The channel takes nothing more; sends fail with the reason.
    Closed {
        handle: u32,
        key: u32,
        reason: String,
    },
}

/// A credit message for context `to`.
pub(crate) fn credit_message(to: ContextId, credit: &Credit) -> Message {
    Message {
        dst: to,
        handle: handles::CHANNEL_CREDIT,
        body: Bytes::from(postcard::to_allocvec(credit).unwrap_or_default()),
        ..Default::default()
    }
}

/// Installs the handler of credit messages in `router`: grants and closes
/// reach the sending process's window of that channel, if it still has one.
pub(crate) fn install(router: &Arc<RouterInner>) {
    router.add_handler_at(
        handles::CHANNEL_CREDIT,
        Sink::Func(Arc::new(move |msg: Message| {
            if msg.is_dead() {
                return;
            }
            let credit = match postcard::from_bytes::<Credit>(&msg.body) {
                Ok(c) => c,
                Err(_) => {
                    tracing::debug!(src = msg.src, "undecodable channel credit message");
                    return;
                }
            };
            match credit {
                Credit::Grant { handle, key, bytes } => {
                    let id = (msg.src, handle, key);
                    if let Some(w) = lookup_window(id) {
                        w.grant(bytes);
                        settle(id);
                    }
                }
                Credit::Closed {
                    handle,
                    key,
                    mut reason,
                } => {
                    let id = (msg.src, handle, key);
                    if let Some(w) = lookup_window(id) {
                        if reason.len() > MAX_REASON {
                            let mut cut = MAX_REASON;
                            while !reason.is_char_boundary(cut) {
                                cut -= 1;
                            }
                            reason.truncate(cut);
                        }
                        w.end(Ended::Closed(reason));
                        settle(id);
                    }
                }
            }
        })),
        None,
        false,
        Policy::Any,
    );
    // A sender waiting for credit from a context that goes, or in a router
    // that shuts down, must not wait for ever.
    let weak = Arc::downgrade(router);
    router
        .signals
        .disconnect
        .connect(move |(id, name): &(ContextId, String)| {
            if let Some(router) = weak.upgrade() {
                end_windows(&router, Some((*id, name)));
            }
        })
        .forever();
    let weak = Arc::downgrade(router);
    router
        .signals
        .shutdown
        .connect(move |_: &()| {
            if let Some(router) = weak.upgrade() {
                end_windows(&router, None);
            }
        })
        .forever();
}

/// What the receiver knows of one sending context (see the module docs).
#[derive(Default)]
struct Account {
    outstanding: u64,
    pending: u64,
    /// Told that the channel is closed.
    told: bool,
}

/// What to do with a value that arrived.
pub(crate) enum Arrival {
    /// Queue it for the reader.
    Take,
    /// It overruns the sender's window: `outstanding` bytes would be held.
    Over { outstanding: u64 },
    /// The channel takes nothing more; tell the sender (once).
    Closed { tell: bool },
}

#[derive(Default)]
struct State {
    accounts: HashMap<ContextId, Account>,
    /// Why the channel takes nothing more.
    ended: Option<String>,
}

/// The receiver's windows of one channel (see the module docs).
pub(crate) struct Flow {
    size: u64,
    state: Mutex<State>,
}

impl Flow {
    pub(crate) fn new(size: u64) -> Flow {
        Flow {
            size: size.max(1),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The window each sending process gets.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Grants are sent once this much was taken.
    fn batch(&self) -> u64 {
        (self.size / 8).max(1)
    }

    /// A value of `weight` from `src` arrived.
    pub(crate) fn arrive(&self, src: ContextId, weight: u64) -> Arrival {
        let mut st = self.lock();
        let closed = st.ended.is_some();
        let a = st.accounts.entry(src).or_default();
        if closed {
            let tell = !a.told;
            a.told = true;
            return Arrival::Closed { tell };
        }
        let after = a.outstanding.saturating_add(weight);
        if a.outstanding > 0 && after > self.size {
            return Arrival::Over { outstanding: after };
        }
        a.outstanding = after;
        Arrival::Take
    }

    /// The reader took a value of `weight` from `src`: the credit to give
    /// back now, if a batch is complete.
    pub(crate) fn taken(&self, src: ContextId, weight: u64) -> Option<u64> {
        let batch = self.batch();
        let mut st = self.lock();
        let a = st.accounts.entry(src).or_default();
        a.pending = a.pending.saturating_add(weight);
        if a.pending < batch {
            return None;
        }
        Some(Self::give(a))
    }

    /// `src` waits for credit: everything taken so far goes back.
    pub(crate) fn wanted(&self, src: ContextId) -> Option<u64> {
        let mut st = self.lock();
        let a = st.accounts.get_mut(&src)?;
        (a.pending > 0).then(|| Self::give(a))
    }

    fn give(a: &mut Account) -> u64 {
        let n = std::mem::take(&mut a.pending);
        a.outstanding = a.outstanding.saturating_sub(n);
        n
    }

    /// The channel takes nothing more: the first time, the contexts to tell.
    pub(crate) fn end(&self, reason: &str) -> Option<(String, Vec<ContextId>)> {
        let mut st = self.lock();
        if st.ended.is_some() {
            return None;
        }
        st.ended = Some(reason.to_owned());
        let mut tell = Vec::new();
        for (c, a) in st.accounts.iter_mut() {
            // Nothing outstanding: its holder was told by taking its `Gone`,
            // or its grants are on their way and its next value will be
            // answered as one for a channel that is gone.
            if !a.told && a.outstanding > 0 {
                a.told = true;
                tell.push(*c);
            }
        }
        Some((reason.to_owned(), tell))
    }

    /// Why the channel takes nothing more, if it does not.
    pub(crate) fn ended(&self) -> Option<String> {
        self.lock().ended.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_go_back_in_eighth_windows_and_on_request() {
        let f = Flow::new(2000);
        for _ in 0..4 {
            assert!(matches!(f.arrive(7, 100), Arrival::Take));
        }
        assert_eq!(f.taken(7, 100), None);
        assert_eq!(f.taken(7, 100), None);
        assert_eq!(f.taken(7, 100), Some(300));
        assert_eq!(f.taken(7, 100), None);
        assert_eq!(f.wanted(7), Some(100));
        assert_eq!(f.wanted(7), None);
    }

    #[test]
    fn a_value_past_the_window_is_refused_but_a_lone_large_one_is_not() {
        let f = Flow::new(1000);
        assert!(matches!(f.arrive(7, 5000), Arrival::Take));
        assert!(matches!(
            f.arrive(7, 1),
            Arrival::Over { outstanding: 5001 }
        ));
        assert_eq!(f.taken(7, 5000), Some(5000));
        assert!(matches!(f.arrive(7, 1000), Arrival::Take));
        assert!(matches!(f.arrive(8, 1000), Arrival::Take));
    }

    #[test]
    fn an_ended_flow_tells_each_sender_once() {
        let f = Flow::new(1000);
        f.arrive(7, 10);
        f.arrive(8, 10);
        f.taken(8, 10);
        f.wanted(8);
        let (_, tell) = f.end("receiver dropped").unwrap();
        assert_eq!(tell, vec![7]);
        assert!(f.end("again").is_none());
        assert!(matches!(f.arrive(7, 10), Arrival::Closed { tell: false }));
        assert!(matches!(f.arrive(9, 10), Arrival::Closed { tell: true }));
        assert!(matches!(f.arrive(9, 10), Arrival::Closed { tell: false }));
    }
}
