//! Hops shared between targets: `bastion/web1` and `bastion/web2` connected
//! with the same options run through one `bastion`, which is shut down when
//! the last context below it goes, unless the program connected it itself.
//!
//! Every hop [`Router::connect`](crate::Router::connect) starts is recorded
//! under a [`HopKey`] (the target's hops up to it, with the options). A hop it
//! started on its own, as the way to a later one, counts its *users*: the
//! contexts started directly below it. Each user holds a *lease* on it, which
//! ends once: when the user is shut down or disconnects, whichever comes
//! first. A hop whose last lease ends is shut down, which ends its own lease
//! on the hop above it, and so on up the chain. The target's own last hop is
//! the program's: recorded too (so that a later target can run through it),
//! it is never shut down by the table.
//!
//! Locking: the table's map and index locks are held only for a lookup. A
//! hop's cell lock is held while that hop starts, so that two threads asking
//! for it start it once; a thread holding one cell may wait for the cell of a
//! hop nearer the master, never the other way round.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use super::connect_options::ConnectOptions;
use crate::core::context::Context;
use crate::core::error::Result;
use crate::core::message::ContextId;
use crate::core::router::RouterInner;
use crate::core::secret::Secret;
use crate::target::Hop;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What makes two hops the same hop: the same hops from the master down to
/// it, started with the same options (a different ssh option, config file,
/// time-out or password is a different hop).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct HopKey {
    hops: Vec<Hop>,
    ssh_config: Option<PathBuf>,
    ssh_options: Vec<String>,
    connect_timeout: Option<Duration>,
    /// A keyed digest of each hop's own password, from the master down:
    /// equal passwords give equal keys, and the table keeps no copy of a
    /// password itself.
    passwords: Vec<Option<[u8; 32]>>,
}

/// A hop in the table.
pub(crate) struct Entry {
    ctx: Context,
    state: Mutex<EntryState>,
}

struct EntryState {
    /// Leases held on this hop by the contexts directly below it.
    users: usize,
    /// The program connected this hop itself: the table never shuts it down.
    program_owned: bool,
    /// Shut down (or being shut down) by the table: takes no new users.
    closed: bool,
}

impl Entry {
    /// The hop's context.
    pub(crate) fn context(&self) -> &Context {
        &self.ctx
    }

    /// Takes one more user, unless the hop is gone or going.
    fn reserve(&self) -> bool {
        let mut st = lock(&self.state);
        if st.closed || self.ctx.is_disconnected() {
            return false;
        }
        st.users += 1;
        true
    }

    fn alive(&self) -> bool {
        !lock(&self.state).closed && !self.ctx.is_disconnected()
    }
}

/// The slot of one key: the hop under that key, if any.
type Cell = Arc<Mutex<Option<Arc<Entry>>>>;

#[derive(Default)]
struct Index {
    /// The shared hop each context holds a lease on.
    leases: HashMap<ContextId, Arc<Entry>>,
    /// The key of every context recorded in a cell.
    keys: HashMap<ContextId, HopKey>,
    /// Contexts whose `shutdown` is running: it ends their lease itself, so
    /// the disconnect observer leaves them alone.
    closing: HashSet<ContextId>,
}

/// The table of hops `Router::connect` shares; one per router.
#[derive(Default)]
pub(crate) struct SharedHops {
    cells: Mutex<HashMap<HopKey, Cell>>,
    index: Mutex<Index>,
    digest_key: OnceLock<[u8; 32]>,
    watching: OnceLock<()>,
}

