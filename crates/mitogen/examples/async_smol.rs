//! The async API under smol, and under a plain `futures::executor::block_on`
//! (no runtime at all): the same calls, nothing tied to a reactor. Run it
//! with `cargo run --example async_smol -p mitogen`.

use futures::StreamExt;

/// Streams `n` squares back with `send_async`; dropping `out` ends the
/// channel.
#[mitogen::remote]
fn squares(n: u64, out: mitogen::Sender<u64>) -> mitogen::Result<()> {
    futures::executor::block_on(async {
        for i in 0..n {
            out.send_async(i * i).await?;
        }
        Ok(())
    })
}

#[mitogen::main]
fn main(router: mitogen::Router) -> Result<(), mitogen::Error> {
    let ctx = smol::block_on(async {
        let target: mitogen::Target = "local".parse()?;
        let ctx = router
            .connect_async(&target, &mitogen::ConnectOptions::default())
            .await?;
        let (tx, rx) = router.channel::<u64>();
        ctx.call_async(squares, (5, tx)).await?;
        let got: Vec<u64> = rx.filter_map(|v| async { v.ok() }).collect().await;
        println!("squares under smol from {}: {got:?}", ctx.name());
        Ok::<_, mitogen::Error>(ctx)
    })?;

    // The same with no runtime: block_on drives the futures itself.
    let pid = futures::executor::block_on(ctx.call_async(mitogen::builtins::getpid, ()))?;
    println!("{} is pid {pid} (plain block_on)", ctx.name());
    ctx.shutdown()
}
