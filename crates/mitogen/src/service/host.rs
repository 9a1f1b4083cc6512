//! The callee's side: the `CALL_SERVICE` handler every context installs,
//! which judges each call by its rules as it arrives (on the broker thread,
//! before anything is queued), starts a service on first use, and runs the
//! call on the service's own threads through its invoker.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::core::call::ReplyHead;
use crate::core::cancel::{self, CancelToken};
use crate::core::error::{CallError, CallErrorKind};
use crate::core::int_hash::IntHash;
use crate::core::message::{handles, ContextId, Message};
use crate::core::remote::Failure;
use crate::core::router::{Policy, RouterInner, Sink};

use super::pool::Pool;
use super::registry::{lookup, Instance, Invoker, MethodEntry, ServiceEntry};
use super::rule::{self, Caller};

/// Head of a `CALL_SERVICE` body; the encoded argument tuple follows.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ServiceHead<'a> {
    /// `Service::NAME`.
    #[serde(borrow)]
    pub service: &'a str,
    /// The method; empty to start the service and call nothing.
    #[serde(borrow)]
    pub method: &'a str,
}

/// Installs the service handlers on `router` (every context has them; a
/// service costs nothing until it is first called).
pub(crate) fn install(router: &Arc<RouterInner>) {
    let host = Arc::new(Host {
        router: Arc::downgrade(router),
        running: Mutex::new(HashMap::new()),
        calls: Mutex::new(HashMap::default()),
    });
    let h = host.clone();
    // Open to every context that reaches this one: each service's rules
    // decide, as each call arrives.
    router.add_handler_at(
        handles::CALL_SERVICE,
        Sink::Func(Arc::new(move |msg| h.arrived(msg))),
        None,
        false,
        Policy::Any,
    );
    router.add_handler_at(
        handles::CANCEL_SERVICE,
        Sink::Func(Arc::new(move |msg: Message| {
            // Keyed by the caller the router vouches for: a context finds
            // only its own calls.
            if let Some(handle) = cancel::decode_cancel(&msg.body) {
                if let Some(t) = host.lock_calls().get(&call_key(msg.src, handle)) {
                    t.cancel();
                }
            }
        })),
        None,
        false,
        Policy::Any,
    );
}

/// Most askers waiting for one deduplicated call: what a caller repeating a
/// call may make this context hold is bounded.
const MAX_ASKERS: usize = 4096;

/// Bytes queued towards an asker beyond which a large answer is replaced by
/// a short error saying so, and beyond twice which nothing more is sent: a
/// context that sends calls and never reads its stream must not make this
/// one queue answers without end (as the router does for refusals), and an
/// honest caller that fell that far behind gets an error, not a hang.
const REPLY_HOLD: usize = 64 * 1024 * 1024;

/// Answers up to this size pass while the queue towards their asker is
/// below twice [`REPLY_HOLD`].
const SMALL_ANSWER: usize = 4096;

/// One number for a caller and the reply handle its call awaits.
fn call_key(caller: ContextId, reply_to: u32) -> u64 {
    (u64::from(caller) << 32) | u64::from(reply_to)
}

/// The services of one context.
struct Host {
    router: Weak<RouterInner>,
    /// Services started (or being started), by name.
    running: Mutex<HashMap<&'static str, Arc<Running>>>,
    /// Calls queued or running, with the token their caller's
    /// cancellation marks.
    calls: Mutex<HashMap<u64, CancelToken, IntHash>>,
}

/// A service that a caller allowed to start it has called.
struct Running {
    entry: &'static ServiceEntry,
    pool: Pool,
    instance: OnceLock<Instance>,
    /// Held while the instance is built, so it is built once.
    starting: Mutex<()>,
    /// Deduplicated calls running: the askers waiting for each.
    dedup: Mutex<HashMap<(&'static str, Bytes), Vec<Asker>>>,
}

/// Who waits for a call's answer.
#[derive(Clone, Copy)]
struct Asker {
    src: ContextId,
    reply_to: u32,
}

/// A call judged admissible, ready to run.
struct Job {
    running: Arc<Running>,
    method: Option<&'static MethodEntry>,
    args: Bytes,
    caller: Caller,
    may_start: bool,
    asker: Asker,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Host {
    fn lock_calls(&self) -> MutexGuard<'_, HashMap<u64, CancelToken, IntHash>> {
        lock(&self.calls)
    }

