//! An oversized frame, and a flood of frames.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use mitogen::testing::message::MASTER_ID;
use mitogen::{Error, Router};

use super::{expect_logged, frame, Tree};
use crate::bad_input::{write_raw, After};
use crate::calls::add;
use crate::capture;
use crate::util::{proc_state, wait_dead};

pub fn oversized_frame(router: &Router) -> Result<()> {
    let t = Tree::new(router, "sec-big")?;
    let mark = capture::mark();
    let pid = t.hostile.call(mitogen::builtins::getpid, ())?;
    let mut f = frame(t.mid.id(), t.hostile.id(), t.hostile.id(), 1000, b"");
    f[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
    // The write never returns: the parent cuts the stream and the child exits.
    let writing = t.hostile.call_async(write_raw, (f, After::Nothing, 30_000));
    match writing.get_timeout(Duration::from_secs(10)) {
        Err(Error::Disconnected { context, .. }) if context == t.hostile.name() => {}
        other => bail!("expected Disconnected naming the hostile child, got {other:?}"),
    }
    ensure!(t.hostile.is_disconnected());
    ensure!(
        wait_dead(pid, Duration::from_secs(2)),
        "the hostile child {pid} is still {:?}",
        proc_state(pid)
    );
    expect_logged(mark, Some(t.mid.name()), "exceeds the limit")?;
    for c in [&t.mid, &t.cousin, &t.sibling] {
        ensure!(c.call(add, (2, 3))? == 5, "{} stopped answering", c.name());
    }
    Ok(())
}

pub fn flood(router: &Router) -> Result<()> {
    const N: usize = 100_000;
    let t = Tree::new(router, "sec-flood")?;
    let mark = capture::mark();
    let me = t.hostile.id();
    // Small messages to a handle nobody has, in the master, the parent and a
    // sibling subtree.
    let mut frames = Vec::with_capacity(N * 30);
    for i in 0..N {
        let dst = match i % 3 {
            0 => MASTER_ID,
            1 => t.mid.id(),
            _ => t.sibling.id(),
        };
        frames.extend(frame(dst, me, me, 999_999, b"x"));
    }
    let started = Instant::now();
    let writing = t.hostile.call_async(write_raw, (frames, After::Nothing, 0));
    // The honest contexts answer while the flood is under way.
    let mut worst = Duration::ZERO;
    while started.elapsed() < Duration::from_millis(500) {
        let s = Instant::now();
        ensure!(
            t.sibling
                .call_timeout(add, (1, 1), Duration::from_secs(10))?
                == 2
        );
        ensure!(
            t.cousin
                .call_timeout(add, (1, 1), Duration::from_secs(10))?
                == 2
        );
        worst = worst.max(s.elapsed());
    }
    writing.get_timeout(Duration::from_secs(60))?;
    println!(
        "    (flood of {N} written in {:?}; worst honest round trip meanwhile {worst:?})",
        started.elapsed()
    );
    t.honest_ones_work()?;
    // Logged, but not once per message: every router on the way limits the
    // records of refused and undeliverable messages.
    std::thread::sleep(Duration::from_millis(200));
    let logged = capture::since(mark)
        .iter()
        .filter(|e| e.field("handle") == Some("999999") || e.message.contains("handle=999999"))
        .count();
    ensure!(logged > 0, "the flood was not logged");
    ensure!(logged < 2_000, "{logged} records for {N} messages");
    Ok(())
}

crate::tests! {
    oversized_frame,
    flood => 120,
}
