//! Answers to service calls: the errors a service's context sends, and
//! sending a result to one asker within what the stream towards it may
//! hold.

use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::Bytes;

use crate::core::call::ReplyHead;
use crate::core::error::{CallError, CallErrorKind};
use crate::core::message::Message;
use crate::core::remote::Failure;
use crate::core::router::RouterInner;

use super::host::Asker;
use super::registry::ServiceEntry;
use super::rule::Caller;

/// Bytes queued towards an asker beyond which a large answer is replaced by
/// a short error saying so, and beyond twice which nothing more is sent: a
/// context that sends calls and never reads its stream must not make this
/// one queue answers without end (as the router does for refusals), and an
/// honest caller that fell that far behind gets an error, not a hang.
const REPLY_HOLD: usize = 64 * 1024 * 1024;

/// Answers up to this size pass while the queue towards their asker is
/// below twice [`REPLY_HOLD`].
const SMALL_ANSWER: usize = 4096;

/// Runs `f`, turning a panic into a failure.
pub(super) fn catch<T>(f: impl FnOnce() -> Result<T, Failure>) -> Result<T, Failure> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(Failure {
            kind: CallErrorKind::Panicked,
            message: payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_owned()),
            chain: Vec::new(),
        }),
    }
}

pub(super) fn failure(router: &RouterInner, function: &str, f: Failure) -> CallError {
    CallError {
        context: router.name.clone(),
        function: function.to_owned(),
        kind: f.kind,
        message: f.message,
        chain: f.chain,
    }
}

pub(super) fn failed(
    router: &RouterInner,
    function: &str,
    kind: CallErrorKind,
    message: String,
) -> CallError {
    CallError {
        context: router.name.clone(),
        function: function.to_owned(),
        kind,
        message,
        chain: Vec::new(),
    }
}

pub(super) fn start_refusal(
    router: &RouterInner,
    function: &str,
    entry: &ServiceEntry,
    caller: &Caller,
) -> CallError {
    log_refusal(caller, function);
    failed(
        router,
        function,
        CallErrorKind::Refused,
        format!(
            "{} is not running, and context {:?} (id {}) may not start it: its start rule is {}",
            entry.name,
            caller.name(),
            caller.id(),
            entry.start
        ),
    )
}

pub(super) fn refuse_start(
    router: &RouterInner,
    asker: Asker,
    function: &str,
    entry: &ServiceEntry,
    caller: &Caller,
) {
    let e = start_refusal(router, function, entry, caller);
    reply(router, asker, function, Err(e));
}

pub(super) fn log_refusal(caller: &Caller, function: &str) {
    tracing::debug!(caller = caller.id(), function, "service call refused");
}

/// Sends a call's result to one asker; a result too large to send is
/// replaced by an error naming the method.
pub(super) fn reply(
    router: &RouterInner,
    to: Asker,
    function: &str,
    result: Result<Vec<u8>, CallError>,
) {
    if to.reply_to == 0 {
        if let Err(e) = &result {
            tracing::debug!("service call without reply failed: {e}");
        }
        return;
    }
    let queued = router
        .stream_towards(to.src)
        .map_or(0, |s| s.pending_bytes());
    if queued > 2 * REPLY_HOLD {
        tracing::debug!(
            src = to.src,
            function,
            "not answering a service call: the stream towards its caller does not drain"
        );
        return;
    }
    let body = match result {
        Ok(out) if queued > REPLY_HOLD && out.len() > SMALL_ANSWER => {
            let e = failed(
                router,
                function,
                CallErrorKind::Returned,
                format!(
                    "its answer of {} bytes was dropped: {} MiB of answers to this caller \
                     are queued unread",
                    out.len(),
                    queued >> 20
                ),
            );
            postcard::to_allocvec(&ReplyHead::Err(e)).unwrap_or_default()
        }
        Ok(out) if out.len() + 1 > router.max_message_size => {
            let e = failed(
                router,
                function,
                CallErrorKind::Returned,
                format!(
                    "result of {} bytes exceeds the message limit of {} bytes",
                    out.len(),
                    router.max_message_size
                ),
            );
            postcard::to_allocvec(&ReplyHead::Err(e)).unwrap_or_default()
        }
        Ok(out) => {
            let mut body = postcard::to_allocvec(&ReplyHead::Ok).unwrap_or_default();
            body.extend_from_slice(&out);
            body
        }
        Err(e) => postcard::to_allocvec(&ReplyHead::Err(e)).unwrap_or_default(),
    };
    router.send(Message {
        dst: to.src,
        handle: to.reply_to,
        body: Bytes::from(body),
        ..Default::default()
    });
}
