//! Remote errors, panics, unknown functions and size limits.

use std::time::Duration;

use anyhow::{bail, ensure, Result};
use mitogen::{CallError, CallErrorKind, Error, RemoteFn, Router};

use crate::calls::{add, send_chunks};
use crate::util::Guard;

#[mitogen::remote]
pub fn read_file(path: String) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

#[derive(Debug, thiserror::Error)]
#[error("loading config {path}")]
pub struct ConfigError {
    path: String,
    #[source]
    source: ParseError,
}

#[derive(Debug, thiserror::Error)]
#[error("parsing line 3")]
pub struct ParseError {
    #[source]
    source: std::io::Error,
}

#[mitogen::remote]
pub fn load_config(path: String) -> Result<u32, ConfigError> {
    Err(ConfigError {
        path,
        source: ParseError {
            source: std::io::Error::other("the innermost cause"),
        },
    })
}

#[mitogen::remote]
pub fn anyhow_fail() -> anyhow::Result<u32> {
    let e = anyhow::Error::new(std::io::Error::other("disk on fire"));
    Err(e.context("writing state"))
}

#[mitogen::remote]
pub fn boom(msg: String) -> u32 {
    panic!("boom: {msg}")
}

#[mitogen::remote]
pub fn byte_len(data: Vec<u8>) -> usize {
    data.len()
}

#[mitogen::remote]
pub fn make_bytes(n: u64) -> Vec<u8> {
    vec![7; n as usize]
}

/// A function the child does not have: implemented by hand, never registered.
#[derive(Clone, Copy)]
struct NotThere;

impl RemoteFn for NotThere {
    type Args = (u32,);
    type Output = u32;
    const NAME: &'static str = "integration::errors::not_there";
}

impl mitogen::IntoArgs<NotThere> for (u32,) {
    fn into_args(self) -> (u32,) {
        self
    }
}

/// The name of `add` with argument types that do not match it.
#[derive(Clone, Copy)]
struct AddWithoutArgs;

impl RemoteFn for AddWithoutArgs {
    type Args = ();
    type Output = u64;
    const NAME: &'static str = <add as RemoteFn>::NAME;
}

impl mitogen::IntoArgs<AddWithoutArgs> for () {
    fn into_args(self) {}
}

fn expect_call_error<T: std::fmt::Debug>(r: mitogen::Result<T>) -> Result<CallError> {
    match r {
        Err(Error::Call(e)) => Ok(e),
        other => bail!("expected a CallError, got {other:?}"),
    }
}

pub fn io_error_comes_back(router: &Router) -> Result<()> {
    let ctx = Guard(router.local()?);
    let e = expect_call_error(ctx.call(read_file, ("/no/such/file".into(),)))?;
    ensure!(e.kind == CallErrorKind::Returned, "kind {:?}", e.kind);
    ensure!(e.context == ctx.name(), "context {:?}", e.context);
    ensure!(
        e.function == <read_file as RemoteFn>::NAME,
        "function {:?}",
        e.function
    );
    ensure!(
        e.message.contains("No such file"),
        "message {:?}",
        e.message
    );
    let shown = Error::Call(e).to_string();
    ensure!(
        shown.contains(ctx.name()) && shown.contains("read_file"),
        "{shown}"
    );
    Ok(())
}

pub fn error_source_chain_comes_back(router: &Router) -> Result<()> {
    let ctx = Guard(router.local()?);
    let e = expect_call_error(ctx.call(load_config, ("/etc/app.toml".into(),)))?;
    ensure!(e.kind == CallErrorKind::Returned);
    ensure!(
        e.message == "loading config /etc/app.toml",
        "message {:?}",
        e.message
    );
    ensure!(
        e.chain == ["parsing line 3", "the innermost cause"],
        "chain {:?}",
        e.chain
    );
    let shown = e.to_string();
    ensure!(
        shown.contains("loading config /etc/app.toml: parsing line 3: the innermost cause"),
        "{shown}"
    );
    Ok(())
}

pub fn anyhow_context_chain_comes_back(router: &Router) -> Result<()> {
    let ctx = Guard(router.local()?);
    let e = expect_call_error(ctx.call(anyhow_fail, ()))?;
    ensure!(e.message == "writing state", "message {:?}", e.message);
    ensure!(
        e.chain.iter().any(|c| c == "disk on fire"),
        "chain {:?}",
        e.chain
    );
    Ok(())
}

