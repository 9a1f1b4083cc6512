//! The callee's side: the `CALL_SERVICE` handler every context installs,
//! which judges each call by its rules as it arrives (on the broker thread,
//! before anything is queued), starts a service on first use, and runs the
//! call on the service's own threads through its invoker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::core::cancel::{self, CancelToken};
use crate::core::error::{CallError, CallErrorKind};
use crate::core::int_hash::IntHash;
use crate::core::message::{handles, ContextId, Message};
use crate::core::router::{Policy, RouterInner, Sink};

use super::answer::{catch, failed, failure, log_refusal, refuse_start, reply, start_refusal};
use super::pool::{NotTaken, Pool};
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
pub(super) struct Asker {
    /// The caller.
    pub src: ContextId,
    /// Its reply handle.
    pub reply_to: u32,
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
            let name = shown(head.service);
            let e = failed(
                &router,
                &name,
                CallErrorKind::UnknownService,
                format!("no #[mitogen::service] named {name:?} in this program"),
            );
            return reply(&router, asker, &name, Err(e));
        };
        let method = if head.method.is_empty() {
            None
        } else {
            match entry.method(head.method) {
                Some(m) => Some(m),
                None => {
                    let name = shown(head.method);
                    let function = format!("{}::{name}", entry.name);
                    let e = failed(
                        &router,
                        &function,
                        CallErrorKind::UnknownMethod,
                        format!("{} exposes no method {name:?}", entry.name),
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
        if let Err(not_taken) = running
            .pool
            .run(weight, limit, move || host.run(job, dedup))
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
                match not_taken {
                    NotTaken::Full => format!(
                        "the service is too far behind: more than {} MiB of calls waiting",
                        limit >> 20
                    ),
                    NotTaken::NoThread => "no thread could be started for the service".into(),
                },
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

/// A name from a caller as an error shows it: cut to [`SHOWN_NAME`] bytes,
/// so an unknown name of any length makes a short answer.
fn shown(name: &str) -> String {
    if name.len() <= SHOWN_NAME {
        return name.to_owned();
    }
    let mut end = SHOWN_NAME;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &name[..end])
}

/// Longest part of a caller's name an error repeats.
const SHOWN_NAME: usize = 200;

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

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn a_long_unknown_name_is_cut_in_errors() {
        assert_eq!(shown("app::Cache"), "app::Cache");
        let long = "é".repeat(10_000);
        let cut = shown(&long);
        assert!(
            cut.len() <= 204 && cut.ends_with('…'),
            "{} bytes",
            cut.len()
        );
    }
}
