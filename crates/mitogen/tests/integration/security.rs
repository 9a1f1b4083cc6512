//! The security rules, tried by a hostile child: a context that writes raw,
//! forged frames on its own parent stream. Every attempt must be refused and
//! logged where it was refused (the master's own log, or a record forwarded
//! from the intermediate that refused it), and the honest contexts must keep
//! working.
//!
//! The tree used by most tests:
//!
//! ```text
//! master ─┬─ mid ─┬─ hostile   (writes the forged frames)
//!         │       └─ cousin    (honest, same parent)
//!         └─ sibling           (honest, another subtree)
//! ```

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use bytes::Bytes;
use mitogen::testing::message::{handles, ContextId, Message, MASTER_ID};
use mitogen::{Context, Error, Local, Receiver, RemoteFn, Router, Sender};
use serde::Serialize;
use tracing::Level;

use crate::bad_input::{write_raw, After};
use crate::calls::{add, get_value, set_value, sleep_ms};
use crate::capture::{self, Captured};
use crate::util::{proc_state, wait_dead, wait_until};

/// The value a forged call tries to set; no honest call ever sets it.
const EVIL: u64 = 666;

/// The tree above, shut down (deepest first) when dropped.
struct Tree {
    mid: Context,
    hostile: Context,
    cousin: Context,
    sibling: Context,
}

impl Tree {
    fn new(router: &Router, tag: &str) -> Result<Tree> {
        let mid = router.start(None, Local::new().name(format!("{tag}-mid")))?;
        let hostile = router.start(Some(&mid), Local::new().name(format!("{tag}-hostile")))?;
        let cousin = router.start(Some(&mid), Local::new().name(format!("{tag}-cousin")))?;
        let sibling = router.start(None, Local::new().name(format!("{tag}-sibling")))?;
        Ok(Tree {
            mid,
            hostile,
            cousin,
            sibling,
        })
    }

    /// Writes `frames` raw on the hostile child's parent stream.
    fn forge(&self, frames: Vec<u8>) -> Result<()> {
        self.hostile
            .call_timeout(
                write_raw,
                (frames, After::Nothing, 0),
                Duration::from_secs(30),
            )
            .context("the hostile write")?;
        Ok(())
    }

