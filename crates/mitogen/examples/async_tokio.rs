//! The async API under tokio: start two contexts at once, await calls, read a
//! channel as a `Stream`, and select over two receivers. Run it with
//! `cargo run --example async_tokio -p mitogen`.

use std::time::Duration;

use futures::StreamExt;

/// Streams `n` squares back; the channel ends when `out` is dropped.
#[mitogen::remote]
fn squares(n: u64, out: mitogen::Sender<u64>) -> mitogen::Result<()> {
    for i in 0..n {
        out.send(i * i)?;
    }
    Ok(())
}

/// Waits `ms` milliseconds, then answers with this context's pid.
#[mitogen::remote]
fn slow_pid(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

#[mitogen::main]
fn main(router: mitogen::Router) -> Result<(), mitogen::Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| mitogen::Error::io("starting tokio", e))?;
    rt.block_on(async {
        // Both start-ups run at once, neither blocks the runtime.
        let (a, b) = tokio::join!(router.local_async(), router.local_async());
        let (a, b) = (a?, b?);
        let (pa, pb) = tokio::join!(
            a.call_async(slow_pid, (100,)),
            b.call_async(slow_pid, (100,))
        );
        println!("{} is pid {}, {} is pid {}", a.name(), pa?, b.name(), pb?);

        let (tx, mut rx) = router.channel::<u64>();
        a.call_no_reply(squares, (5, tx))?;
        let mut got = Vec::new();
        while let Some(v) = rx.next().await {
            got.push(v?);
        }
        println!("squares from {}: {got:?}", a.name());

        let (ta, ra) = router.channel::<u64>();
        let (tb, rb) = router.channel::<u64>();
        let mut select = mitogen::Select::new();
        let ia = select.add(&ra)?;
        select.add(&rb)?;
        b.call_no_reply(squares, (1, tb))?;
        let ready = tokio::time::timeout(Duration::from_secs(10), select.wait_async())
            .await
            .map_err(|_| mitogen::Error::Timeout(Duration::from_secs(10)))??;
        let from = if ready == ia { &ra } else { &rb };
        println!(
            "first ready: receiver {ready}, value {}",
            from.recv_async().await?
        );
        drop(ta);
        a.shutdown()?;
        b.shutdown()
    })
}
