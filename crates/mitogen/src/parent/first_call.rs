//! A call that rides with a new context's configuration.
//!
//! [`Router::connect_call`](crate::Router::connect_call) offers its call here
//! before it starts the target's last hop; [`super::connect`] takes it and
//! sends it in the same write as the configuration: behind the first stage,
//! before anything has come back (see `first_stage`). So over a slow link the
//! call costs no round trip of its own: the child finds it on its stdin as it
//! starts, and its reply is the first thing the master waits for.
//!
//! The offer is per thread and taken at most once: the hops before the last
//! are started before it is made, and one left untaken (a hop started through
//! another context, which runs the bootstrap there) is withdrawn by the
//! caller, which then makes the call the ordinary way.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::core::error::Result;
use crate::core::latch::Latch;
use crate::core::message::{ContextId, Message};

/// Encodes the call's body for a context id (a retried connection gets a
/// new id, and channel ends in the arguments are encoded for their
/// destination).
pub(crate) type Encode = Box<dyn Fn(ContextId) -> Result<Bytes> + Send>;

/// The call offered, and where its reply goes.
pub(crate) struct FirstCall {
    /// The call's body for a given destination.
    pub encode: Encode,
    /// Where the reply is delivered.
    pub latch: Arc<Latch<Message>>,
    /// The reply handle registered for the connection that succeeded (0
    /// until then).
    pub handle: AtomicU32,
}

impl FirstCall {
    /// The reply handle, once the call has gone out.
    pub(crate) fn handle(&self) -> u32 {
        self.handle.load(Ordering::Acquire)
    }
}

thread_local! {
    static OFFERED: RefCell<Option<Rc<FirstCall>>> = const { RefCell::new(None) };
}

/// Offers `call` to the next connection this thread makes.
pub(crate) fn offer(call: Rc<FirstCall>) {
    OFFERED.with(|o| *o.borrow_mut() = Some(call));
}

/// Takes the offered call, if any (also how an untaken offer is withdrawn).
pub(crate) fn take() -> Option<Rc<FirstCall>> {
    OFFERED.with(|o| o.borrow_mut().take())
}
