//! Remote calls: the wire format, [`PendingCall`] and [`CallChain`].
//!
//! A call is one message to the callee's `CALL_FUNCTION` handle whose body is a
//! postcard-encoded [`CallHead`] followed directly by the postcard-encoded
//! argument tuple (no second copy of the arguments). The reply goes to the
//! caller's one-shot reply handle: a [`ReplyHead`] followed by the encoded output.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::channel::message_to_value;
use super::context::Context;
use super::error::{CallError, Error, Result};
use super::latch::{Latch, LatchError};
use super::message::{handles, Message};
use super::remote::{IntoArgs, RemoteFn};
use super::router::{Policy, Sink};
use super::select::Selectable;

/// What a `CALL_FUNCTION` message asks for.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum CallOp {
    /// Run the function; the arguments follow the head.
    Call,
    /// Forget the failure recorded for the chain.
    ForgetChain,
}

/// Head of a `CALL_FUNCTION` body.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CallHead<'a> {
    pub op: CallOp,
    #[serde(borrow)]
    pub function: &'a str,
    /// The [`CallChain`] this call belongs to, if any.
    pub chain: Option<u64>,
}

/// Head of a reply body.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ReplyHead {
    /// The output follows.
    Ok,
    /// The call failed.
    Err(CallError),
}

/// Encodes a call body: head, then arguments, in one buffer.
pub(crate) fn encode_call<A: Serialize>(
    function: &str,
    chain: Option<u64>,
    args: &A,
) -> Result<Bytes> {
    let head = CallHead {
        op: CallOp::Call,
        function,
        chain,
    };
    let buf = postcard::to_extend(&head, Vec::with_capacity(64))
        .map_err(|e| Error::encode("call head", e))?;
    let buf = postcard::to_extend(args, buf).map_err(|e| Error::encode(function.to_owned(), e))?;
    Ok(Bytes::from(buf))
}

/// Encodes a call whose arguments hold a secret into a buffer of fixed size,
/// wiped when freed: encoding never reallocates it (which would leave a copy
/// of the secret in freed memory), and a failure (too large, or an argument
/// that does not encode) wipes what was written so far as the buffer goes.
pub(crate) fn encode_secret_call<A: Serialize>(function: &str, args: &A) -> Result<Bytes> {
    let head = CallHead {
        op: CallOp::Call,
        function,
        chain: None,
    };
    let mut buf = zeroize::Zeroizing::new(vec![0u8; SECRET_CALL_CAPACITY]);
    let too_large = |e: postcard::Error| match e {
        postcard::Error::SerializeBufferFull => Error::encode(
            function.to_owned(),
            "a call holding a secret is over 64 KiB",
        ),
        e => Error::encode(function.to_owned(), e),
    };
    let head_len = postcard::to_slice(&head, &mut buf[..])
        .map_err(too_large)?
        .len();
    let args_len = postcard::to_slice(args, &mut buf[head_len..])
        .map_err(too_large)?
        .len();
    // Shortening keeps the allocation; its tail is wiped with the rest.
    buf.truncate(head_len + args_len);
    Ok(super::stream::wipe_on_drop(std::mem::take(&mut *buf)))
}

/// Room for a call holding a secret (a connection request).
const SECRET_CALL_CAPACITY: usize = 64 * 1024;

/// Decodes a reply body into the function's output.
pub(crate) fn decode_reply<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    let (head, rest) =
        postcard::take_from_bytes::<ReplyHead>(body).map_err(|e| Error::decode("call reply", e))?;
    match head {
        ReplyHead::Ok => postcard::from_bytes(rest).map_err(|e| Error::decode("call result", e)),
        ReplyHead::Err(e) => Err(Error::Call(e)),
    }
}

/// A call in flight: wait for it with [`get`](Self::get), a deadline, or `.await`.
///
/// Dropping it before the result came cancels the call, and so does a wait
/// that times out: the reply handle is unregistered at once (so calls that
/// time out leave nothing behind however many there are), and the callee is
/// told. There a call still queued is skipped, and a running one sees
/// [`cancelled()`](crate::cancelled) turn true; no reply is sent for either.
#[must_use = "the call's result (and any error) is lost unless it is waited for; \
              drop it explicitly to abandon the reply"]
