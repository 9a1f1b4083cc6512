//! Route messages from a child: adding routes, and deleting routes outside
//! its own subtree.

use std::time::Duration;

use anyhow::{ensure, Result};
use mitogen::testing::message::{handles, ContextId, MASTER_ID};
use mitogen::Router;

use super::{count_logged, expect_logged, frame, AddRoute, DelRoute, Tree, NO_AUTHORITY};
use crate::capture;
use crate::util::wait_until;

pub fn add_route_from_child(router: &Router) -> Result<()> {
    let t = Tree::new(router, "sec-add")?;
    let mark = capture::mark();
    let me = t.hostile.id();
    // Try to draw the cousin's and the sibling's traffic through ourselves.
    let hijack = |id| {
        postcard::to_allocvec(&AddRoute {
            id,
            via: me,
            name: "hijacked",
        })
        .expect("encodable")
    };
    let mut frames = frame(
        t.mid.id(),
        me,
        me,
        handles::ADD_ROUTE,
        &hijack(t.cousin.id()),
    );
    frames.extend(frame(
        MASTER_ID,
        me,
        me,
        handles::ADD_ROUTE,
        &hijack(t.sibling.id()),
    ));
    t.forge(frames)?;
    t.honest_ones_work()?;
    expect_logged(mark, Some(t.mid.name()), NO_AUTHORITY)?;
    expect_logged(mark, None, NO_AUTHORITY)?;
    // Values sent to the cousin and the sibling still reach them.
    for c in [&t.cousin, &t.sibling] {
        let (tx, rx) = c.channel::<u64>();
        c.call(crate::calls::squares, (3, tx))?;
        ensure!(rx.iter().collect::<Vec<_>>() == [0, 1, 4]);
    }
    Ok(())
}

pub fn del_route_from_child(router: &Router) -> Result<()> {
    let t = Tree::new(router, "sec-del")?;
    let mark = capture::mark();
    let me = t.hostile.id();
    let del = |ids: Vec<ContextId>| postcard::to_allocvec(&DelRoute { ids }).expect("encodable");
    // To the parent: forget my cousin. To the master: forget my cousin, my
    // parent and the sibling.
    let mut frames = frame(
        t.mid.id(),
        me,
        me,
        handles::DEL_ROUTE,
        &del(vec![t.cousin.id()]),
    );
    frames.extend(frame(
        MASTER_ID,
        me,
        me,
        handles::DEL_ROUTE,
        &del(vec![t.cousin.id(), t.mid.id(), t.sibling.id()]),
    ));
    t.forge(frames)?;
    t.honest_ones_work()?;
    let refused = "refused DEL_ROUTE";
    expect_logged(mark, Some(t.mid.name()), refused)?;
    ensure!(
        wait_until(Duration::from_secs(5), || count_logged(mark, None, refused)
            == 3),
        "the master refused {} of 3 forged route deletions",
        count_logged(mark, None, refused)
    );
    Ok(())
}

crate::tests! {
    add_route_from_child,
    del_route_from_child,
}
