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
//!
//! This module holds the tree, the forged frames and bodies, the log checks
//! and the inbox remote functions the parts share. The tests are in the
//! parts: `spoofing` (a forged source or authority), `calls` (calls, shutdowns
//! and replies that are not the child's to make), `routes` (route messages),
//! `frames` (an oversized frame, a flood) and `lateral` (messages to another
//! subtree).

pub mod calls;
pub mod frames;
pub mod lateral;
pub mod routes;
pub mod spoofing;

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use bytes::Bytes;
use mitogen::testing::message::{ContextId, Message};
use mitogen::{Context, Error, Local, Receiver, RemoteFn, Router, Sender};
use serde::Serialize;
use tracing::Level;

use crate::bad_input::{write_raw, After};
use crate::calls::{add, get_value, set_value};
use crate::capture::{self, Captured};

/// The value a forged call tries to set; no honest call ever sets it.
pub(crate) const EVIL: u64 = 666;

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

pub(crate) fn frame_reply(
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
pub(crate) fn evil_call() -> Vec<u8> {
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
pub(crate) fn expect_logged(mark: usize, context: Option<&str>, text: &str) -> Result<()> {
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
pub(crate) const NO_AUTHORITY: &str = "lacks parent authority";
const LATERAL: &str = "another's";

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
