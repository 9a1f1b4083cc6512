//! Services (`mitogen::service`): the services the tests call, defined here
//! once (every context runs this same binary, so each has them), and what
//! the parts share. The tests are in the parts: `policy` (rules judged
//! against real less-trusted callers: a grandchild calling its parent's
//! services, the start rule), `invokers` (serialized order, deduplication),
//! `running` (a long call beside ordinary calls, panics, unknown names,
//! streaming, a constructor that fails), `floods` (what a caller that does
//! not read its answers makes the service's context hold) and `over_ssh`.

pub mod floods;
pub mod invokers;
pub mod over_ssh;
pub mod policy;
pub mod running;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use mitogen::service::{self, Caller};
use mitogen::{CallErrorKind, Error, Router, Sender};

/// Constructions of [`Vault`] in this process.
static VAULT_STARTS: AtomicU64 = AtomicU64::new(0);

/// A service whose methods have each kind of rule; started by parents only
/// (the default).
pub struct Vault {
    secret: u64,
}

impl Default for Vault {
    fn default() -> Self {
        VAULT_STARTS.fetch_add(1, Ordering::SeqCst);
        Vault { secret: 42 }
    }
}

/// Admits callers below the service's context only.
pub fn below_only(caller: &Caller) -> bool {
    caller.is_descendant()
}

#[mitogen::service]
impl Vault {
    /// Parents only (the default rule).
    #[expose]
    pub fn secret(&self) -> u64 {
        self.secret
    }

    /// Any context.
    #[expose(policy = any)]
    pub fn public(&self) -> u64 {
        7
    }

    /// Contexts below this one.
    #[expose(policy = below_only)]
    pub fn below(&self) -> u64 {
        self.secret + 1
    }

    /// Who called, as the method sees it: id, parent authority, below.
    #[expose(policy = any)]
    pub fn who(&self) -> (u32, bool, bool) {
        let c = service::caller().expect("inside a service method");
        (c.id(), c.has_parent_authority(), c.is_descendant())
    }

    /// How often the service was built in this context.
    #[expose(policy = any)]
    pub fn starts(&self) -> u64 {
        VAULT_STARTS.load(Ordering::SeqCst)
    }
}

/// A service any context may start.
#[derive(Default)]
pub struct Board;

#[mitogen::service(start = any)]
impl Board {
    #[expose(policy = any)]
    pub fn hello(&self, name: String) -> String {
        format!("hello {name}")
    }

    /// Parents only, though anyone may start the service.
    #[expose]
    pub fn admin(&self) -> u64 {
        99
    }
}

/// Calls that take a while, on four threads (concurrent).
#[derive(Default)]
pub struct Slow;

#[mitogen::service(threads = 4)]
impl Slow {
    /// Sleeps `ms` (stopping early when cancelled), returns `ms`.
    #[expose]
    pub fn sleep(&self, ms: u64) -> u64 {
        let until = std::time::Instant::now() + Duration::from_millis(ms);
        while std::time::Instant::now() < until && !mitogen::cancelled() {
            std::thread::sleep(Duration::from_millis(5));
        }
        ms
    }
}

/// Records the order its calls ran in, one at a time.
#[derive(Default)]
pub struct Ordered {
    log: Mutex<Vec<u64>>,
}

#[mitogen::service(invoker = serialized)]
impl Ordered {
    /// Sleeps `ms`, then records `i`.
    #[expose]
    pub fn push(&self, i: u64, ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
        self.log.lock().unwrap_or_else(|e| e.into_inner()).push(i);
    }

    #[expose]
    pub fn log(&self) -> Vec<u64> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Computes slowly, counting how often it really ran for each key.
#[derive(Default)]
pub struct Dedup {
    runs: Mutex<HashMap<u64, u64>>,
}

#[mitogen::service(invoker = deduplicated)]
impl Dedup {
    /// `key * 2`, after 500 ms.
    #[expose(policy = any)]
    pub fn compute(&self, key: u64) -> u64 {
        *self
            .runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default() += 1;
        std::thread::sleep(Duration::from_millis(500));
        key * 2
    }

    /// How often `compute(key)` ran.
    #[expose]
    pub fn runs(&self, key: u64) -> u64 {
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .copied()
            .unwrap_or(0)
    }
}

/// Panics on request.
#[derive(Default)]
pub struct Faulty;

#[mitogen::service(threads = 2)]
impl Faulty {
    #[expose]
    pub fn boom(&self, why: String) -> u64 {
        panic!("boom: {why}")
    }

    #[expose]
    pub fn fine(&self) -> u64 {
        1
    }

    /// An error returned, with its cause.
    #[expose]
    pub fn fails(&self) -> std::io::Result<u64> {
        Err(std::io::Error::other("no luck"))
    }
}

/// Streams values into a channel its caller made.
#[derive(Default)]
pub struct Streamer;

#[mitogen::service]
impl Streamer {
    /// Sends `0..n` to `out`, then returns `n`.
    #[expose(policy = any)]
    pub fn count(&self, n: u64, out: Sender<u64>) -> mitogen::Result<u64> {
        for i in 0..n {
            out.send(i)?;
        }
        Ok(n)
    }
}

/// Large answers for any context.
#[derive(Default)]
pub struct Bulk;

#[mitogen::service(start = any, threads = 2)]
impl Bulk {
    /// `n` bytes.
    #[expose(policy = any)]
    pub fn bytes(&self, n: u32) -> Vec<u8> {
        vec![7; n as usize]
    }
}

/// A service whose constructor fails.
pub struct Broken;

impl Broken {
    fn open() -> std::io::Result<Broken> {
        Err(std::io::Error::other("no such device"))
    }
}

#[mitogen::service(new = Broken::open)]
impl Broken {
    #[expose]
    pub fn ping(&self) -> u64 {
        1
    }
}

/// What a call from another context came to: the value, or the error's
/// kind and text.
pub type Outcome = std::result::Result<u64, (Option<CallErrorKind>, String)>;

fn outcome(r: mitogen::Result<u64>) -> Outcome {
    r.map_err(|e| match e {
        Error::Call(c) => (Some(c.kind), c.to_string()),
        other => (None, other.to_string()),
    })
}

/// Calls a method of [`Vault`] (or [`Board`]) in this context's parent, as
/// a less-trusted caller: a child has no authority over its parent.
#[mitogen::remote]
pub fn call_parent(method: String) -> Outcome {
    let parent = Router::current()
        .and_then(|r| r.parent())
        .ok_or((None, "no parent".to_owned()))?;
    let vault = parent.service::<Vault>();
    let timeout = Duration::from_secs(10);
    outcome(match method.as_str() {
        "secret" => vault.call_timeout(Vault::secret, (), timeout),
        "public" => vault.call_timeout(Vault::public, (), timeout),
        "below" => vault.call_timeout(Vault::below, (), timeout),
        "board" => parent
            .service::<Board>()
            .call_timeout(Board::hello, "child", timeout)
            .map(|s| s.len() as u64),
        "board_admin" => parent
            .service::<Board>()
            .call_timeout(Board::admin, (), timeout),
        other => return Err((None, format!("no test method {other}"))),
    })
}

/// The kind of a failed call, for checks.
pub fn kind_of<T: std::fmt::Debug>(r: &mitogen::Result<T>) -> Option<CallErrorKind> {
    match r {
        Err(Error::Call(c)) => Some(c.kind),
        _ => None,
    }
}
