//! Pushing one source to many contexts: contexts behind one shared
//! intermediate get the bytes over the first link once (the original's
//! `PushFileService`).
//!
//! Targets are grouped by the first hop on their route from here. A group
//! of two or more is served through that hop: the source is pushed once
//! into a private staging directory there (mode 0700, removed afterwards),
//! and the hop pushes the staged copy on to each target, grouping again
//! below it, so a deeper tree fans out at every level. The owners the
//! source had travel with the call, so a staging hop that is not root
//! still gives root targets the right owners.
//!
//! At every level the pushes run in parallel, at most
//! [`FileOptions::fan_out`] at once (a group served through a hop counts as
//! one at this level; the hop applies the same bound to its own), so a
//! slow target delays only itself; and each target's result travels back
//! as soon as it is known (a hop sends each on a channel as that push
//! ends), for callers that report targets as they finish.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::remote::here;
use super::wire::Reply;
use super::{transfer, FileOptions, Transfer};
use crate::core::channel::Sender;
use crate::core::context::Context;
use crate::core::error::{Error, Result};
use crate::core::file_error::{FileError, FileErrorKind};
use crate::core::message::ContextId;
use crate::core::router::{current_inner, RouterInner};

/// Owners of the source's entries, by path below its root.
pub(crate) type Owners = HashMap<Vec<u8>, (u32, u32)>;

/// The first hop below `router` on the way to `id` (`id` itself for a
/// direct child).
fn first_hop(router: &RouterInner, id: ContextId) -> ContextId {
    let mut at = id;
    for _ in 0..64 {
        match router.parent_of(at) {
            Some(p) if p != router.id => at = p,
            _ => break,
        }
    }
    at
}

/// What one worker of [`push_all`] does: push to one target directly, or
/// through a shared hop to a group of them.
enum Job {
    Direct(usize),
    Through(ContextId, Vec<usize>),
}

/// Told each target's index and result as soon as it is known.
pub(crate) type OnDone<'a> = &'a (dyn Fn(usize, &Result<Transfer>) + Sync);

pub(crate) fn push_all(
    targets: &[Context],
    src: &Path,
    dst: &Path,
    opts: &FileOptions,
    owners: Option<&Owners>,
    on_done: OnDone<'_>,
) -> Vec<Result<Transfer>> {
    let mut jobs: Vec<Job> = Vec::new();
    let mut groups: BTreeMap<ContextId, Vec<usize>> = BTreeMap::new();
    for (i, t) in targets.iter().enumerate() {
        let hop = first_hop(&t.router(), t.id());
        if hop == t.id() {
            jobs.push(Job::Direct(i));
        } else {
            groups.entry(hop).or_default().push(i);
        }
    }
    for (hop, members) in groups {
        match members[..] {
            [i] => jobs.push(Job::Direct(i)),
            _ => jobs.push(Job::Through(hop, members)),
        }
    }
    let push = |i: usize| {
        let r = transfer::push(&targets[i], src, dst, opts, owners);
        on_done(i, &r);
        (i, r)
    };
    let done = bounded(opts.fan_out, &jobs, |job| match job {
        Job::Direct(i) => vec![push(*i)],
        Job::Through(hop, members) => {
            let router = targets[members[0]].router();
            let via = Context::new(router.clone(), *hop, &router.name_of(*hop), None);
            let ids: Vec<ContextId> = members.iter().map(|&i| targets[i].id()).collect();
            // Results the hop sent as each target finished, told at once;
            // the first for a member is the one that counts.
            let early: Vec<Mutex<Option<Result<Transfer>>>> =
                members.iter().map(|_| Mutex::new(None)).collect();
            let tell = |k: usize, r: Result<Transfer>| {
                let (Some(&i), Some(slot)) = (members.get(k), early.get(k)) else {
                    return;
                };
                let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
                if slot.is_none() {
                    on_done(i, &r);
                    *slot = Some(r);
                }
            };
            let answer = through(&via, src, dst, opts, owners, &ids, &tell);
            if let Err(e) = &answer {
                // The hop could not stage, or went away: each target it
                // did not serve is served directly, one after another, so
                // that this job still counts as one push against the bound.
                tracing::debug!(hop = %via.name(), error = %e, "fan-out through a hop failed; pushing directly");
            }
            let mut answer = answer.ok().map(Vec::into_iter);
            members
                .iter()
                .zip(early)
                .map(|(&i, early)| {
                    let from_hop = answer.as_mut().and_then(Iterator::next);
                    match early.into_inner().unwrap_or_else(PoisonError::into_inner) {
                        Some(r) => (i, r),
                        None => match from_hop {
                            Some(r) => {
                                let r = r.0.map_err(Error::File);
                                on_done(i, &r);
                                (i, r)
                            }
                            None => push(i),
                        },
                    }
                })
                .collect()
        }
    });
    let mut results: Vec<Option<Result<Transfer>>> = targets.iter().map(|_| None).collect();
    for (i, r) in done.into_iter().flatten() {
        results[i] = Some(r);
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or(Err(Error::RouterShutdown)))
        .collect()
}

/// `f` of each of `items`, in order, at most `limit` at once (at least
/// one): as many scoped threads, each taking the next item as it finishes
/// one, so that a slow target holds one of them, not a whole batch. One
/// item, or a limit of one, runs on the calling thread.
fn bounded<T: Sync, R: Send>(limit: usize, items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = limit.clamp(1, items.len().max(1));
    if workers == 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let out: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(k) else { break };
                let r = f(item);
                *out[k].lock().unwrap_or_else(PoisonError::into_inner) = Some(r);
            });
        }
    });
    // A worker that panicked left its item empty: the scope re-raises the
    // panic before this point, as a serial loop would have.
    out.into_iter()
        .filter_map(|m| m.into_inner().unwrap_or_else(PoisonError::into_inner))
        .collect()
}