pub struct PendingCall<T> {
    ctx: Context,
    latch: Arc<Latch<Message>>,
    handle: u32,
    /// Where the callee takes cancellations of the call (`CANCEL_CALL`, or
    /// a service's `CANCEL_SERVICE`).
    cancel: u32,
    failed: Option<Error>,
    done: bool,
    _t: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned + Send + 'static> PendingCall<T> {
    pub(crate) fn start(ctx: &Context, body: Result<Bytes>) -> Self {
        Self::start_flagged(ctx, body, 0)
    }

    /// [`start`](Self::start) with header flags (e.g. `FLAG_SECRET`).
    pub(crate) fn start_flagged(ctx: &Context, body: Result<Bytes>, flags: u16) -> Self {
        Self::start_at(
            ctx,
            handles::CALL_FUNCTION,
            handles::CANCEL_CALL,
            body,
            flags,
        )
    }

    /// Sends the call `body` to `handle` of the context, and tells `cancel`
    /// there if the call is given up (a service call uses its own pair).
    pub(crate) fn start_at(
        ctx: &Context,
        handle: u32,
        cancel: u32,
        body: Result<Bytes>,
        flags: u16,
    ) -> Self {
        let router = ctx.router();
        let latch = Arc::new(Latch::new());
        let mut pending = PendingCall {
            ctx: ctx.clone(),
            latch: latch.clone(),
            handle: 0,
            cancel,
            failed: None,
            done: false,
            _t: PhantomData,
        };
        let body = match body {
            Ok(b) => b,
            Err(e) => {
                pending.failed = Some(e);
                return pending;
            }
        };
        if body.len() > router.max_message_size {
            pending.failed = Some(Error::TooLarge {
                len: body.len(),
                max: router.max_message_size,
            });
            return pending;
        }
        if router.is_shut_down() {
            pending.failed = Some(Error::RouterShutdown);
            return pending;
        }
        pending.handle =
            router.add_handler(Sink::Latch(latch), Some(ctx.id()), true, Policy::Any, None);
        router.send(Message {
            dst: ctx.id(),
            handle,
            reply_to: pending.handle,
            flags,
            body,
            ..Default::default()
        });
        pending
    }

    /// Waits for the result; ends early with [`Error::Disconnected`] if the context
    /// (or a hop towards it) goes away.
    pub fn get(self) -> Result<T> {
        self.wait(None)
    }

    /// Waits at most `timeout`.
    pub fn get_timeout(self, timeout: Duration) -> Result<T> {
        self.wait(Instant::now().checked_add(timeout))
    }

    fn wait(mut self, deadline: Option<Instant>) -> Result<T> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let started = Instant::now();
        let router = self.ctx.router();
        if !self.latch.is_ready() && !router.broker.on_broker_thread() {
            // Read the stream the reply will come on ourselves, unless another
            // thread already does (see `Stream::lead`).
            if let Some(stream) = router.stream_towards(self.ctx.id()) {
                let latch = self.latch.clone();
                stream.lead(&router, &move || latch.is_ready(), deadline);
            }
        }
        let r = self.latch.get_deadline(deadline);
        self.finish(r, started)
    }

    fn finish(
        &mut self,
        r: std::result::Result<Message, LatchError>,
        started: Instant,
    ) -> Result<T> {
        // A wait that timed out leaves `done` unset, so that dropping the
        // call (which `get_timeout` does as it returns) unregisters the reply
        // handle instead of keeping it until a late reply or a disconnect.
        self.done = !matches!(r, Err(LatchError::Timeout | LatchError::Empty));
        match r {
            Ok(msg) if msg.is_dead() => message_to_value::<T>(&self.ctx.router(), msg),
            Ok(msg) => decode_reply(&msg.body),
            Err(LatchError::Timeout) => Err(Error::Timeout(started.elapsed())),
            Err(LatchError::Closed(_)) => Err(Error::RouterShutdown),
            Err(e) => Err(e.into_error(None)),
        }
    }
}

impl<T> PendingCall<T> {
    /// The handle the reply is awaited on (tests forge replies to it).
    #[doc(hidden)]
    pub fn reply_handle(&self) -> u32 {
        self.handle
    }
}

