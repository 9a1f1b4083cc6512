//! How `copy` and `fetch` go through their targets under `-j N`: the
//! targets are cut into *jobs* (those with one first hop together: for
//! `copy` all of them, so that `push_all` stages the bytes once on a shared
//! hop whatever N is, and bounds its own pushes to N at once; for `fetch`
//! in runs of at most N), and jobs run in a window of N target slots
//! ([`Window`]; a job of more than N takes all N). A job connects its
//! targets, at most N at once (a target that is another's hop first, so the
//! other runs through it), moves the files in a thread per group, and sends
//! each target's report as soon as its group is done.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Mutex, PoisonError};

use mitogen::{Context, Target};

use super::{Early, Failure, Members, Outcome, TransferReport};
use crate::fleet::holds::{is_a_hop_of_another, Holds};
use crate::fleet::window::{chunks, Window};

/// The jobs of `targets` (indices), in order: targets that begin with the
/// same hop together, all of them when `whole`, else in runs of at most
/// `forks`.
pub fn jobs(targets: &[Target], forks: usize, whole: bool) -> Vec<Vec<usize>> {
    let mut families: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let first = t.prefix(1);
        match families.iter_mut().find(|(k, _)| *k == first) {
            Some((_, members)) => members.push(i),
            None => families.push((first, vec![i])),
        }
    }
    let size = if whole { usize::MAX } else { forks };
    families
        .into_iter()
        .flat_map(|(_, members)| chunks(members, size))
        .collect()
}

/// The members of a group: target indices and their contexts.
type Group = Vec<(usize, Context)>;

/// What every job needs.
pub struct Plan<'a, G, W> {
    /// Every target of the command.
    pub targets: &'a [Target],
    /// Their labels (`#N` added when repeated).
    pub labels: &'a [String],
    /// The hops shared by several targets, held for the whole command.
    pub holds: &'a Holds,
    /// The key of a target's group (`None`: a group of its own).
    pub group_of: G,
    /// What a group does: for each member, its destination and one result
    /// per path.
    pub work: W,
    /// Contexts kept until the command is done: those of targets that are
    /// also a hop of another target, which may run through them later.
    pub kept: Mutex<Vec<(usize, Context)>>,
    /// Targets connecting at once, at most (`-j`).
    pub forks: usize,
}

impl<G, W> Plan<'_, G, W>
where
    G: Fn(&Target) -> Option<String> + Sync,
    W: Fn(Members, Early) -> Vec<(Option<String>, Vec<Outcome>)> + Sync,
{
    /// Runs every job in a window of `forks` slots, sending each target's
    /// report (index, report) to `tx` as it comes.
    pub fn run(&self, jobs: &[Vec<usize>], forks: usize, tx: Sender<(usize, TransferReport)>) {
        let window = Window::new(forks);
        std::thread::scope(|s| {
            for job in jobs {
                let slots = window.take(job.len());
                let tx = tx.clone();
                s.spawn(move || {
                    let _slots = slots;
                    self.job(job, &tx);
                });
            }
        });
    }

    /// Connects the targets of one job, moves the files, reports, and lets
    /// the contexts go.
    fn job(&self, job: &[usize], tx: &Sender<(usize, TransferReport)>) {
        let connected = connect_all(self.targets, job, self.holds, self.forks);
        // (key, members); a `None` key is never shared.
        let mut groups: Vec<(Option<String>, Group)> = Vec::new();
        for (&i, c) in job.iter().zip(connected) {
            match c {
                Ok(ctx) => match (self.group_of)(&self.targets[i]) {
                    Some(key) => match groups.iter_mut().find(|(k, _)| k.as_ref() == Some(&key)) {
                        Some((_, members)) => members.push((i, ctx)),
                        None => groups.push((Some(key), vec![(i, ctx)])),
                    },
                    None => groups.push((None, vec![(i, ctx)])),
                },
                Err(e) => {
                    let report = TransferReport::new(self.labels[i].clone(), None, vec![Err(e)]);
                    let _ = tx.send((i, report));
                }
            }
        }
        std::thread::scope(|s| {
            for (_, members) in &groups {
                s.spawn(move || {
                    // A report handed in early goes out at once; the one
                    // sent for it below is then dropped by the printer's
                    // loop (the first report of a target is the one kept).
                    let early = |k: usize, dest: Option<String>, results: Vec<Outcome>| {
                        if let Some((i, _)) = members.get(k) {
                            let report =
                                TransferReport::new(self.labels[*i].clone(), dest, results);
                            let _ = tx.send((*i, report));
                        }
                    };
                    let mut results = (self.work)(members, &early);
                    results.resize_with(members.len(), || (None, vec![Err(super::thread_died())]));
                    for ((i, _), (dest, results)) in members.iter().zip(results) {
                        let report = TransferReport::new(self.labels[*i].clone(), dest, results);
                        let _ = tx.send((*i, report));
                    }
                });
            }
        });
        // Every file of the job is in: each context is told to go, and not
        // waited for, deepest first so that each goes on its own; those
        // another target may still run through stay until the end.
        let mut contexts: Vec<(usize, Context)> = groups.into_iter().flat_map(|(_, m)| m).collect();
        contexts.sort_by_key(|(i, _)| std::cmp::Reverse(self.targets[*i].hops().len()));
        for (i, c) in contexts {
            let depth = self.targets[i].hops().len();
            if is_a_hop_of_another(self.targets, i) {
                self.kept
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((depth, c));
            } else {
                c.dismiss();
            }
        }
    }
}

