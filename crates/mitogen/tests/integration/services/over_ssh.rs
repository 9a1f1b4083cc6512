//! A service in a context reached over ssh (the loopback sshd), and its
//! rules judged there for a context below it.

use std::time::Duration;

use anyhow::{ensure, Result};
use mitogen::{CallErrorKind, Local, Router};

use super::{call_parent, Dedup, Streamer, Vault};
use crate::sshd::{self, Sshd};
use crate::util::Guard;

pub fn a_service_over_ssh(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    let user = sshd::user("mitogen-t1", "/bin/sh")?;
    let host = Guard(router.ssh(sshd.ssh(&user.name)?)?);
    let vault = host.service::<Vault>();
    ensure!(vault.call_timeout(Vault::secret, (), Duration::from_secs(30))? == 42);

    let dedup = host.service::<Dedup>();
    let askers: Vec<_> = (0..4)
        .map(|_| dedup.call_async(Dedup::compute, 8))
        .collect();
    for p in askers {
        ensure!(p.get_timeout(Duration::from_secs(30))? == 16);
    }
    ensure!(dedup.call(Dedup::runs, 8)? == 1);

    let (tx, rx) = host.channel::<u64>();
    ensure!(
        host.service::<Streamer>()
            .call(Streamer::count, (100, tx))?
            == 100
    );
    let got: Vec<u64> = rx.iter().collect();
    ensure!(got == (0..100).collect::<Vec<_>>(), "{} values", got.len());

    // A context below the ssh host has no authority over it.
    let below = Guard(router.start(Some(&host), Local::new())?);
    let r = below.call(call_parent, "secret")?;
    ensure!(
        matches!(&r, Err((Some(CallErrorKind::Refused), _))),
        "the context below read the host's secret: {r:?}"
    );
    ensure!(below.call(call_parent, "public")? == Ok(7));
    Ok(())
}

crate::tests! {
    a_service_over_ssh => 120,
}
