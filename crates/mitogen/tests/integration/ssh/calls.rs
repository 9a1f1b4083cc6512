//! Working with an ssh context: a target string with `ConnectOptions`, and
//! the round trip time and streaming of calls over ssh.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use mitogen::{Blob, Error, Router, TransportFailure};

use super::{blobs, connect_as, expect_kind, plus_one, whoami};
use crate::sshd::{self, Sshd};
use crate::util::Guard;

pub fn target_string_with_connect_options(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    let user = sshd::user("mitogen-t1", "/bin/sh")?;
    sshd.authorize(&user.name)?;
    let text = format!("{}@127.0.0.1:{}", user.name, sshd.port);
    let target: mitogen::Target = text.parse()?;
    let mut options = mitogen::ConnectOptions {
        ssh_config: Some("/dev/null".into()),
        ..Default::default()
    };
    options.ssh_options = vec![
        format!("IdentityFile={}", sshd.client_key.display()),
        "IdentitiesOnly=yes".into(),
        "StrictHostKeyChecking=no".into(),
        "UserKnownHostsFile=/dev/null".into(),
    ];
    options.connect_timeout = Some(Duration::from_secs(20));
    let ctx = Guard(router.connect_with(&target, &options)?);
    ensure!(ctx.name() == text, "context named {:?}", ctx.name());
    let w = ctx.call(whoami, ())?;
    ensure!(w.uid == user.uid, "runs as uid {}", w.uid);
    drop(ctx);

    // The options reach ssh: without the key, the same target is refused.
    let mut bare = options.clone();
    bare.ssh_options.retain(|o| !o.starts_with("IdentityFile"));
    expect_kind(
        router.connect_with(&target, &bare),
        &text,
        TransportFailure::AuthenticationFailed,
    )
}

pub fn rtt_and_streaming(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    let user = sshd::user("mitogen-t1", "/bin/sh")?;
    let (ctx, _) = connect_as(router, sshd.ssh(&user.name)?, &user)?;

    let n = 300u64;
    let started = Instant::now();
    for i in 0..n {
        let got = ctx.call(plus_one, (i,))?;
        ensure!(got == i + 1, "call {i} returned {got}");
    }
    let rtt = started.elapsed() / n as u32;
    let pending: Vec<_> = (0..n).map(|i| ctx.call_async(plus_one, (i,))).collect();
    for (i, p) in pending.into_iter().enumerate() {
        ensure!(
            p.get_timeout(Duration::from_secs(30))? == i as u64 + 1,
            "pipelined call {i}"
        );
    }

    let (count, size) = (32u32, 256 * 1024u32);
    let (tx, rx) = ctx.channel::<Blob>();
    let started = Instant::now();
    let done = ctx.call_async(blobs, (count, size, tx));
    let mut got = 0u32;
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(b) => {
                ensure!(b.len() == size as usize, "blob {got} has {} bytes", b.len());
                ensure!(b.iter().all(|&x| x == got as u8), "blob {got} corrupt");
                got += 1;
            }
            Err(Error::ChannelClosed(_)) => break,
            Err(e) => bail!("after {got} blobs: {e}"),
        }
    }
    done.get()?;
    ensure!(got == count, "received {got} of {count} blobs");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "    rtt {rtt:?}; {} MiB streamed at {:.0} MiB/s",
        count * size / (1024 * 1024),
        f64::from(count * size) / (1024.0 * 1024.0) / secs
    );
    Ok(())
}

crate::tests! {
    rtt_and_streaming,
    target_string_with_connect_options,
}
