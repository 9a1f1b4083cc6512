//! Running calls on the child's main thread, in arrival order (the seed's
//! `ExternalContext._dispatch_calls`), or on a small pool for functions
//! declared `#[mitogen::remote(concurrent)]`; and cancelling calls whose
//! caller gave up on them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::core::call::{CallHead, CallOp, ReplyHead};
use crate::core::cancel::{self, CancelToken};
use crate::core::error::{CallError, CallErrorKind};
use crate::core::int_hash::IntHash;
use crate::core::latch::{Latch, LatchError};
use crate::core::message::{ContextId, Message};
use crate::core::remote::{lookup, Failure, RemoteEntry};
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

/// Calls queued or running here, by caller and reply handle, with the token
/// their caller's cancellation marks. A call is entered as it arrives (so a
/// cancellation finds it while it is still queued) and removed once it has
/// run, so the table holds no more than the calls queue does.
#[derive(Default)]
pub(crate) struct Inflight(Mutex<CallTable>);

/// The table behind [`Inflight`], keyed by [`call_key`].
type CallTable = HashMap<u64, CancelToken, IntHash>;

/// One number for a caller and the reply handle its call awaits.
fn call_key(caller: ContextId, reply_to: u32) -> u64 {
    (u64::from(caller) << 32) | u64::from(reply_to)
}

impl Inflight {
    fn lock(&self) -> std::sync::MutexGuard<'_, CallTable> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Enters a call as it arrives; calls without a reply cannot be cancelled.
    pub(crate) fn arrived(&self, msg: &Message) {
        if msg.reply_to != 0 {
            self.lock()
                .insert(call_key(msg.src, msg.reply_to), CancelToken::new());
        }
    }

    /// Marks the call `caller` awaits on `reply_to` cancelled. Keyed by the
    /// caller (the source the router vouches for), so a context can cancel
    /// its own calls and nobody else's. False if no such call is here (it
    /// has finished, or never was).
    pub(crate) fn cancel(&self, caller: ContextId, reply_to: u32) -> bool {
        match self.lock().get(&call_key(caller, reply_to)) {
            Some(t) => {
                t.cancel();
                true
            }
            None => false,
        }
    }

    fn token(&self, msg: &Message) -> CancelToken {
        if msg.reply_to == 0 {
            return CancelToken::new();
        }
        self.lock()
            .get(&call_key(msg.src, msg.reply_to))
            .cloned()
            .unwrap_or_default()
    }

    fn finished(&self, msg: &Message) {
        if msg.reply_to != 0 {
            let mut map = self.lock();
            map.remove(&call_key(msg.src, msg.reply_to));
            // A burst of pipelined calls grows the table to the burst's
            // size; once it has drained, give that memory back rather than
            // keep it for the context's life (5,000 calls at once left
            // ~400 KiB of table resident in the child).
            if map.is_empty() && map.capacity() > SHRINK_ABOVE {
                *map = CallTable::default();
            }
        }
    }
}

/// Capacity above which an emptied table or queue is freed (see
/// [`Inflight::finished`]): small enough to bound what a burst leaves behind,
/// large enough that sequential calls never reallocate.
const SHRINK_ABOVE: usize = 256;

/// Threads that run `concurrent` functions, started as calls need them.
const POOL_THREADS: usize = 4;

/// How long a context leaving waits for its pool's calls to end.
const POOL_DRAIN: Duration = Duration::from_secs(30);

type Job = Box<dyn FnOnce() + Send>;

/// The pool of threads for `#[mitogen::remote(concurrent)]` functions: up to
/// [`POOL_THREADS`], started on demand and kept; calls beyond that wait in
/// its queue (never on the main thread's).
struct Pool {
    tx: mpsc::Sender<Job>,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    threads: usize,
    state: Arc<(Mutex<PoolState>, Condvar)>,
}

/// What the pool is doing. Every job sent is matched by one thread taking
/// it: an idle thread claimed for it, a thread started for it, or (all
/// busy) the next thread that finishes, which then takes a queued job
/// instead of counting itself idle.
#[derive(Default)]
struct PoolState {
    /// Calls handed to the pool and not finished.
    running: usize,
    /// Threads waiting for a job that no sent job has claimed.
    idle: usize,
    /// Jobs sent while every thread was busy.
    queued: usize,
}

impl Pool {
    fn new() -> Pool {
        let (tx, rx) = mpsc::channel();
        Pool {
            tx,
            rx: Arc::new(Mutex::new(rx)),
            threads: 0,
            state: Default::default(),
        }
    }

