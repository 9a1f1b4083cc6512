//! Detached children: one outlives its master, and exits when its work is
//! done.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use mitogen::Router;

use crate::calls::sleep_ms;
use crate::util::{self, kill9, proc_state, wait_dead};

/// Set in the environment of a copy of this program that starts a child and
/// a grandchild, detaches the child, gives it work (a sleep of the variable's
/// value in milliseconds), prints both pids and exits.
pub const DETACH_ENV: &str = "MITOGEN_TEST_DETACH";

/// `main` of the detaching master.
pub fn detach_main(router: &Router) -> usize {
    let run = || -> mitogen::Result<(u32, u32)> {
        let child = router.local()?;
        let grandchild = router.start(Some(&child), mitogen::Local::new())?;
        let gpid = grandchild.call(mitogen::builtins::getpid, ())?;
        child.detach()?;
        // Work queued after the detach keeps the child (and so its subtree)
        // running once this master has gone.
        let ms = std::env::var(DETACH_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(60_000);
        child.call_no_reply(sleep_ms, (ms,))?;
        Ok((child.pid().unwrap_or(0), gpid))
    };
    match run() {
        Ok((pid, gpid)) => {
            println!("detached {pid} {gpid}");
            0
        }
        Err(e) => {
            println!("error {e}");
            1
        }
    }
}

/// Runs the detaching master with `work_ms` of work for the child; returns
/// the pids of the detached child and grandchild, and the master's pid.
fn run_detaching_master(work_ms: u64) -> Result<(u32, u32, u32)> {
    let exe = std::env::current_exe()?;
    let mut master = Command::new(exe)
        .env(DETACH_ENV, work_ms.to_string())
        .env_remove(mitogen::testing::CHILD_ENV)
        .env_remove(mitogen::testing::PARENT_PID_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let master_pid = master.id();
    let mut line = String::new();
    BufReader::new(master.stdout.take().context("no stdout")?).read_line(&mut line)?;
    // The master exits by itself once its main returns.
    let status = master.wait()?;
    let mut words = line.split_whitespace();
    ensure!(words.next() == Some("detached"), "the master said {line:?}");
    let pid: u32 = words.next().context("no pid")?.parse()?;
    let gpid: u32 = words.next().context("no grandchild pid")?.parse()?;
    ensure!(status.success(), "the master exited {status}");
    Ok((pid, gpid, master_pid))
}

fn alive(p: u32) -> bool {
    !matches!(proc_state(p), None | Some('Z' | 'X'))
}

pub fn detached_child_outlives_master(_: &Router) -> Result<()> {
    let (pid, gpid, master_pid) = run_detaching_master(60_000)?;
    let r = (|| -> Result<()> {
        // Give a parent-death signal or a parent-lost exit time to strike.
        std::thread::sleep(Duration::from_millis(500));
        ensure!(
            alive(pid),
            "the detached child {pid} is {:?}",
            proc_state(pid)
        );
        ensure!(
            alive(gpid),
            "the detached child's own child {gpid} is {:?}",
            proc_state(gpid)
        );
        ensure!(
            util::proc_ppid(pid) != Some(master_pid),
            "still a child of the master"
        );
        ensure!(
            util::proc_ppid(gpid) == Some(pid),
            "the grandchild changed parents"
        );
        // In a session of its own, away from the master's terminal signals.
        let sid = util::proc_sid;
        ensure!(
            sid(pid) == Some(pid) && sid(pid) != sid(std::process::id()),
            "not in a session of its own: {:?}",
            sid(pid)
        );
        Ok(())
    })();
    // Clean up: these are nobody's children here, so kill them outright.
    for p in [gpid, pid] {
        if alive(p) {
            let _ = kill9(p);
        }
    }
    for p in [gpid, pid] {
        ensure!(wait_dead(p, Duration::from_secs(2)), "{p} survived SIGKILL");
    }
    r
}

pub fn detached_child_exits_when_its_work_is_done(_: &Router) -> Result<()> {
    let (pid, gpid, _) = run_detaching_master(1_000)?;
    let r = (|| -> Result<()> {
        std::thread::sleep(Duration::from_millis(300));
        ensure!(alive(pid) && alive(gpid), "gone before its work was done");
        for p in [pid, gpid] {
            ensure!(
                wait_dead(p, Duration::from_secs(4)),
                "{p} still {:?} after the detached work ended",
                proc_state(p)
            );
        }
        Ok(())
    })();
    for p in [gpid, pid] {
        if alive(p) {
            let _ = kill9(p);
        }
    }
    r
}

crate::tests! {
    detached_child_outlives_master,
    detached_child_exits_when_its_work_is_done,
}
