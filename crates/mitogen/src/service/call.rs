//! The caller's side: [`ServiceRef`], what `Context::service` returns, and
//! its typed calls.

use std::marker::PhantomData;
use std::time::Duration;

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};

use crate::core::call::PendingCall;
use crate::core::channel::encoding_for;
use crate::core::context::Context;
use crate::core::error::{Error, Result};
use crate::core::message::handles;

use super::host::ServiceHead;
use super::{EndsWithSender, Exposed, MethodArgs, Service};
use crate::core::channel::Receiver;
use crate::core::payload::Payload;

impl Context {
    /// The service `S` in this context, to call its exposed methods:
    ///
    /// ```no_run
    /// # #[derive(Default)] struct Cache;
    /// # #[mitogen::service] impl Cache {
    /// #     #[expose(policy = any)] fn get(&self, key: String) -> Option<String> { None }
    /// # }
    /// # fn demo(ctx: &mitogen::Context) -> mitogen::Result<()> {
    /// let value = ctx.service::<Cache>().call(Cache::get, "motd")?;
    /// # Ok(()) }
    /// ```
    ///
    /// Nothing is sent until a method is called; see [`ServiceRef`].
    pub fn service<S: Service>(&self) -> ServiceRef<S> {
        ServiceRef {
            ctx: self.clone(),
            _s: PhantomData,
        }
    }
}

/// The service `S` living in a context: its methods are called through this
/// with the same forms as [`Context::call`] (a blocking call, with a
/// deadline, or a [`PendingCall`] to await or drop).
///
/// A call fails with [`Error::Call`] whose [`kind`](crate::CallError::kind)
/// says why: `Refused` when a rule does not admit this context (the message
/// names the service, the method and the rule), `UnknownService` or
/// `UnknownMethod` when the callee has no such service or method,
/// `Panicked` or `Returned` when the method panicked or returned an error.
pub struct ServiceRef<S> {
    ctx: Context,
    _s: PhantomData<fn() -> S>,
}

impl<S> Clone for ServiceRef<S> {
    fn clone(&self) -> Self {
        ServiceRef {
            ctx: self.ctx.clone(),
            _s: PhantomData,
        }
    }
}

impl<S: Service> ServiceRef<S> {
    /// The context the service lives in.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Calls `method(args)` and waits for its result, at most the router's
    /// default call timeout if it has one (as [`Context::call`]).
    pub fn call<A, R>(&self, method: Exposed<S, A, R>, args: impl MethodArgs<A>) -> Result<R>
    where
        A: Serialize,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let pending = self.call_async(method, args);
        match self.ctx.router().call_timeout.get() {
            Some(t) => pending.get_timeout(*t),
            None => pending.get(),
        }
    }

    /// Like [`call`](Self::call), waiting at most `timeout` (the call is
    /// then cancelled: the method sees [`cancelled()`](crate::cancelled)
    /// turn true, or does not start).
    pub fn call_timeout<A, R>(
        &self,
        method: Exposed<S, A, R>,
        args: impl MethodArgs<A>,
        timeout: Duration,
    ) -> Result<R>
    where
        A: Serialize,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.call_async(method, args).get_timeout(timeout)
    }

    /// Starts a call and returns at once; wait with [`PendingCall::get`] or
    /// `.await`, or drop it to cancel the call.
    pub fn call_async<A, R>(
        &self,
        method: Exposed<S, A, R>,
        args: impl MethodArgs<A>,
    ) -> PendingCall<R>
    where
        A: Serialize,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let args = args.into_args();
        let body = encoding_for(self.ctx.id(), || encode(S::NAME, method.name(), &args));
        PendingCall::start_at(
            &self.ctx,
            handles::CALL_SERVICE,
            handles::CANCEL_SERVICE,
            body,
            0,
        )
    }

    /// Calls a method whose last argument is a [`Sender`](crate::Sender),
    /// of a channel made here: the
    /// values it sends arrive on the returned [`Receiver`], and its result
    /// on the [`PendingCall`]. `rest` is the other arguments, as for
    /// [`call`](Self::call) (a tuple, or the bare value of one).
    ///
    /// ```no_run
    /// # #[derive(Default)] struct Logs;
    /// # #[mitogen::service] impl Logs {
    /// #     #[expose] fn tail(&self, lines: u32, out: mitogen::Sender<String>) -> u32 { lines }
    /// # }
    /// # fn demo(ctx: &mitogen::Context) -> mitogen::Result<()> {
    /// let (lines, done) = ctx.service::<Logs>().stream(Logs::tail, 100);
    /// for line in lines.iter() {
    ///     println!("{line}");
    /// }
    /// done.get()?;
    /// # Ok(()) }
    /// ```
    pub fn stream<A, R>(
        &self,
        method: Exposed<S, A, R>,
        rest: impl MethodArgs<A::Rest>,
    ) -> (Receiver<A::Item>, PendingCall<R>)
    where
        A: EndsWithSender + Serialize,
        A::Item: Payload,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let (tx, rx) = self.ctx.channel::<A::Item>();
        let call = self.call_async(method, A::join(rest.into_args(), tx));
        (rx, call)
    }

    /// Starts the service if it is not running, calling no method (its
    /// start rule applies); `Ok` once it runs. Fails with the constructor's
    /// error (or panic) if it could not be built.
    pub fn start(&self) -> Result<()> {
        let body = encode(S::NAME, "", &());
        let pending: PendingCall<()> = PendingCall::start_at(
            &self.ctx,
            handles::CALL_SERVICE,
            handles::CANCEL_SERVICE,
            body,
            0,
        );
        match self.ctx.router().call_timeout.get() {
            Some(t) => pending.get_timeout(*t),
            None => pending.get(),
        }
    }
}

/// Encodes a service call: head, then arguments, in one buffer.
fn encode<A: Serialize>(service: &str, method: &str, args: &A) -> Result<Bytes> {
    let head = ServiceHead { service, method };
    let buf = postcard::to_extend(&head, Vec::with_capacity(64))
        .map_err(|e| Error::encode("service call head", e))?;
    let buf = postcard::to_extend(args, buf)
        .map_err(|e| Error::encode(format!("{service}::{method}"), e))?;
    Ok(Bytes::from(buf))
}
