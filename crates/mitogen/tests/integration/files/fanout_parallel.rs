//! `push_all`'s parallel fan-out: a hop serving several targets pushes to
//! them at most `FileOptions::fan_out` at once, a target that fails fails
//! alone, and each result comes back as it is known.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use mitogen::files::{push_all_each, FileErrorKind, FileOptions};
use mitogen::{Error, Router};

use super::{pattern, Scratch};

/// Moves the context it runs in to `dir`, so that a relative destination
/// names a place of its own.
#[mitogen::remote]
pub fn chdir(dir: String) -> Result<(), String> {
    std::env::set_current_dir(&dir).map_err(|e| format!("{dir}: {e}"))
}

/// How many of `pids` have a file open below `dir` (a file being received:
/// an `O_TMPFILE` reads `dir/…/#N (deleted)`, a named one `.mitogen-…`).
fn receiving(pids: &[u32], dir: &Path) -> usize {
    let below = format!("{}/", dir.display());
    pids.iter()
        .filter(|pid| {
            let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                return false;
            };
            fds.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .any(|l| l.to_string_lossy().starts_with(&below))
        })
        .count()
}

/// Five contexts behind one intermediate (`local/local`, shared), each in a
/// directory of its own, `fan_out` 2: the intermediate receives the 24 MiB
/// file once and pushes it on, two at a time (never three; both at once
/// for a while, where pushing one after another never has two); the middle
/// one, whose destination directory is missing, fails alone with
/// `NoDestinationDir`, and the four others have the whole file. Each result
/// is told (`push_all_each`) as the hop sends it, the first before the last
/// target has its copy.
pub fn a_hop_pushes_to_its_targets_fan_out_at_once(router: &Router) -> Result<()> {
    let s = Scratch::new("fanout-parallel")?;
    let size = 24 * 1024 * 1024;
    std::fs::write(s.join("src"), pattern(size))?;
    let targets: Vec<_> = (0..5)
        .map(|_| router.connect("local/local"))
        .collect::<Result<_, _>>()?;
    let mut pids = Vec::new();
    for (k, t) in targets.iter().enumerate() {
        let home = s.join(format!("t{k}"));
        std::fs::create_dir(&home)?;
        if k != 2 {
            std::fs::create_dir(home.join("sub"))?;
        }
        t.call(chdir, (home.display().to_string(),))?;
        pids.push(t.call(crate::calls::pid, ())?);
    }
    let mut opts = FileOptions::default();
    opts.update = false;
    opts.fan_out = 2;
    let (stop, peak) = (AtomicBool::new(false), AtomicUsize::new(0));
    let told = Mutex::new(Vec::new());
    let results = std::thread::scope(|sc| {
        sc.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(receiving(&pids, &s.0), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let r = push_all_each(&targets, s.join("src"), "sub/copy", &opts, |k, r| {
            // Whether the last target had its copy yet when this was told.
            let last = s.join("t4/sub/copy").exists();
            told.lock().unwrap().push((k, r.is_ok(), last));
        });
        stop.store(true, Ordering::Relaxed);
        r
    });
    let peak = peak.load(Ordering::Relaxed);
    ensure!(
        peak == 2,
        "at most {peak} targets were receiving at once (fan_out 2)"
    );
    // Each result was told once, as the hop sent it: the first long before
    // the last target had its copy.
    let told = told.into_inner().unwrap();
    let mut order: Vec<usize> = told.iter().map(|t| t.0).collect();
    order.sort();
    ensure!(order == [0, 1, 2, 3, 4], "told {told:?}");
    ensure!(
        !told[0].2,
        "the first result was told only at the end: {told:?}"
    );
    for &(k, ok, _) in &told {
        ensure!(ok == (k != 2) && ok == results[k].is_ok(), "told {told:?}");
    }
    for (k, r) in results.into_iter().enumerate() {
        let copy = s.join(format!("t{k}/sub/copy"));
        if k == 2 {
            match r {
                Err(Error::File(f)) if f.kind == FileErrorKind::NoDestinationDir => {}
                r => anyhow::bail!("the target without sub/: {r:?}"),
            }
            ensure!(!copy.exists(), "{copy:?}");
            continue;
        }
        let t = r.with_context(|| format!("target {k}"))?;
        ensure!(t.files == 1 && t.bytes == size as u64, "target {k}: {t:?}");
        ensure!(
            std::fs::read(&copy)? == pattern(size),
            "content of {copy:?}"
        );
    }
    for t in targets {
        t.shutdown()?;
    }
    Ok(())
}

/// A hostile target behind a hop that stops answering (stopped, SIGSTOP)
/// holds one of the hop's pushes until `idle_timeout` (3 s here), not the
/// others: with `fan_out` 2 and the stopped one first, the three others have
/// their copies and are told well before it times out, and it fails alone
/// as `Interrupted` (one after another, the three waited for it first).
pub fn a_stopped_target_holds_one_push_of_its_hop(router: &Router) -> Result<()> {
    use rustix::process::{kill_process, Pid, Signal};
    let s = Scratch::new("fanout-stopped")?;
    std::fs::write(s.join("src"), pattern(64 * 1024))?;
    let targets: Vec<_> = (0..4)
        .map(|_| router.connect("local/local"))
        .collect::<Result<_, _>>()?;
    for (k, t) in targets.iter().enumerate() {
        let home = s.join(format!("t{k}"));
        std::fs::create_dir_all(home.join("sub"))?;
        t.call(chdir, (home.display().to_string(),))?;
    }
    let stopped = targets[0].call(crate::calls::pid, ())?;
    let stopped = Pid::from_raw(stopped as i32).context("pid")?;
    let mut opts = FileOptions::default();
    opts.fan_out = 2;
    opts.idle_timeout = Duration::from_secs(3);
    kill_process(stopped, Signal::STOP)?;
    let start = std::time::Instant::now();
    let told = Mutex::new(Vec::new());
    let results = push_all_each(&targets, s.join("src"), "sub/copy", &opts, |k, _| {
        told.lock().unwrap().push((k, start.elapsed()));
    });
    kill_process(stopped, Signal::CONT)?;
    let told = told.into_inner().unwrap();
    for &(k, at) in &told {
        ensure!(
            k == 0 || at < Duration::from_millis(2500),
            "target {k} was told after {at:?}, behind the stopped one: {told:?}"
        );
    }
    match &results[0] {
        Err(Error::File(f)) if f.kind == FileErrorKind::Interrupted => {}
        r => anyhow::bail!("the stopped target: {r:?}"),
    }
    for (k, r) in results.iter().enumerate().skip(1) {
        ensure!(r.is_ok(), "target {k}: {r:?}");
        ensure!(std::fs::read(s.join(format!("t{k}/sub/copy")))? == pattern(64 * 1024));
    }
    for t in targets {
        t.shutdown()?;
    }
    Ok(())
}

crate::tests! {
    a_hop_pushes_to_its_targets_fan_out_at_once => 120,
    a_stopped_target_holds_one_push_of_its_hop => 60,
}