    /// Every honest context still answers, and no forged call ran anywhere.
    fn honest_ones_work(&self) -> Result<()> {
        for c in [&self.mid, &self.cousin, &self.sibling] {
            ensure!(
                c.call_timeout(add, (2, 3), Duration::from_secs(10))? == 5,
                "{} stopped answering",
                c.name()
            );
            ensure!(
                c.call(get_value, ())? != EVIL,
                "a forged call ran in {}",
                c.name()
            );
            ensure!(!c.is_disconnected(), "{} is disconnected", c.name());
        }
        // The hostile child's own link is fine: forging is refused, not fatal.
        ensure!(self.hostile.call(add, (1, 1))? == 2);
        Ok(())
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        for c in [&self.hostile, &self.cousin, &self.mid, &self.sibling] {
            let _ = c.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

/// One raw frame.
fn frame(dst: ContextId, src: ContextId, auth_id: ContextId, handle: u32, body: &[u8]) -> Vec<u8> {
    frame_reply(dst, src, auth_id, handle, 0, body)
}

fn frame_reply(
    dst: ContextId,
    src: ContextId,
    auth_id: ContextId,
    handle: u32,
    reply_to: u32,
    body: &[u8],
) -> Vec<u8> {
    let msg = Message {
        dst,
        src,
        auth_id,
        handle,
        reply_to,
        body: Bytes::copy_from_slice(body),
        ..Default::default()
    };
    let mut v = msg.encode_header().to_vec();
    v.extend_from_slice(body);
    v
}

/// The wire form of a call's head (postcard carries no field names, so this
/// mirror encodes exactly as the library's own).
#[derive(Serialize)]
enum Op {
    Call,
}

#[derive(Serialize)]
struct Head<'a> {
    op: Op,
    function: &'a str,
    chain: Option<u64>,
}

/// The body of a call to `f(args)`.
fn call_body<F: RemoteFn>(_f: F, args: &F::Args) -> Vec<u8> {
    let head = Head {
        op: Op::Call,
        function: F::NAME,
        chain: None,
    };
    let buf = postcard::to_allocvec(&head).expect("encodable");
    postcard::to_extend(args, buf).expect("encodable")
}

/// The forged call used throughout: sets the victim's value to [`EVIL`].
fn evil_call() -> Vec<u8> {
    call_body(set_value, &(EVIL,))
}

/// Mirrors of the route-control bodies.
#[derive(Serialize)]
struct AddRoute<'a> {
    id: ContextId,
    via: ContextId,
    name: &'a str,
}

#[derive(Serialize)]
struct DelRoute {
    ids: Vec<ContextId>,
}

/// True when `e` says `text` and was raised by `context`: the master itself
/// (`None`) or a child whose record was forwarded.
fn said(e: &Captured, context: Option<&str>, text: &str) -> bool {
    e.level <= Level::WARN
        && e.message.contains(text)
        && match context {
            None => e.target != "mitogen::remote",
            Some(c) => e.target == "mitogen::remote" && e.field("context") == Some(c),
        }
}

/// Waits for a warning saying `text` from `context`.
fn expect_logged(mark: usize, context: Option<&str>, text: &str) -> Result<()> {
    capture::wait_for(mark, Duration::from_secs(5), |e| said(e, context, text))
        .map(drop)
        .with_context(|| {
            format!(
                "no warning {text:?} from {}",
                context.unwrap_or("the master")
            )
        })
}

/// Counts warnings saying `text` from `context` since `mark`.
fn count_logged(mark: usize, context: Option<&str>, text: &str) -> usize {
    capture::since(mark)
        .iter()
        .filter(|e| said(e, context, text))
        .count()
}

const NOT_BEHIND: &str = "source is not behind";
const NO_AUTHORITY: &str = "lacks parent authority";
const LATERAL: &str = "another's";

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

pub fn call_into_parent(router: &Router) -> Result<()> {
    let t = Tree::new(router, "sec-parent")?;
    let mark = capture::mark();
    let me = t.hostile.id();
    // Into the parent, asking for a reply (the refusal answers it dead).
    let mut frames = frame_reply(
        t.mid.id(),
        me,
        me,
        handles::CALL_FUNCTION,
        5000,
        &evil_call(),
    );
    // Into the master, which runs no calls at all.
    frames.extend(frame_reply(
        MASTER_ID,
        me,
        me,
        handles::CALL_FUNCTION,
        5001,
        &evil_call(),
    ));
    t.forge(frames)?;
    t.honest_ones_work()?;
    expect_logged(mark, Some(t.mid.name()), NO_AUTHORITY)?;
    capture::wait_for(mark, Duration::from_secs(5), |e| {
        e.message.contains("unknown handle") && e.field("handle") == Some("101")
    })
    .context("the master did not log the call it does not serve")?;
    Ok(())
}

pub fn call_into_sibling(router: &Router) -> Result<()> {
    let t = Tree::new(router, "sec-sib")?;
    let mark = capture::mark();
    let me = t.hostile.id();
    let mut frames = frame(t.cousin.id(), me, me, handles::CALL_FUNCTION, &evil_call());
    frames.extend(frame(
        t.sibling.id(),
        me,
        me,
        handles::CALL_FUNCTION,
        &evil_call(),
    ));
    t.forge(frames)?;
    t.honest_ones_work()?;
    // The cousin's call is refused by the parent they share, the sibling's by
    // the master.
    expect_logged(mark, Some(t.mid.name()), LATERAL)?;
    expect_logged(mark, None, LATERAL)?;
    Ok(())
}

pub fn shutdown_of_sibling(router: &Router) -> Result<()> {
    let t = Tree::new(router, "sec-shut")?;
    let mark = capture::mark();
    let me = t.hostile.id();
    let mut frames = frame(t.cousin.id(), me, me, handles::SHUTDOWN, b"");
    frames.extend(frame(t.sibling.id(), me, me, handles::SHUTDOWN, b""));
    frames.extend(frame(t.mid.id(), me, me, handles::SHUTDOWN, b""));
    t.forge(frames)?;
    std::thread::sleep(Duration::from_millis(300));
    t.honest_ones_work()?;
    expect_logged(mark, Some(t.mid.name()), LATERAL)?;
    expect_logged(mark, None, LATERAL)?;
    expect_logged(mark, Some(t.mid.name()), NO_AUTHORITY)?;
    Ok(())
}

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

pub fn forged_reply_to_anothers_call(router: &Router) -> Result<()> {
    let t = Tree::new(router, "sec-reply")?;
    let mark = capture::mark();
    let me = t.hostile.id();
    let slow = t.sibling.call_async(sleep_ms, (1500,));
    // A reply body: `ReplyHead::Ok` (variant 0), then the forged result.
    let mut reply = vec![0u8];
    reply.extend(postcard::to_allocvec(&777u64)?);
    // Handles are drawn at random, so guessing is hopeless; given the right
    // one, a reply from anyone but the sibling is still refused.
    let mut frames = frame(MASTER_ID, me, me, slow.reply_handle(), &reply);
    let (_tx, probe) = router.channel::<u64>();
    for h in probe.handle().wrapping_sub(2)..probe.handle().wrapping_add(3) {
        frames.extend(frame(MASTER_ID, me, me, h, &reply));
    }
    // And a value into a channel tied to the sibling.
    let (_stx, srx) = t.sibling.channel::<u64>();
    frames.extend(frame(MASTER_ID, me, me, srx.handle(), &reply[1..]));
    t.forge(frames)?;
    ensure!(
        slow.get_timeout(Duration::from_secs(10))? == 1500,
        "a forged reply was taken for the sibling's"
    );
    match srx.recv_timeout(Duration::from_millis(300)) {
        Err(Error::Timeout(_)) => {}
        other => bail!("the sibling's channel took a forged value: {other:?}"),
    }
    t.honest_ones_work()?;
    expect_logged(mark, None, "reply not from the context called")?;
    expect_logged(mark, None, "without the channel's key")?;
    Ok(())
}

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

/// The receiver of the inbox opened in this process by [`open_inbox`].
static INBOX: Mutex<Option<Receiver<u64>>> = Mutex::new(None);

/// Opens an inbox in this context and returns its sender.
#[mitogen::remote]
pub fn open_inbox() -> mitogen::Result<Sender<u64>> {
    let router = Router::current().ok_or(Error::RouterShutdown)?;
    let (tx, rx) = router.channel::<u64>();
    *INBOX.lock().unwrap_or_else(|e| e.into_inner()) = Some(rx);
    Ok(tx)
}

/// The next value in this context's inbox, if one comes within `ms`.
#[mitogen::remote]
pub fn read_inbox(ms: u64) -> Option<u64> {
    let inbox = INBOX.lock().unwrap_or_else(|e| e.into_inner());
    inbox.as_ref()?.recv_timeout(Duration::from_millis(ms)).ok()
}

/// Sends `v` to `to` from this context.
#[mitogen::remote]
pub fn send_value(to: Sender<u64>, v: u64) -> mitogen::Result<()> {
    to.send(v)
}

/// Sends a value from one child's inbox to another's; returns what arrived.
fn lateral_value(router: &Router) -> Result<(Option<u64>, Context, Context)> {
    let a = router.local()?;
    let b = router.local()?;
    let inbox = b.call(open_inbox, ())?;
    a.call(send_value, (inbox, 5))?;
    let got = b.call(read_inbox, (500,))?;
    Ok((got, a, b))
}

pub fn lateral_refused_by_default(router: &Router) -> Result<()> {
    let mark = capture::mark();
    let (got, a, b) = lateral_value(router)?;
    ensure!(got.is_none(), "a message crossed between subtrees");
    expect_logged(mark, None, LATERAL)?;
    a.shutdown()?;
    b.shutdown()?;
    Ok(())
}

pub fn lateral_allowed_when_enabled(_: &Router) -> Result<()> {
    let r = Router::builder().allow_lateral_messages(true).build()?;
    let (got, a, b) = lateral_value(&r)?;
    ensure!(got == Some(5), "the value did not cross: {got:?}");
    // Calls still need a parent's authority: a sibling may message, not command.
    let mark = capture::mark();
    let me = a.id();
    let forged = frame(b.id(), me, me, handles::CALL_FUNCTION, &evil_call());
    a.call_timeout(
        write_raw,
        (forged, After::Nothing, 0),
        Duration::from_secs(10),
    )?;
    expect_logged(mark, Some(b.name()), NO_AUTHORITY)?;
    ensure!(b.call(get_value, ())? != EVIL, "a sibling's call ran");
    ensure!(count_logged(mark, None, LATERAL) == 0);
    Ok(())
}

crate::tests! {
    spoofed_source,
    spoofed_auth_id,
    call_into_parent,
    call_into_sibling,
    shutdown_of_sibling,
    add_route_from_child,
    del_route_from_child,
    forged_reply_to_anothers_call,
    oversized_frame,
    flood => 120,
    lateral_refused_by_default,
    lateral_allowed_when_enabled,
}
