//! [`Broker`]: the one thread per process that drives every descriptor.
//!
//! The broker owns the poller (mio: epoll on Linux; kqueue on the BSDs and
//! macOS, where the crate does not build yet: see `sys/`) and reacts to readiness: it reads and decodes frames and hands them to the
//! router, finishes writes that a sending thread could not complete, forwards the
//! output of the process's own stdout/stderr as log records, reaps exited child
//! processes and runs timers. Other threads talk to it by queueing closures
//! ([`Broker::defer`]) and waking it through the poller's waker.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use super::io_logger::IoLogger;
use super::reader::{pump, FrameReader, Pumped};
use super::router::RouterInner;
use super::stream::{Registration, SendStatus, Stream};
use crate::core::process_monitor::ProcessWatch;

const WAKER: Token = Token(0);

/// Reads per readiness event before other sources get a turn (fairness under a
/// flood); the source is revisited on the next loop without waiting.
const READS_PER_TURN: usize = 16;

/// How long the broker keeps polling without sleeping after it had work: the
/// next message of a conversation with a local context usually comes within
/// this, and catching it awake avoids a cross-CPU wake-up, which costs tens of
/// microseconds on virtual machines.
const BUSY_POLL: Duration = Duration::from_micros(100);

/// Busy polling is only worth it while events come this close together on
/// average; otherwise (a remote peer, an idle program) the broker sleeps at
/// once and leaves the CPU to others.
const BUSY_WORTH: Duration = Duration::from_micros(50);

/// Longest gap counted in the average, so one pause does not stop busy
/// polling for long.
const GAP_SAMPLE_CAP: Duration = Duration::from_millis(1);

/// Work queued for the broker thread.
pub(crate) type Task = Box<dyn FnOnce(&mut Core) + Send>;

struct Shared {
    registry: Registry,
    waker: Waker,
    tasks: Mutex<Vec<Task>>,
    stop: AtomicBool,
    next_token: AtomicUsize,
    thread_id: OnceLock<ThreadId>,
}

/// Handle to a process's broker thread.
pub(crate) struct Broker {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

enum Source {
    StreamRx(Arc<Stream>),
    StreamTx(Arc<Stream>),
    /// The pipe of a frame being relayed from this stream has room again.
    RelayPipe(Arc<Stream>, Token),
    Log(IoLogger),
    Process(ProcessWatch),
}

/// The broker thread's own state; queued [`Task`]s get it mutably.
pub(crate) struct Core {
    router: Arc<RouterInner>,
    sources: HashMap<Token, Source>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_tasks: HashMap<u64, Task>,
    next_timer: u64,
    /// Sources that hit [`READS_PER_TURN`] and still have data.
    again: Vec<Token>,
    shared: Arc<Shared>,
}

impl Broker {
    /// Creates the poller; the thread starts with [`Broker::start`].
    pub(crate) fn new() -> io::Result<(Broker, Poll)> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let shared = Arc::new(Shared {
            registry,
            waker,
            tasks: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            next_token: AtomicUsize::new(1),
            thread_id: OnceLock::new(),
        });
        Ok((
            Broker {
                shared,
                thread: Mutex::new(None),
            },
            poll,
        ))
    }

    /// Starts the broker thread.
    pub(crate) fn start(&self, poll: Poll, router: Arc<RouterInner>) -> io::Result<()> {
        let shared = self.shared.clone();
        let handle = std::thread::Builder::new()
            .name("mitogen-broker".into())
            .spawn(move || {
                let _ = shared.thread_id.set(std::thread::current().id());
                let mut core = Core {
                    router,
                    sources: HashMap::new(),
                    timers: BinaryHeap::new(),
                    timer_tasks: HashMap::new(),
                    next_timer: 0,
                    again: Vec::new(),
                    shared,
                };
                core.run(poll);
            })?;
        *self.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(())
    }

    /// A fresh poller token.
    pub(crate) fn token(&self) -> Token {
        Token(self.shared.next_token.fetch_add(1, Ordering::Relaxed))
    }