/// Connects the targets `job` (indices), at most `forks` at once (sshd's
/// `MaxStartups` refuses some of a larger burst of logins to one host),
/// except that a target that is a hop of another (`web1` and `web1/sudo`) is
/// connected first, so that the other runs through it (the library shares a
/// target as a hop only once it is up); shared hops are connected once by
/// `holds`.
fn connect_all(
    targets: &[Target],
    job: &[usize],
    holds: &Holds,
    forks: usize,
) -> Vec<Result<Context, Failure>> {
    let text: Vec<String> = job.iter().map(|&i| targets[i].to_string()).collect();
    let depth = |k: usize| targets[job[k]].hops().len();
    let mut wave = vec![0usize; job.len()];
    // By depth, so that a prefix's wave is known before its users'.
    let mut order: Vec<usize> = (0..job.len()).collect();
    order.sort_by_key(|&k| depth(k));
    for &k in &order {
        wave[k] = order
            .iter()
            .filter(|&&j| depth(j) < depth(k) && targets[job[k]].prefix(depth(j)) == text[j])
            .map(|&j| wave[j] + 1)
            .max()
            .unwrap_or(0);
    }
    let mut out: Vec<Option<Result<Context, Failure>>> = job.iter().map(|_| None).collect();
    for w in 0..=wave.iter().copied().max().unwrap_or(0) {
        let these: Vec<usize> = (0..job.len()).filter(|&k| wave[k] == w).collect();
        let connected = bounded(
            forks,
            &these,
            |&k| holds.connect(&targets[job[k]]),
            || Err(super::thread_died()),
        );
        for (k, c) in these.into_iter().zip(connected) {
            out[k] = Some(c);
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(super::thread_died())))
        .collect()
}

/// `f` of each of `items`, in order, at most `limit` at once: as many
/// threads, each taking the next item as it finishes one, so that a slow
/// login holds one of them, not a batch. An item whose thread panicked is
/// `died()` (the thread's other items go to the others).
fn bounded<T: Sync, R: Send>(
    limit: usize,
    items: &[T],
    f: impl Fn(&T) -> R + Sync,
    died: impl Fn() -> R,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let out: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..limit.clamp(1, items.len().max(1)))
            .map(|_| {
                s.spawn(|| loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(k) else { break };
                    let r = f(item);
                    *out[k].lock().unwrap_or_else(PoisonError::into_inner) = Some(r);
                })
            })
            .collect();
        // Joined here, so that a panic is this item's failure, not the
        // command's.
        for w in workers {
            let _ = w.join();
        }
    });
    out.into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(PoisonError::into_inner)
                .unwrap_or_else(&died)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_keep_a_first_hop_together_up_to_the_limit() {
        let t: Vec<Target> = ["b/w1", "web1", "b/w2", "web1/sudo", "b/w3", "local"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            jobs(&t, 2, false),
            [vec![0, 2], vec![4], vec![1, 3], vec![5]]
        );
        assert_eq!(jobs(&t, 10, false), [vec![0, 2, 4], vec![1, 3], vec![5]]);
        // copy's: a first hop's targets in one job whatever the limit.
        assert_eq!(jobs(&t, 2, true), [vec![0, 2, 4], vec![1, 3], vec![5]]);
    }

    #[test]
    fn bounded_runs_at_most_the_limit_at_once_and_keeps_order() {
        let (now, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let items: Vec<u32> = (0..7).collect();
        let out = bounded(
            3,
            &items,
            |&n| {
                let v = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(v, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(30));
                now.fetch_sub(1, Ordering::SeqCst);
                if n == 4 {
                    panic!("a login that panics");
                }
                n * 2
            },
            || 999,
        );
        assert_eq!(out, [0, 2, 4, 6, 999, 10, 12]);
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }
}