    /// Runs `job` on the pool; on the calling thread if the pool has no
    /// thread and none can be started.
    fn run(&mut self, job: Job) {
        {
            let state = self.state.clone();
            let mut st = state.0.lock().unwrap_or_else(|e| e.into_inner());
            if st.idle > 0 {
                st.idle -= 1;
            } else if self.threads < POOL_THREADS && self.spawn().is_ok() {
                // The new thread takes this job.
            } else if self.threads > 0 {
                st.queued += 1;
            } else {
                drop(st);
                job();
                return;
            }
            st.running += 1;
        }
        if let Err(mpsc::SendError(job)) = self.tx.send(job) {
            // Cannot happen while `self` holds the receiver too; run it here
            // rather than lose it.
            job();
        }
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let rx = self.rx.clone();
        let state = self.state.clone();
        std::thread::Builder::new()
            .name(format!("mitogen-call-{}", self.threads))
            .spawn(move || loop {
                let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok(job) = job else { return };
                job();
                let (lock, cv) = &*state;
                let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
                st.running -= 1;
                if st.queued > 0 {
                    st.queued -= 1;
                } else {
                    st.idle += 1;
                }
                cv.notify_all();
            })?;
        self.threads += 1;
        Ok(())
    }

    /// Waits (until `deadline`) for the calls handed to the pool to end.
    fn drain(&self, deadline: Instant) {
        let (lock, cv) = &*self.state;
        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
        while st.running > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    running = st.running,
                    "concurrent calls still running at exit"
                );
                return;
            }
            st = cv
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// The child's call loop.
pub(crate) struct Dispatcher {
    router: Arc<RouterInner>,
    inflight: Arc<Inflight>,
    failed_chains: HashMap<(ContextId, u64), CallError>,
    /// Calls run since free memory was last handed back to the system.
    since_trim: usize,
    pool: Pool,
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
    pub(crate) fn new(router: Arc<RouterInner>, inflight: Arc<Inflight>) -> Dispatcher {
        Dispatcher {
            router,
            inflight,
            failed_chains: HashMap::new(),
            since_trim: 0,
            pool: Pool::new(),
        }
    }

    /// Runs calls until the latch closes (shutdown), then waits for the
    /// calls still running on the pool.
    pub(crate) fn run(&mut self, calls: &Latch<Message>, parent: &Arc<Stream>) {
        self.serve(calls, parent);
        self.pool.drain(Instant::now() + POOL_DRAIN);
    }

    fn serve(&mut self, calls: &Latch<Message>, parent: &Arc<Stream>) {
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
        let token = self.inflight.token(&msg);
        if token.is_cancelled() {
            // Its caller gave up before it started: skip it, answer nothing.
            self.inflight.finished(&msg);
            tracing::debug!("call cancelled before it started");
            return;
        }
        let (head, args) = match postcard::take_from_bytes::<CallHead>(&msg.body) {
            Ok(x) => x,
            Err(e) => {
                self.inflight.finished(&msg);
                let err = call_error(
                    &self.router,
                    "?",
                    CallErrorKind::BadArguments,
                    format!("undecodable call: {e}"),
                    vec![],
                );
                send_reply(&self.router, &msg, "?", Err(err));
                return;
            }
        };
        let chain_key = head.chain.map(|c| (msg.src, c));
        if let CallOp::ForgetChain = head.op {
            self.inflight.finished(&msg);
            if let Some(k) = chain_key {
                self.failed_chains.remove(&k);
            }
            return;
        }
        if let Some(failed) = chain_key.and_then(|k| self.failed_chains.get(&k)) {
            self.inflight.finished(&msg);
            let mut e = failed.clone();
            e.message = format!("earlier call {} failed: {}", e.function, e.message);
            e.function = head.function.to_owned();
            e.kind = CallErrorKind::ChainFailed;
            send_reply(&self.router, &msg, head.function, Err(e));
            return;
        }
        let entry = match lookup(head.function) {
            None => {
                self.inflight.finished(&msg);
                let e = call_error(
                    &self.router,
                    head.function,
                    CallErrorKind::UnknownFunction,
                    format!(
                        "no #[mitogen::remote] function named {:?} in this program",
                        head.function
                    ),
                    vec![],
                );
                if let Some(k) = chain_key {
                    self.failed_chains.insert(k, e.clone());
                }
                self.finish(&msg, head.function, Err(e), chain_key.is_some());
                return;
            }
            Some(entry) => entry,
        };
        // A chain's calls keep their order (a later one depends on the
        // earlier ones' failures), so only calls outside a chain go to the
        // pool.
        if entry.concurrent && chain_key.is_none() {
            let router = self.router.clone();
            let inflight = self.inflight.clone();
            let args_at = msg.body.len() - args.len();
            self.pool.run(Box::new(move || {
                let args = &msg.body[args_at..];
                let result = invoke(&router, entry, args, &token);
                inflight.finished(&msg);
                if !token.is_cancelled() {
                    finish_call(&router, &msg, entry.name, result, false);
                }
            }));
            return;
        }
        let result = invoke(&self.router, entry, args, &token);
        self.inflight.finished(&msg);
        if let (Err(e), Some(k)) = (&result, chain_key) {
            self.failed_chains.insert(k, e.clone());
        }
        if token.is_cancelled() {
            // Nobody waits for the reply.
            return;
        }
        self.finish(&msg, head.function, result, chain_key.is_some());
    }

