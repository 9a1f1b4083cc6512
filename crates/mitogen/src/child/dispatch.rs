//! Running calls on the child's main thread, in arrival order (the seed's
//! `ExternalContext._dispatch_calls`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use bytes::Bytes;

use crate::core::call::{CallHead, CallOp, ReplyHead};
use crate::core::error::{CallError, CallErrorKind};
use crate::core::latch::{Latch, LatchError};
use crate::core::message::{ContextId, Message};
use crate::core::remote::{lookup, Failure};
use crate::core::router::RouterInner;
use crate::core::stream::{Lead, Stream};

/// How long the idle main thread waits on the broker before it tries to read
/// the parent stream itself again.
const IDLE_RECHECK: std::time::Duration = std::time::Duration::from_millis(20);

thread_local! {
    /// The message and location of the last panic on this thread, recorded by
    /// the hook so the caller gets more than "Box<dyn Any>".
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Replaces the default panic hook (which would print to stderr) with one that
/// remembers the message for the call's error and logs it at debug level.
pub(crate) fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
            (*s).to_owned()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            "panic with a non-string payload".to_owned()
        };
        let full = match info.location() {
            Some(l) => format!("{msg} (at {}:{}:{})", l.file(), l.line(), l.column()),
            None => msg,
        };
        tracing::debug!("panic: {full}");
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(full));
    }));
}

/// The child's call loop.
pub(crate) struct Dispatcher {
    router: Arc<RouterInner>,
    failed_chains: HashMap<(ContextId, u64), CallError>,
    /// Calls run since free memory was last handed back to the system.
    since_trim: usize,
}

/// After this many calls, an idle context hands free memory back.
const TRIM_AFTER: usize = 256;

/// Returns the allocator's free memory to the system. A burst of pipelined
/// calls leaves the allocator holding memory that the context, idle between
/// calls most of its life, no longer needs; glibc keeps it otherwise. Cheap
/// (tens of microseconds), and done only when a burst has ended.
fn release_free_memory() {
    crate::sys::release_free_memory();
}

impl Dispatcher {
    pub(crate) fn new(router: Arc<RouterInner>) -> Dispatcher {
        Dispatcher {
            router,
            failed_chains: HashMap::new(),
            since_trim: 0,
        }
    }

    /// Runs calls until the latch closes (shutdown).
    pub(crate) fn run(&mut self, calls: &Latch<Message>, parent: &Arc<Stream>) {
        loop {
            match calls.try_get() {
                Ok(msg) => {
                    self.dispatch(msg);
                    continue;
                }
                Err(LatchError::Closed(_)) => return,
                Err(_) => {}
            }
            if self.since_trim >= TRIM_AFTER {
                self.since_trim = 0;
                release_free_memory();
            }
            // Idle: read the parent stream on this thread, so the next call
            // starts without a hand-off from the broker thread. Not while
            // this context relays for others: most of what comes from the
            // parent is then for them, and the broker, which carries the
            // replies back up, is the thread that should carry the requests
            // down too. It is still polling from the last reply when the
            // next request comes, where this thread would be asleep in
            // `poll` by then (it relays a request and then waits, for a call
            // of its own that rarely comes): two threads per hop on every
            // round trip instead of one, and a wake-up on each hop.
            let router = &self.router;
            if !router.has_routes()
                && parent.lead(router, &|| calls.is_ready() || router.has_routes(), None)
                    == Lead::Done
            {
                continue;
            }
            // The broker is reading (or the stream ended and it is tearing
            // down, or this context relays): wait for it to hand the call
            // over.
            match calls.get_timeout(IDLE_RECHECK) {
                Ok(msg) => self.dispatch(msg),
                Err(LatchError::Closed(_)) => return,
                Err(_) => {}
            }
        }
    }

    fn dispatch(&mut self, msg: Message) {
        self.since_trim += 1;
        let (head, args) = match postcard::take_from_bytes::<CallHead>(&msg.body) {
            Ok(x) => x,
            Err(e) => {
                let err = self.error(
                    "?",
                    CallErrorKind::BadArguments,
                    format!("undecodable call: {e}"),
                    vec![],
                );
                self.reply(&msg, "?", Err(err));
                return;
            }
        };
        let chain_key = head.chain.map(|c| (msg.src, c));
        if let CallOp::ForgetChain = head.op {
            if let Some(k) = chain_key {
                self.failed_chains.remove(&k);
            }
            return;
        }
        if let Some(failed) = chain_key.and_then(|k| self.failed_chains.get(&k)) {
            let mut e = failed.clone();
            e.message = format!("earlier call {} failed: {}", e.function, e.message);
            e.function = head.function.to_owned();
            e.kind = CallErrorKind::ChainFailed;
            self.reply(&msg, head.function, Err(e));
            return;
        }
        let result = match lookup(head.function) {
            None => Err(self.error(
                head.function,
                CallErrorKind::UnknownFunction,
                format!(
                    "no #[mitogen::remote] function named {:?} in this program",
                    head.function
                ),
                vec![],
            )),
            Some(entry) => {
                tracing::trace!(function = entry.name, "call");
                match catch_unwind(AssertUnwindSafe(|| (entry.invoke)(args))) {
                    Ok(Ok(out)) => Ok(out),
                    Ok(Err(Failure {
                        kind,
                        message,
                        chain,
                    })) => Err(self.error(head.function, kind, message, chain)),
                    Err(payload) => {
                        let message = LAST_PANIC
                            .with(|p| p.borrow_mut().take())
                            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                            .or_else(|| payload.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "panic".to_owned());
                        Err(self.error(head.function, CallErrorKind::Panicked, message, vec![]))
                    }
                }
            }
        };
        if let (Err(e), Some(k)) = (&result, chain_key) {
            self.failed_chains.insert(k, e.clone());
        }
        if msg.reply_to == 0 {
            if let Err(e) = &result {
                if chain_key.is_none() {
                    tracing::error!("call without reply failed: {e}");
                }
            }
            return;
        }
        self.reply(&msg, head.function, result);
    }

    fn error(
        &self,
        function: &str,
        kind: CallErrorKind,
        message: String,
        chain: Vec<String>,
    ) -> CallError {
        CallError {
            context: self.router.name.clone(),
            function: function.to_owned(),
            kind,
            message,
            chain,
        }
    }

    /// Sends the result of `function` back; a result too large to send is
    /// replaced by an error naming the function.
    fn reply(&self, msg: &Message, function: &str, result: Result<Vec<u8>, CallError>) {
        if msg.reply_to == 0 {
            return;
        }
        let body = match result {
            Ok(out) => {
                let mut body = match postcard::to_allocvec(&ReplyHead::Ok) {
                    Ok(b) => b,
                    Err(_) => return,
                };
                if out.len() + body.len() > self.router.max_message_size {
                    let e = self.error(
                        function,
                        CallErrorKind::Returned,
                        format!(
                            "result of {} bytes exceeds the message limit of {} bytes",
                            out.len(),
                            self.router.max_message_size
                        ),
                        vec![],
                    );
                    postcard::to_allocvec(&ReplyHead::Err(e)).unwrap_or_default()
                } else {
                    body.extend_from_slice(&out);
                    body
                }
            }
            Err(e) => postcard::to_allocvec(&ReplyHead::Err(e)).unwrap_or_default(),
        };
        self.router.send(Message {
            dst: msg.src,
            handle: msg.reply_to,
            body: Bytes::from(body),
            ..Default::default()
        });
    }
}