/// 32 random bytes from the standard library's per-process random hash keys
/// (no other source of randomness is needed for this).
fn random_key() -> [u8; 32] {
    let state = RandomState::new();
    let mut key = [0u8; 32];
    for (i, chunk) in key.chunks_mut(8).enumerate() {
        let mut h = state.build_hasher();
        h.write_usize(i);
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    key
}

impl SharedHops {
    /// The table of `router`, made on first use (a router's hooks are only
    /// ever this table).
    pub(crate) fn of(router: &RouterInner) -> &SharedHops {
        let hooks = router.hooks.get_or_init(|| Arc::new(SharedHops::default()));
        let hooks: &dyn std::any::Any = &**hooks;
        match hooks.downcast_ref::<SharedHops>() {
            Some(table) => table,
            None => unreachable!("a router's context hooks are its shared hops"),
        }
    }

    /// The key of the hop reached by `hops` with `options`.
    pub(crate) fn key(
        &self,
        hops: &[Hop],
        options: &ConnectOptions,
        passwords: &[Option<Secret>],
    ) -> HopKey {
        let passwords = passwords
            .iter()
            .map(|p| {
                p.as_ref().map(|p| {
                    let key = self.digest_key.get_or_init(random_key);
                    *blake3::keyed_hash(key, p.expose()).as_bytes()
                })
            })
            .collect();
        HopKey {
            hops: hops.to_vec(),
            ssh_config: options.ssh_config.clone(),
            ssh_options: options.ssh_options.clone(),
            connect_timeout: options.connect_timeout,
            passwords,
        }
    }

    fn cell(&self, key: &HopKey) -> Cell {
        lock(&self.cells).entry(key.clone()).or_default().clone()
    }

    /// Starts watching the router's disconnects (once): a hop or user that
    /// dies ends its lease, and a dead hop leaves the table.
    pub(crate) fn watch(&self, router: &Arc<RouterInner>) {
        self.watching.get_or_init(|| {
            let weak = Arc::downgrade(router);
            router
                .signals
                .disconnect
                .connect(move |(id, _): &(ContextId, String)| {
                    let Some(router) = weak.upgrade() else { return };
                    if !SharedHops::of(&router).concerns(*id) {
                        return;
                    }
                    // Ending a lease may shut a hop down, which waits: not on
                    // the broker thread.
                    let id = *id;
                    let spawned = std::thread::Builder::new()
                        .name("mitogen-hop-release".into())
                        .spawn(move || SharedHops::of(&router).gone(&router, id));
                    if let Err(e) = spawned {
                        tracing::warn!("cannot release the hops of context {id}: {e}");
                    }
                })
                .forever();
        });
    }

    /// True when `id` holds a lease or is in the table, and no `shutdown` of
    /// it is taking care of that already.
    fn concerns(&self, id: ContextId) -> bool {
        let index = lock(&self.index);
        !index.closing.contains(&id)
            && (index.leases.contains_key(&id) || index.keys.contains_key(&id))
    }

    /// Notes that `shutdown` of `id` has begun (it calls [`gone`](Self::gone)
    /// when done).
    pub(crate) fn closing(&self, id: ContextId) {
        let mut index = lock(&self.index);
        if index.leases.contains_key(&id) || index.keys.contains_key(&id) {
            index.closing.insert(id);
        }
    }

    /// The hop under `keys[i]` with one user reserved on it, starting it
    /// (and the hops above it) with `start(via, i)` if it is not up.
    pub(crate) fn acquire(
        &self,
        router: &Arc<RouterInner>,
        keys: &[HopKey],
        i: usize,
        start: &mut dyn FnMut(Option<&Context>, usize) -> Result<Context>,
    ) -> Result<Arc<Entry>> {
        let cell = self.cell(&keys[i]);
        let mut slot = lock(&cell);
        if let Some(e) = slot.as_ref() {
            if e.reserve() {
                return Ok(e.clone());
            }
        }
        let parent = match i {
            0 => None,
            _ => Some(self.acquire(router, keys, i - 1, start)?),
        };
        match start(parent.as_ref().map(|p| p.context()), i) {
            Ok(ctx) => {
                let entry = Arc::new(Entry {
                    ctx: ctx.clone(),
                    state: Mutex::new(EntryState {
                        users: 1,
                        program_owned: false,
                        closed: false,
                    }),
                });
                *slot = Some(entry.clone());
                drop(slot);
                lock(&self.index).keys.insert(ctx.id(), keys[i].clone());
                if let Some(p) = parent {
                    self.lease(router, &ctx, p);
                }
                Ok(entry)
            }
            Err(e) => {
                drop(slot);
                if let Some(p) = parent {
                    self.release(router, &p);
                }
                Err(e)
            }
        }
    }

    /// Records the outcome of starting the target's last hop below `parent`:
    /// a context is leased on `parent` and recorded as the program's under
    /// `key`; a failure gives `parent` back (which shuts it down if nothing
    /// else uses it).
    pub(crate) fn finish_connect(
        &self,
        router: &Arc<RouterInner>,
        key: &HopKey,
        parent: Option<Arc<Entry>>,
        started: Result<Context>,
    ) -> Result<Context> {
        let ctx = match started {
            Ok(ctx) => ctx,
            Err(e) => {
                if let Some(p) = parent {
                    self.release(router, &p);
                }
                return Err(e);
            }
        };
        {
            let cell = self.cell(key);
            let mut slot = lock(&cell);
            if !slot.as_ref().is_some_and(|e| e.alive()) {
                *slot = Some(Arc::new(Entry {
                    ctx: ctx.clone(),
                    state: Mutex::new(EntryState {
                        users: 0,
                        program_owned: true,
                        closed: false,
                    }),
                }));
                drop(slot);
                lock(&self.index).keys.insert(ctx.id(), key.clone());
            }
        }
        if let Some(p) = parent {
            self.lease(router, &ctx, p);
        }
        Ok(ctx)
    }

    /// `user` is below `on` and keeps it up until it goes.
    fn lease(&self, router: &Arc<RouterInner>, user: &Context, on: Arc<Entry>) {
        lock(&self.index).leases.insert(user.id(), on);
        // It may have died before the lease was recorded, when the observer
        // found nothing to do.
        if user.is_disconnected() {
            self.gone(router, user.id());
        }
    }

    /// Gives back one user of `entry`; the last one out shuts it down.
    fn release(&self, router: &Arc<RouterInner>, entry: &Arc<Entry>) {
        {
            let mut st = lock(&entry.state);
            st.users = st.users.saturating_sub(1);
            if st.users > 0 || st.program_owned || st.closed {
                return;
            }
            st.closed = true;
        }
        self.forget(entry.ctx.id());
        if router.is_shut_down() {
            // The router's own shutdown ends every context.
            return;
        }
        tracing::debug!(context = %entry.ctx.name(), "last context below it gone; shutting it down");
        // Its shutdown calls `gone`, which ends its lease on the hop above.
        if let Err(e) = entry.ctx.shutdown() {
            tracing::warn!("shared hop: {e}");
        }
    }

    /// Removes `id` from its cell, if it is still there.
    fn forget(&self, id: ContextId) {
        let Some(key) = lock(&self.index).keys.remove(&id) else {
            return;
        };
        let cell = self.cell(&key);
        let mut slot = lock(&cell);
        if slot.as_ref().is_some_and(|e| e.ctx.id() == id) {
            *slot = None;
        }
        if slot.is_none() {
            // An empty cell nobody else holds goes, so that the table keeps
            // nothing of targets whose contexts are all gone. The map's lock
            // is never held while waiting for a cell, so taking it here is
            // safe; holding it, no one can pick the cell up meanwhile.
            let mut cells = lock(&self.cells);
            if Arc::strong_count(&cell) == 2 {
                cells.remove(&key);
            }
        }
    }

    /// Context `id` is shut down or gone: it leaves the table, and its lease
    /// on the hop above it ends.
    pub(crate) fn gone(&self, router: &Arc<RouterInner>, id: ContextId) {
        let lease = {
            let mut index = lock(&self.index);
            index.closing.remove(&id);
            index.leases.remove(&id)
        };
        self.forget(id);
        if let Some(on) = lease {
            self.release(router, &on);
        }
    }

    /// Records the table holds: cells, leases, keys and shutdowns in
    /// progress (for tests that check it keeps nothing of contexts gone).
    pub(crate) fn records(&self) -> usize {
        let cells = lock(&self.cells).len();
        let index = lock(&self.index);
        cells + index.leases.len() + index.keys.len() + index.closing.len()
    }

    /// Empties the table (the router is shutting down and ends every
    /// context itself); drops the contexts it held.
    pub(crate) fn clear(&self) {
        let cells: Vec<Cell> = lock(&self.cells).drain().map(|(_, c)| c).collect();
        for c in cells {
            lock(&c).take();
        }
        *lock(&self.index) = Index::default();
    }
}

/// A context's own shutdown ends its lease when done; a context gone ends
/// it now (a hop started for it alone goes too).
impl crate::core::router::ContextHooks for SharedHops {
    fn closing(&self, id: ContextId) {
        SharedHops::closing(self, id);
    }
    fn gone(&self, router: &Arc<RouterInner>, id: ContextId) {
        SharedHops::gone(self, router, id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hops(s: &str) -> Vec<Hop> {
        s.parse::<crate::target::Target>()
            .map(|t| t.hops().to_vec())
            .unwrap_or_default()
    }

    #[test]
    fn each_hops_own_password_is_part_of_its_key() {
        let table = SharedHops::default();
        let options = ConnectOptions::default();
        let path = hops("web1/sudo");
        let pw = |s: &str| Some(Secret::from(s.to_owned()));
        let a = table.key(&path, &options, &[None, pw("Sekret-1")]);
        let b = table.key(&path, &options, &[None, pw("Sekret-1")]);
        let c = table.key(&path, &options, &[None, pw("Sekret-2")]);
        let d = table.key(&path, &options, &[pw("Sekret-1"), None]);
        assert_eq!(a, b, "the same passwords make the same hop");
        assert_ne!(a, c, "another password is another hop");
        assert_ne!(a, d, "a password of another hop is another hop");
        assert!(
            !format!("{a:?}").contains("Sekret"),
            "the key holds no password"
        );
    }
}