    fn finish(
        &self,
        msg: &Message,
        function: &str,
        result: Result<Vec<u8>, CallError>,
        in_chain: bool,
    ) {
        finish_call(&self.router, msg, function, result, in_chain);
    }
}

/// Runs a registered function with `token` as the thread's current one,
/// turning a failure or a panic into the call's error.
fn invoke(
    router: &RouterInner,
    entry: &'static RemoteEntry,
    args: &[u8],
    token: &CancelToken,
) -> Result<Vec<u8>, CallError> {
    tracing::trace!(function = entry.name, "call");
    let _current = cancel::enter(token.clone());
    match catch_unwind(AssertUnwindSafe(|| (entry.invoke)(args))) {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(Failure {
            kind,
            message,
            chain,
        })) => Err(call_error(router, entry.name, kind, message, chain)),
        Err(payload) => {
            let message = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_owned());
            Err(call_error(
                router,
                entry.name,
                CallErrorKind::Panicked,
                message,
                vec![],
            ))
        }
    }
}

/// Answers a call that ran (or could not run); a call without a reply
/// handle has its failure logged instead, unless a chain records it.
fn finish_call(
    router: &RouterInner,
    msg: &Message,
    function: &str,
    result: Result<Vec<u8>, CallError>,
    in_chain: bool,
) {
    if msg.reply_to == 0 {
        if let Err(e) = &result {
            if !in_chain {
                tracing::error!("call without reply failed: {e}");
            }
        }
        return;
    }
    send_reply(router, msg, function, result);
}

fn call_error(
    router: &RouterInner,
    function: &str,
    kind: CallErrorKind,
    message: String,
    chain: Vec<String>,
) -> CallError {
    CallError {
        context: router.name.clone(),
        function: function.to_owned(),
        kind,
        message,
        chain,
    }
}

/// Sends the result of `function` back; a result too large to send is
/// replaced by an error naming the function.
fn send_reply(
    router: &RouterInner,
    msg: &Message,
    function: &str,
    result: Result<Vec<u8>, CallError>,
) {
    if msg.reply_to == 0 {
        return;
    }
    let body = match result {
        Ok(out) => {
            let mut body = match postcard::to_allocvec(&ReplyHead::Ok) {
                Ok(b) => b,
                Err(_) => return,
            };
            if out.len() + body.len() > router.max_message_size {
                let e = call_error(
                    router,
                    function,
                    CallErrorKind::Returned,
                    format!(
                        "result of {} bytes exceeds the message limit of {} bytes",
                        out.len(),
                        router.max_message_size
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
    router.send(Message {
        dst: msg.src,
        handle: msg.reply_to,
        body: Bytes::from(body),
        ..Default::default()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(src: ContextId, reply_to: u32) -> Message {
        Message {
            src,
            reply_to,
            ..Default::default()
        }
    }

    #[test]
    fn a_drained_burst_of_calls_leaves_no_table_behind() {
        let inflight = Inflight::default();
        let calls: Vec<Message> = (0..5000).map(|i| call(7, 1000 + i)).collect();
        for m in &calls {
            inflight.arrived(m);
        }
        assert!(inflight.lock().capacity() >= 5000);
        for m in &calls {
            inflight.finished(m);
        }
        assert!(
            inflight.lock().capacity() <= SHRINK_ABOVE,
            "{} entries of table kept after the burst",
            inflight.lock().capacity()
        );
    }

    #[test]
    fn a_call_is_cancelled_only_by_its_own_caller() {
        let inflight = Inflight::default();
        inflight.arrived(&call(7, 5000));
        inflight.arrived(&call(8, 5000));
        assert!(!inflight.cancel(9, 5000), "no such call from 9");
        assert!(inflight.cancel(7, 5000));
        assert!(inflight.token(&call(7, 5000)).is_cancelled());
        assert!(!inflight.token(&call(8, 5000)).is_cancelled());
    }
}