    /// A call arrives (broker thread: nothing here blocks).
    fn arrived(self: &Arc<Self>, msg: Message) {
        let Some(router) = self.router.upgrade() else {
            return;
        };
        if msg.is_dead() || msg.flags & crate::core::message::FLAG_KEYED != 0 {
            return;
        }
        let asker = Asker {
            src: msg.src,
            reply_to: msg.reply_to,
        };
        let (head, args) = match postcard::take_from_bytes::<ServiceHead>(&msg.body) {
            Ok(x) => x,
            Err(e) => {
                let e = failed(
                    &router,
                    "?",
                    CallErrorKind::BadArguments,
                    format!("undecodable service call: {e}"),
                );
                return reply(&router, asker, "?", Err(e));
            }
        };
        let Some(entry) = lookup(head.service) else {
            let e = failed(
                &router,
                head.service,
                CallErrorKind::UnknownService,
                format!(
                    "no #[mitogen::service] named {:?} in this program",
                    head.service
                ),
            );
            return reply(&router, asker, head.service, Err(e));
        };
        let method = if head.method.is_empty() {
            None
        } else {
            match entry.method(head.method) {
                Some(m) => Some(m),
                None => {
                    let function = format!("{}::{}", entry.name, head.method);
                    let e = failed(
                        &router,
                        &function,
                        CallErrorKind::UnknownMethod,
                        format!("{} exposes no method {:?}", entry.name, head.method),
                    );
                    return reply(&router, asker, &function, Err(e));
                }
            }
        };
        let function = function_name(entry, method);
        let caller = Caller::of(&router, &msg);
        let may_start = entry.start.admits(&caller);
        let running = {
            let mut services = lock(&self.running);
            match services.get(entry.name) {
                Some(r) => r.clone(),
                None if may_start => {
                    let r = Arc::new(Running {
                        entry,
                        pool: Pool::new(entry.name, threads_of(entry)),
                        instance: OnceLock::new(),
                        starting: Mutex::new(()),
                        dedup: Mutex::new(HashMap::new()),
                    });
                    services.insert(entry.name, r.clone());
                    r
                }
                None => {
                    drop(services);
                    return refuse_start(&router, asker, &function, entry, &caller);
                }
            }
        };
        if let Some(m) = method {
            if !m.rule.admits(&caller) {
                let e = failed(
                    &router,
                    &function,
                    CallErrorKind::Refused,
                    format!(
                        "context {:?} (id {}) may not call {}: its rule is {}",
                        caller.name(),
                        caller.id(),
                        m.name,
                        m.rule
                    ),
                );
                log_refusal(&caller, &function);
                return reply(&router, asker, &function, Err(e));
            }
        }
        let args = msg.body.slice(msg.body.len() - args.len()..);
        let dedup = running.entry.invoker == Invoker::Deduplicated && method.is_some();
        if asker.reply_to != 0 {
            self.lock_calls()
                .insert(call_key(asker.src, asker.reply_to), CancelToken::new());
        }
        let key = (method.map_or("", |m| m.name), args.clone());
        if dedup {
            let mut table = lock(&running.dedup);
            if let Some(askers) = table.get_mut(&key) {
                if askers.len() < MAX_ASKERS {
                    // The same call is running: this asker gets its answer.
                    askers.push(asker);
                    return;
                }
                drop(table);
                self.forget(asker);
                let e = failed(
                    &router,
                    &function,
                    CallErrorKind::Returned,
                    format!("{MAX_ASKERS} identical calls are already waiting for this one"),
                );
                return reply(&router, asker, &function, Err(e));
            }
            table.insert(key.clone(), vec![asker]);
        }
        let weight = msg.body.len() + 64;
        let job = Job {
            running: running.clone(),
            method,
            args,
            caller,
            may_start,
            asker,
        };
        let host = self.clone();
        let limit = router.receiver_limit();
        if running
            .pool
            .run(weight, limit, move || host.run(job, dedup))
            .is_err()
        {
            let askers = if dedup {
                lock(&running.dedup).remove(&key).unwrap_or_default()
            } else {
                vec![asker]
            };
            let e = failed(
                &router,
                &function,
                CallErrorKind::Returned,
                format!(
                    "the service is too far behind: more than {} MiB of calls waiting",
                    limit >> 20
                ),
            );
            for a in askers {
                self.forget(a);
                reply(&router, a, &function, Err(e.clone()));
            }
        }
    }

