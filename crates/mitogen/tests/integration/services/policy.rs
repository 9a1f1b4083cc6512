//! Rules against real less-trusted callers: a grandchild (`local/local`)
//! calling the services of its parent, and a child calling the master's,
//! neither of which it has authority over.

use std::time::Duration;

use anyhow::{ensure, Result};
use mitogen::testing::message::handles;
use mitogen::{CallErrorKind, Local, Router};

use super::{call_parent, kind_of, Board, Broken, Slow, Vault};
use crate::hostile_tree::{raw, write_raw_up};
use crate::util::Guard;

/// A child of the master, and a grandchild below it.
fn tree(router: &Router) -> Result<(Guard, Guard)> {
    let child = Guard(router.local()?);
    let grandchild = Guard(router.start(Some(&child), Local::new())?);
    Ok((child, grandchild))
}

pub fn a_grandchild_is_refused_a_parents_only_method(router: &Router) -> Result<()> {
    let (child, grandchild) = tree(router)?;
    let vault = child.service::<Vault>();
    // The master is the child's parent: it may call, and starts the service.
    ensure!(vault.call(Vault::secret, ())? == 42);

    let refused = grandchild.call(call_parent, "secret")?;
    let Err((kind, text)) = refused else {
        anyhow::bail!("the grandchild read its parent's secret: {refused:?}");
    };
    ensure!(kind == Some(CallErrorKind::Refused), "{kind:?}: {text}");
    for part in [
        "services::Vault::secret",
        "parents only",
        "may not call secret",
    ] {
        ensure!(
            text.contains(part),
            "the refusal does not say {part:?}: {text}"
        );
    }
    // The rules that admit it do.
    ensure!(grandchild.call(call_parent, "public")? == Ok(7));
    ensure!(grandchild.call(call_parent, "below")? == Ok(43));
    // The predicate refuses the master, which is not below the child.
    let r = vault.call(Vault::below, ());
    ensure!(kind_of(&r) == Some(CallErrorKind::Refused), "{r:?}");
    let text = r.map_err(|e| e.to_string()).err().unwrap_or_default();
    ensure!(text.contains("predicate `below_only`"), "{text}");
    // What a method learns of its caller comes from the router.
    ensure!(vault.call(Vault::who, ())? == (0, true, false));
    // The refused calls changed nothing: the service still serves.
    ensure!(vault.call(Vault::secret, ())? == 42);
    Ok(())
}

pub fn a_service_starts_on_first_use_by_a_caller_with_authority(router: &Router) -> Result<()> {
    let (child, grandchild) = tree(router)?;
    // Not running yet, and the grandchild may not start it, though the
    // method itself is open to any context.
    let refused = grandchild.call(call_parent, "public")?;
    let Err((kind, text)) = refused else {
        anyhow::bail!("the grandchild started its parent's service: {refused:?}");
    };
    ensure!(kind == Some(CallErrorKind::Refused), "{kind:?}: {text}");
    for part in [
        "services::Vault",
        "is not running",
        "start rule is parents only",
    ] {
        ensure!(
            text.contains(part),
            "the refusal does not say {part:?}: {text}"
        );
    }
    // A service whose start rule is `any` the grandchild starts itself.
    ensure!(grandchild.call(call_parent, "board")? == Ok("hello child".len() as u64));

    // Started by a parent (without calling a method), it serves the rule's
    // callers, and is built once however many call.
    child.service::<Vault>().start()?;
    ensure!(grandchild.call(call_parent, "public")? == Ok(7));
    ensure!(child.service::<Vault>().call(Vault::public, ())? == 7);
    ensure!(child.service::<Vault>().call(Vault::starts, ())? == 1);
    Ok(())
}

pub fn a_constructor_that_fails_is_the_call_error(router: &Router) -> Result<()> {
    let child = Guard(router.local()?);
    let broken = child.service::<Broken>();
    for _ in 0..2 {
        let r = broken.call(Broken::ping, ());
        ensure!(kind_of(&r) == Some(CallErrorKind::Returned), "{r:?}");
        let text = r.map_err(|e| e.to_string()).err().unwrap_or_default();
        ensure!(
            text.contains("starting") && text.contains("no such device"),
            "{text}"
        );
    }
    // The context itself is unharmed.
    child.service::<Board>().call(Board::hello, "x")?;
    Ok(())
}

pub fn a_child_is_refused_the_masters_parents_only_methods(router: &Router) -> Result<()> {
    let child = Guard(router.local()?);
    // The master's own services: the child may start one whose start rule
    // is `any`, and call what is open to it ...
    ensure!(child.call(call_parent, "board")? == Ok("hello child".len() as u64));
    // ... but not a parents-only method, nor start a parents-only service.
    for method in ["board_admin", "secret"] {
        let r = child.call(call_parent, method)?;
        let Err((kind, text)) = r else {
            anyhow::bail!("the child called the master's {method}: {r:?}");
        };
        ensure!(kind == Some(CallErrorKind::Refused), "{kind:?}: {text}");
        ensure!(text.contains("in context \"master\""), "{text}");
    }
    Ok(())
}

pub fn a_grandchild_cannot_cancel_a_call_to_its_parents_service(router: &Router) -> Result<()> {
    let (child, grandchild) = tree(router)?;
    let slow = child.service::<Slow>();
    let call = slow.call_async(Slow::sleep, 1500);
    // The grandchild, below the service's context, names the master's call
    // in a cancellation of its own.
    let forged = raw(
        child.id(),
        grandchild.id(),
        handles::CANCEL_SERVICE,
        0,
        0,
        &call.reply_handle().to_le_bytes(),
    );
    grandchild.call(write_raw_up, forged)?;
    // Cancelled, the call would stop early and send nothing.
    ensure!(call.get_timeout(Duration::from_secs(10))? == 1500);
    Ok(())
}

crate::tests! {
    a_grandchild_is_refused_a_parents_only_method,
    a_service_starts_on_first_use_by_a_caller_with_authority,
    a_constructor_that_fails_is_the_call_error,
    a_child_is_refused_the_masters_parents_only_methods,
    a_grandchild_cannot_cancel_a_call_to_its_parents_service,
}
