//! Cancellation of calls: what a remote function sees when its caller gave up.
//!
//! A caller that drops a [`PendingCall`](super::call::PendingCall) before its
//! reply came (or whose wait timed out) sends a `CANCEL_CALL` message naming
//! the call's reply handle. The callee marks the call's [`CancelToken`]: a
//! call still queued is skipped, and a running one can see the mark through
//! [`cancelled`] and stop early. Either way no reply is sent: nobody waits
//! for it.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Whether a call's caller has given up on it. Clones share the mark.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token not cancelled yet.
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// The token of the call running on this thread; a fresh one (never
    /// cancelled) outside a call, as in the master.
    pub fn current() -> CancelToken {
        CURRENT.with(|c| c.borrow().clone()).unwrap_or_default()
    }

    /// True once the caller no longer wants the result.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Marks the call cancelled.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }
}

thread_local! {
    /// The token of the call this thread runs, while it runs it.
    static CURRENT: RefCell<Option<CancelToken>> = const { RefCell::new(None) };
}

/// True when the call running on this thread was cancelled by its caller (it
/// dropped the call, or its wait timed out). A long remote function checks it
/// between steps and returns early; what it returns is not sent. Always false
/// outside a remote call.
pub fn cancelled() -> bool {
    CURRENT.with(|c| c.borrow().as_ref().is_some_and(CancelToken::is_cancelled))
}

/// The body of a `CANCEL_CALL` message: the call's reply handle.
pub(crate) fn encode_cancel(reply_to: u32) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(&reply_to.to_le_bytes())
}

/// The reply handle a `CANCEL_CALL` body names; `None` for a body of any
/// other length.
pub(crate) fn decode_cancel(body: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(body).ok().map(u32::from_le_bytes)
}

/// Makes `token` this thread's current one until the guard is dropped.
pub(crate) fn enter(token: CancelToken) -> CurrentGuard {
    CURRENT.with(|c| *c.borrow_mut() = Some(token));
    CurrentGuard(())
}

/// Clears the thread's current token when dropped (also on a panic).
pub(crate) struct CurrentGuard(());

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| *c.borrow_mut() = None);
    }
}