    /// Queues `task` to run on the broker thread.
    pub(crate) fn defer(&self, task: impl FnOnce(&mut Core) + Send + 'static) {
        self.shared
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(task));
        // The broker runs its queue on every turn: it needs no wake-up from
        // itself (a relay schedules a check for every frame it passes on).
        if self.on_broker_thread() {
            return;
        }
        if let Err(e) = self.shared.waker.wake() {
            tracing::error!("cannot wake the broker: {e}");
        }
    }

    /// True when called on the broker thread.
    pub(crate) fn on_broker_thread(&self) -> bool {
        self.shared.thread_id.get() == Some(&std::thread::current().id())
    }

    /// Starts reading `stream` (with bytes already read during bootstrap).
    pub(crate) fn add_stream(&self, stream: Arc<Stream>, reader: FrameReader) {
        let rx_token = self.token();
        let tx_token = self.token();
        let pipe_token = self.token();
        let registry = match self.shared.registry.try_clone() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("cannot clone the poller registry: {e}");
                return;
            }
        };
        stream.set_reader(reader);
        self.defer(move |core| {
            if let Err(e) = stream.register(Registration {
                registry,
                rx_token,
                tx_token,
                pipe_token,
            }) {
                tracing::error!(stream = %stream.name(), "cannot watch stream: {e}");
                core.router.clone().on_disconnect(&stream);
                return;
            }
            core.sources
                .insert(rx_token, Source::StreamRx(stream.clone()));
            core.sources
                .insert(pipe_token, Source::RelayPipe(stream.clone(), rx_token));
            core.sources.insert(tx_token, Source::StreamTx(stream));
        });
    }

    /// Forwards lines read from `fd` as log records named `name`.
    pub(crate) fn add_log_pipe(&self, fd: OwnedFd, name: &'static str) {
        let token = self.token();
        self.defer(move |core| match IoLogger::new(fd, name) {
            Ok(logger) => {
                let raw = logger.as_raw_fd();
                match core
                    .shared
                    .registry
                    .register(&mut SourceFd(&raw), token, Interest::READABLE)
                {
                    Ok(()) => {
                        core.sources.insert(token, Source::Log(logger));
                    }
                    Err(e) => tracing::error!("cannot watch {name}: {e}"),
                }
            }
            Err(e) => tracing::error!("cannot watch {name}: {e}"),
        });
    }

    /// Reaps `watch`'s process when it exits.
    pub(crate) fn add_process(&self, watch: ProcessWatch) {
        let token = self.token();
        self.defer(move |core| {
            let raw = watch.as_raw_fd();
            if let Err(e) =
                core.shared
                    .registry
                    .register(&mut SourceFd(&raw), token, Interest::READABLE)
            {
                tracing::error!("cannot watch process: {e}");
                return;
            }
            core.sources.insert(token, Source::Process(watch));
        });
    }

    /// Runs `task` on the broker thread after `delay`.
    pub(crate) fn call_later(
        &self,
        delay: Duration,
        task: impl FnOnce(&mut Core) + Send + 'static,
    ) {
        self.defer(move |core| core.call_later(delay, Box::new(task)));
    }

    /// Stops the thread and waits for it (unless called from the thread itself).
    pub(crate) fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        let _ = self.shared.waker.wake();
        if self.on_broker_thread() {
            return;
        }
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Core {
    /// This process's router.
    pub(crate) fn router(&self) -> &Arc<RouterInner> {
        &self.router
    }

    fn call_later(&mut self, delay: Duration, task: Task) {
        let id = self.next_timer;
        self.next_timer += 1;
        self.timers.push(Reverse((Instant::now() + delay, id)));
        self.timer_tasks.insert(id, task);
    }

    fn run(&mut self, mut poll: Poll) {
        let mut events = Events::with_capacity(256);
        let mut last_busy = Instant::now();
        let mut avg_gap = GAP_SAMPLE_CAP;
        loop {
            let busy = avg_gap < BUSY_WORTH && last_busy.elapsed() < BUSY_POLL;
            let timeout = if !self.again.is_empty() || busy {
                if self.again.is_empty() {
                    std::thread::yield_now();
                }
                Some(Duration::ZERO)
            } else {
                self.timers
                    .peek()
                    .map(|Reverse((t, _))| t.saturating_duration_since(Instant::now()))
            };
            if let Err(e) = poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!("poll failed: {e}");
                    break;
                }
            }
            if !events.is_empty() {
                let gap = last_busy.elapsed().min(GAP_SAMPLE_CAP);
                avg_gap = (avg_gap * 7 + gap) / 8;
                last_busy = Instant::now();
            }
            for ev in events.iter() {
                if ev.token() != WAKER {
                    self.on_event(
                        ev.token(),
                        ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                        ev.is_writable(),
                    );
                }
            }
            for token in std::mem::take(&mut self.again) {
                self.on_event(token, true, false);
            }
            // Timers first: what they defer runs in this turn's task queue
            // (the broker does not wake itself for its own tasks).
            self.run_timers();
            self.run_tasks();
            if self.shared.stop.load(Ordering::Acquire) {
                break;
            }
        }
        self.run_tasks();
        // Everything still connected dies with the broker, so no waiter hangs.
        let streams: Vec<Arc<Stream>> = self
            .sources
            .values()
            .filter_map(|s| match s {
                Source::StreamRx(st) => Some(st.clone()),
                _ => None,
            })
            .collect();
        for s in streams {
            self.disconnect(&s);
        }
        self.sources.clear();
    }

    fn run_tasks(&mut self) {
        loop {
            let tasks =
                std::mem::take(&mut *self.shared.tasks.lock().unwrap_or_else(|e| e.into_inner()));
            if tasks.is_empty() {
                return;
            }
            for t in tasks {
                t(self);
            }
        }
    }

    fn run_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((t, id))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            if let Some(task) = self.timer_tasks.remove(&id) {
                task(self);
            }
        }
    }

    fn on_event(&mut self, token: Token, readable: bool, writable: bool) {
        let Some(source) = self.sources.get_mut(&token) else {
            return;
        };
        match source {
            Source::StreamRx(stream) => {
                let stream = stream.clone();
                if writable && stream.on_transmit() == SendStatus::Disconnected {
                    self.disconnect(&stream);
                    return;
                }
                if readable {
                    self.on_receive(token, &stream);
                }
            }
            Source::StreamTx(stream) => {
                let stream = stream.clone();
                if stream.on_transmit() == SendStatus::Disconnected {
                    self.disconnect(&stream);
                }
            }
            Source::RelayPipe(stream, rx_token) => {
                let (stream, rx_token) = (stream.clone(), *rx_token);
                self.on_receive(rx_token, &stream);
            }
            Source::Log(logger) => {
                let done = logger.on_readable(&self.router);
                if done {
                    if let Some(Source::Log(l)) = self.sources.remove(&token) {
                        let raw = l.as_raw_fd();
                        let _ = self.shared.registry.deregister(&mut SourceFd(&raw));
                    }
                }
            }
            Source::Process(watch) => {
                if watch.on_readable() {
                    if let Some(Source::Process(w)) = self.sources.remove(&token) {
                        let raw = w.as_raw_fd();
                        let _ = self.shared.registry.deregister(&mut SourceFd(&raw));
                    }
                }
            }
        }
    }

    /// Reads what `stream` has, routing every complete message.
    fn on_receive(&mut self, token: Token, stream: &Arc<Stream>) {
        // A thread waiting on this stream may be reading it itself; then the
        // data is its to route (see `Stream::lead`).
        let Some(mut reader) = stream.try_reader() else {
            return;
        };
        for _ in 0..READS_PER_TURN {
            match pump(stream, &mut reader, &self.router) {
                Pumped::Progress => {}
                // A stalled relay also waits for its pipe: `RelayPipe`.
                Pumped::WouldBlock | Pumped::Stalled | Pumped::Held => return,
                Pumped::Ended => {
                    drop(reader);
                    self.disconnect(stream);
                    return;
                }
            }
        }
        self.again.push(token);
    }

    /// Reads `stream` again after a pause (see `RouterInner::hold`): its
    /// descriptor reports readiness only on new data, and some may wait.
    pub(crate) fn resume_reading(&mut self, stream: &Arc<Stream>) {
        let token = self.sources.iter().find_map(|(t, s)| match s {
            Source::StreamRx(st) if Arc::ptr_eq(st, stream) => Some(*t),
            _ => None,
        });
        if let Some(token) = token {
            self.on_receive(token, stream);
        }
    }

    /// Tears down `stream` and tells the router, which fails everything that
    /// was waiting on it.
    pub(crate) fn disconnect(&mut self, stream: &Arc<Stream>) {
        self.sources.retain(|_, s| match s {
            Source::StreamRx(st) | Source::StreamTx(st) | Source::RelayPipe(st, _) => {
                !Arc::ptr_eq(st, stream)
            }
            _ => true,
        });
        stream.deregister();
        if stream.mark_dead() {
            self.router.clone().on_disconnect(stream);
        }
    }
}