impl<T> Drop for PendingCall<T> {
    fn drop(&mut self) {
        if !self.done && self.handle != 0 {
            let router = self.ctx.router();
            router.del_handler(self.handle);
            // Nobody waits for the reply any more: tell the callee, which
            // skips the call if it has not started and lets a running one
            // see it (a context that is gone just drops the message).
            if !router.is_shut_down() && !self.ctx.is_disconnected() {
                router.send(Message {
                    dst: self.ctx.id(),
                    handle: self.cancel,
                    body: super::cancel::encode_cancel(self.handle),
                    ..Default::default()
                });
            }
        }
    }
}

impl<T> Selectable for PendingCall<T> {
    fn latch(&self) -> &Arc<Latch<Message>> {
        &self.latch
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Future for PendingCall<T> {
    type Output = Result<T>;
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<T>> {
        let this = self.get_mut();
        if let Some(e) = this.failed.take() {
            this.done = true;
            return Poll::Ready(Err(e));
        }
        match this.latch.poll_get(cx) {
            Poll::Ready(r) => Poll::Ready(this.finish(r, Instant::now())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> Unpin for PendingCall<T> {}

static NEXT_CHAIN: AtomicU64 = AtomicU64::new(1);

/// Calls pipelined without waiting, where the first failure fails the rest
/// (the seed's `CallChain`).
///
/// Calls made through a chain run in order in the target context. If one fails,
/// every later call of the same chain fails at once with
/// [`CallErrorKind::ChainFailed`](crate::CallErrorKind) without running, so a
/// sequence of `call_no_reply`s followed by one `call` costs one round trip and
/// still reports the first error.
///
/// ```no_run
/// # #[mitogen::remote] fn mkdir(p: String) -> std::io::Result<()> { std::fs::create_dir_all(p) }
/// # #[mitogen::remote] fn write(p: String, b: Vec<u8>) -> std::io::Result<()> { std::fs::write(p, b) }
/// # fn demo(ctx: &mitogen::Context) -> mitogen::Result<()> {
/// let chain = ctx.chain();
/// chain.call_no_reply(mkdir, "/tmp/app")?;
/// chain.call(write, ("/tmp/app/x".into(), b"hi".to_vec()))?; // fails with mkdir's error
/// # Ok(()) }
/// ```
///
/// A concurrent function (`#[mitogen::remote(concurrent)]`) called through a
/// chain runs in the chain's order, on the context's main thread.
pub struct CallChain {
    ctx: Context,
    id: u64,
}

impl CallChain {
    pub(crate) fn new(ctx: &Context) -> CallChain {
        CallChain {
            ctx: ctx.clone(),
            id: NEXT_CHAIN.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Sends a call without waiting for its result; a failure is remembered by
    /// the target and fails the chain's later calls.
    pub fn call_no_reply<F: RemoteFn>(&self, _f: F, args: impl IntoArgs<F>) -> Result<()> {
        self.ctx
            .send_call(F::NAME, Some(self.id), &args.into_args())
    }

    /// Calls and waits.
    pub fn call<F: RemoteFn>(&self, f: F, args: impl IntoArgs<F>) -> Result<F::Output> {
        let pending = self.call_async(f, args);
        match self.ctx.router().call_timeout.get() {
            Some(t) => pending.get_timeout(*t),
            None => pending.get(),
        }
    }

    /// Calls without waiting; the result comes through the returned handle.
    pub fn call_async<F: RemoteFn>(&self, _f: F, args: impl IntoArgs<F>) -> PendingCall<F::Output> {
        let args = args.into_args();
        let body = super::channel::encoding_for(self.ctx.id(), || {
            encode_call(F::NAME, Some(self.id), &args)
        });
        PendingCall::start(&self.ctx, body)
    }

    /// Forgets a recorded failure so the chain can be used again.
    pub fn reset(&self) -> Result<()> {
        let head = CallHead {
            op: CallOp::ForgetChain,
            function: "",
            chain: Some(self.id),
        };
        let body = postcard::to_allocvec(&head).map_err(|e| Error::encode("call head", e))?;
        self.ctx.router().send(Message {
            dst: self.ctx.id(),
            handle: handles::CALL_FUNCTION,
            body: Bytes::from(body),
            ..Default::default()
        });
        Ok(())
    }
}