pub fn panic_comes_back_with_message(router: &Router) -> Result<()> {
    let ctx = Guard(router.local()?);
    let e = expect_call_error(ctx.call(boom, ("kaboom-41".into(),)))?;
    ensure!(e.kind == CallErrorKind::Panicked, "kind {:?}", e.kind);
    ensure!(
        e.message.contains("boom: kaboom-41"),
        "message {:?}",
        e.message
    );
    ensure!(e.context == ctx.name());
    ensure!(e.function == <boom as RemoteFn>::NAME);
    // The context survives its function's panic.
    ensure!(ctx.call(add, (1, 1))? == 2);
    let e = expect_call_error(ctx.call(boom, ("again".into(),)))?;
    ensure!(e.message.contains("boom: again"), "message {:?}", e.message);
    Ok(())
}

pub fn unknown_function(router: &Router) -> Result<()> {
    let ctx = Guard(router.local()?);
    let e = expect_call_error(ctx.call(NotThere, (1,)))?;
    ensure!(
        e.kind == CallErrorKind::UnknownFunction,
        "kind {:?}",
        e.kind
    );
    ensure!(e.function == NotThere::NAME);
    ensure!(
        e.message.contains(NotThere::NAME),
        "message {:?}",
        e.message
    );
    ensure!(ctx.call(add, (1, 2))? == 3);
    Ok(())
}

pub fn arguments_that_do_not_decode(router: &Router) -> Result<()> {
    let ctx = Guard(router.local()?);
    let e = expect_call_error(ctx.call(AddWithoutArgs, ()))?;
    ensure!(e.kind == CallErrorKind::BadArguments, "kind {:?}", e.kind);
    ensure!(e.function == <add as RemoteFn>::NAME);
    ensure!(ctx.call(add, (1, 2))? == 3);
    Ok(())
}

const SMALL: usize = 64 * 1024;

fn small_router() -> Result<Router> {
    let r = Router::builder().max_message_size(SMALL).build()?;
    ensure!(r.max_message_size() == SMALL);
    Ok(r)
}

fn expect_too_large<T: std::fmt::Debug>(r: mitogen::Result<T>) -> Result<()> {
    match r {
        Err(Error::TooLarge { len, max }) if max == SMALL && len > SMALL => Ok(()),
        other => bail!("expected TooLarge, got {other:?}"),
    }
}

pub fn oversized_message_refused_at_sender(_: &Router) -> Result<()> {
    let small = small_router()?;
    let ctx = Guard(small.local()?);
    let big = vec![1u8; SMALL + 1];
    expect_too_large(ctx.call(byte_len, (big.clone(),)))?;
    expect_too_large(ctx.call_async(byte_len, (big.clone(),)).get())?;
    expect_too_large(ctx.call_no_reply(byte_len, (big.clone(),)))?;
    expect_too_large(ctx.chain().call_no_reply(byte_len, (big,)))?;
    ensure!(ctx.call(byte_len, (vec![0; 1000],))? == 1000);
    // The child got the same limit: its Sender refuses an oversized chunk.
    let (tx, rx) = ctx.channel();
    let e = expect_call_error(ctx.call(send_chunks, (1, SMALL as u32 + 1, tx)))?;
    ensure!(
        e.message.contains("exceeds the limit"),
        "message {:?}",
        e.message
    );
    // Nothing arrived (the channel may have ended: the child dropped `tx`).
    ensure!(
        matches!(rx.try_recv(), Ok(None) | Err(Error::ChannelClosed(_))),
        "an oversized chunk arrived"
    );
    // A master-side Sender refuses it too.
    let (tx, _rx) = small.channel::<mitogen::Blob>();
    expect_too_large(tx.send(mitogen::Blob::from(vec![0u8; SMALL + 1])))?;
    ensure!(ctx.call(add, (1, 2))? == 3);
    drop(ctx);
    small.shutdown();
    Ok(())
}

pub fn result_too_large(_: &Router) -> Result<()> {
    let small = small_router()?;
    let ctx = Guard(small.local()?);
    let e = expect_call_error(ctx.call(make_bytes, (SMALL as u64 + 10,)))?;
    ensure!(e.kind == CallErrorKind::Returned, "kind {:?}", e.kind);
    ensure!(e.message.contains("exceeds"), "message {:?}", e.message);
    ensure!(
        e.function == <make_bytes as RemoteFn>::NAME,
        "function {:?}",
        e.function
    );
    ensure!(
        ctx.call_timeout(make_bytes, (100,), Duration::from_secs(10))?
            .len()
            == 100
    );
    drop(ctx);
    small.shutdown();
    Ok(())
}

crate::tests! {
    io_error_comes_back,
    error_source_chain_comes_back,
    anyhow_context_chain_comes_back,
    panic_comes_back_with_message,
    unknown_function,
    arguments_that_do_not_decode,
    oversized_message_refused_at_sender,
    result_too_large,
}