    /// Forgets a call's cancellation token; true if it had been cancelled.
    fn forget(&self, a: Asker) -> bool {
        if a.reply_to == 0 {
            return false;
        }
        self.lock_calls()
            .remove(&call_key(a.src, a.reply_to))
            .is_some_and(|t| t.is_cancelled())
    }

    /// Runs a call on a pool thread and answers whoever waits for it.
    fn run(&self, job: Job, dedup: bool) {
        let Some(router) = self.router.upgrade() else {
            return;
        };
        let function = function_name(job.running.entry, job.method);
        let token = if dedup || job.asker.reply_to == 0 {
            // A deduplicated run answers several askers: one giving up
            // does not stop it.
            CancelToken::new()
        } else {
            self.lock_calls()
                .get(&call_key(job.asker.src, job.asker.reply_to))
                .cloned()
                .unwrap_or_default()
        };
        let result = if token.is_cancelled() {
            None
        } else {
            Some(self.invoke(&router, &job, &function, token))
        };
        let askers = if dedup {
            let key = (job.method.map_or("", |m| m.name), job.args.clone());
            lock(&job.running.dedup).remove(&key).unwrap_or_default()
        } else {
            vec![job.asker]
        };
        for a in askers {
            let cancelled = self.forget(a);
            if let (Some(r), false) = (&result, cancelled) {
                reply(&router, a, &function, r.clone());
            }
        }
    }

    /// Starts the service if it has to (and may), then runs the method.
    fn invoke(
        &self,
        router: &RouterInner,
        job: &Job,
        function: &str,
        token: CancelToken,
    ) -> Result<Vec<u8>, CallError> {
        let running = &job.running;
        let instance = match running.instance.get() {
            Some(i) => i,
            None if !job.may_start => {
                return Err(start_refusal(router, function, running.entry, &job.caller));
            }
            None => {
                let _held = lock(&running.starting);
                match running.instance.get() {
                    Some(i) => i,
                    None => {
                        tracing::debug!(service = running.entry.name, "starting service");
                        let made = catch(|| (running.entry.new)());
                        match made {
                            Ok(i) => running.instance.get_or_init(|| i),
                            Err(f) => return Err(failure(router, function, f)),
                        }
                    }
                }
            }
        };
        let Some(method) = job.method else {
            // Only asked to start it: the answer is `()`.
            return Ok(Vec::new());
        };
        tracing::trace!(function, "service call");
        let _token = cancel::enter(token);
        let _caller = rule::enter(job.caller.clone());
        catch(|| (method.invoke)(&**instance, &job.args)).map_err(|f| failure(router, function, f))
    }
}

/// The threads a service's calls may use.
fn threads_of(entry: &ServiceEntry) -> usize {
    match entry.invoker {
        Invoker::Serialized => 1,
        _ => entry.threads.max(1),
    }
}

/// How a service's method is named in errors: `path::Service::method`, or
/// the service's own path for a call that only starts it.
fn function_name(entry: &ServiceEntry, method: Option<&MethodEntry>) -> String {
    match method {
        Some(m) => format!("{}::{}", entry.name, m.name),
        None => entry.name.to_owned(),
    }
}

/// Runs `f`, turning a panic into a failure.
fn catch<T>(f: impl FnOnce() -> Result<T, Failure>) -> Result<T, Failure> {
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

fn failure(router: &RouterInner, function: &str, f: Failure) -> CallError {
    CallError {
        context: router.name.clone(),
        function: function.to_owned(),
        kind: f.kind,
        message: f.message,
        chain: f.chain,
    }
}

fn failed(router: &RouterInner, function: &str, kind: CallErrorKind, message: String) -> CallError {
    CallError {
        context: router.name.clone(),
        function: function.to_owned(),
        kind,
        message,
        chain: Vec::new(),
    }
}

fn start_refusal(
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

fn refuse_start(
    router: &RouterInner,
    asker: Asker,
    function: &str,
    entry: &ServiceEntry,
    caller: &Caller,
) {
    let e = start_refusal(router, function, entry, caller);
    reply(router, asker, function, Err(e));
}

fn log_refusal(caller: &Caller, function: &str) {
    tracing::debug!(caller = caller.id(), function, "service call refused");
}

/// Sends a call's result to one asker; a result too large to send is
/// replaced by an error naming the method.
fn reply(router: &RouterInner, to: Asker, function: &str, result: Result<Vec<u8>, CallError>) {
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