/// Stages `src` in `via` and has it push the copy to `ids`, telling `tell`
/// each target's result (by its place in `ids`) as the hop sends it.
fn through(
    via: &Context,
    src: &Path,
    dst: &Path,
    opts: &FileOptions,
    owners: Option<&Owners>,
    ids: &[ContextId],
    tell: &dyn Fn(usize, Result<Transfer>),
) -> Result<Vec<Reply<Transfer>>> {
    let stage = via.call_timeout(files_stage, (), opts.idle_timeout)?.0?;
    let staged = PathBuf::from(OsStr::from_bytes(&stage)).join("copy");
    let mut staging = opts.clone();
    staging.update = false;
    let pushed = transfer::push(via, src, &staged, &staging, owners).and_then(|_| {
        let own = match owners {
            Some(o) => o.clone(),
            None => super::scan::owners(src)?,
        };
        let dst = dst.as_os_str().as_bytes().to_vec();
        let staged = staged.as_os_str().as_bytes().to_vec();
        let (each_tx, each_rx) = via.channel::<(u32, Reply<Transfer>)>();
        let pending = via.call_async(
            files_fan_out,
            (staged, dst, opts.clone(), own, ids.to_vec(), each_tx),
        );
        // One result per target, then the hop closes the channel (or goes
        // away, which ends the wait too).
        for _ in ids {
            match each_rx.recv() {
                Ok((k, r)) => tell(k as usize, r.0.map_err(Error::File)),
                Err(_) => break,
            }
        }
        // The hop's own transfers have their own deadlines; this one only
        // bounds the whole.
        match via.router().call_timeout.get() {
            Some(t) => pending.get_timeout(*t),
            None => pending.get(),
        }
    });
    let _ = via.call_timeout(files_unstage, stage, opts.idle_timeout);
    pushed
}

/// A private directory to stage a fan-out in.
#[crate::remote]
pub(crate) fn files_stage() -> Reply<Vec<u8>> {
    Reply((|| {
        let mut b = [0u8; 8];
        let _ = crate::sys::random_bytes(&mut b);
        let dir =
            std::env::temp_dir().join(format!("mitogen-stage-{:016x}", u64::from_le_bytes(b)));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| {
                FileError::new(
                    FileError::kind_of(&e),
                    here(),
                    dir.display().to_string(),
                    e.to_string(),
                )
            })?;
        Ok(dir.into_os_string().into_encoded_bytes())
    })())
}

use std::os::unix::fs::DirBuilderExt;

/// Removes a staging directory made by [`files_stage`].
#[crate::remote]
pub(crate) fn files_unstage(dir: Vec<u8>) {
    let p = Path::new(OsStr::from_bytes(&dir));
    // Only what files_stage makes is removed.
    let ours = p.parent() == Some(std::env::temp_dir().as_path())
        && p.file_name()
            .is_some_and(|n| n.as_bytes().starts_with(b"mitogen-stage-"));
    if ours {
        let _ = std::fs::remove_dir_all(p);
    }
}

/// Closes a channel when dropped, however the function holding it ends.
struct Closing<'a>(&'a Sender<(u32, Reply<Transfer>)>);

impl Drop for Closing<'_> {
    fn drop(&mut self) {
        let _ = self.0.close();
    }
}

/// A result as it travels back from a hop: a file error, or the transport's
/// error said as one about `dst`.
fn reply(r: &Result<Transfer>, dst: &Path) -> Reply<Transfer> {
    Reply(match r {
        Ok(t) => Ok(t.clone()),
        Err(Error::File(f)) => Err(f.clone()),
        Err(e) => Err(FileError::new(
            FileErrorKind::Interrupted,
            here(),
            dst.display().to_string(),
            e.to_string(),
        )),
    })
}

/// Pushes a staged copy on to contexts below this one, sending each
/// target's result on `each` (by its place in `ids`) as it finishes, and
/// closing it after the last.
#[crate::remote]
pub(crate) fn files_fan_out(
    staged: Vec<u8>,
    dst: Vec<u8>,
    opts: FileOptions,
    owners: Owners,
    ids: Vec<ContextId>,
    each: Sender<(u32, Reply<Transfer>)>,
) -> Vec<Reply<Transfer>> {
    let _closing = Closing(&each);
    let Some(router): Option<Arc<RouterInner>> = current_inner() else {
        return ids
            .iter()
            .map(|_| {
                Reply(Err(FileError::new(
                    FileErrorKind::Interrupted,
                    here(),
                    "",
                    "shutting down",
                )))
            })
            .collect();
    };
    let targets: Vec<Context> = ids
        .iter()
        .map(|&id| Context::new(router.clone(), id, &router.name_of(id), None))
        .collect();
    let (src, dst) = (
        Path::new(OsStr::from_bytes(&staged)),
        Path::new(OsStr::from_bytes(&dst)),
    );
    let sent = |i: usize, r: &Result<Transfer>| {
        let _ = each.send((i as u32, reply(r, dst)));
    };
    push_all(&targets, src, dst, &opts, Some(&owners), &sent)
        .iter()
        .map(|r| reply(r, dst))
        .collect()
}
