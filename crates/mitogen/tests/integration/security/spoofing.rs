//! Frames that claim another source or another authority.

use std::time::Duration;

use anyhow::{ensure, Result};
use mitogen::testing::message::{handles, MASTER_ID};
use mitogen::Router;

use super::{count_logged, evil_call, expect_logged, frame, said, Tree, NOT_BEHIND, NO_AUTHORITY};
use crate::capture;
use crate::util::wait_until;

pub fn spoofed_source(router: &Router) -> Result<()> {
    let t = Tree::new(router, "sec-src")?;
    let mark = capture::mark();
    // Claiming to be the master, the cousin and the sibling, with every
    // authority that would go with it.
    let mut frames = Vec::new();
    for src in [MASTER_ID, t.cousin.id(), t.sibling.id(), t.mid.id()] {
        frames.extend(frame(
            t.mid.id(),
            src,
            src,
            handles::CALL_FUNCTION,
            &evil_call(),
        ));
        frames.extend(frame(
            t.cousin.id(),
            src,
            src,
            handles::CALL_FUNCTION,
            &evil_call(),
        ));
    }
    // Up to the master, claiming to be the sibling.
    frames.extend(frame(
        MASTER_ID,
        t.sibling.id(),
        t.sibling.id(),
        handles::FORWARD_LOG,
        b"",
    ));
    t.forge(frames)?;
    t.honest_ones_work()?;
    let mid = t.mid.name();
    expect_logged(mark, Some(mid), NOT_BEHIND)?;
    ensure!(
        wait_until(Duration::from_secs(5), || count_logged(
            mark,
            Some(mid),
            NOT_BEHIND
        ) == 9),
        "{} of 9 spoofed frames logged",
        count_logged(mark, Some(mid), NOT_BEHIND)
    );
    Ok(())
}

pub fn spoofed_auth_id(router: &Router) -> Result<()> {
    let t = Tree::new(router, "sec-auth")?;
    let mark = capture::mark();
    let me = t.hostile.id();
    // The true source, claiming the master's authority: the router replaces
    // the authority with the source, so the call into the parent is refused.
    let frames = frame(
        t.mid.id(),
        me,
        MASTER_ID,
        handles::CALL_FUNCTION,
        &evil_call(),
    );
    t.forge(frames)?;
    t.honest_ones_work()?;
    expect_logged(mark, Some(t.mid.name()), NO_AUTHORITY)?;
    ensure!(capture::since(mark)
        .iter()
        .any(|e| said(e, Some(t.mid.name()), NO_AUTHORITY)
            && e.message.contains(&format!("auth_id={me}"))));
    Ok(())
}

crate::tests! {
    spoofed_source,
    spoofed_auth_id,
}
