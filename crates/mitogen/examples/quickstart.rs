//! Starts two local contexts and calls into them: the smallest complete
//! mitogen program. Run it with `cargo run --release --example quickstart`.

use std::time::Instant;

/// Free bytes on the filesystem holding `path`, computed in whichever context
/// it is called in.
#[mitogen::remote]
fn disk_free(path: String) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(path.as_str())?;
    Ok(st.f_bavail * st.f_frsize)
}

/// Who and where the context is.
#[mitogen::remote]
fn whoami() -> String {
    format!(
        "pid {} (parent {})",
        std::process::id(),
        rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get())
    )
}

/// Streams `n` squares back through a channel, which ends when `out` is
/// dropped here.
#[mitogen::remote]
fn squares(n: u64, out: mitogen::Sender<u64>) -> mitogen::Result<()> {
    for i in 0..n {
        out.send(i * i)?;
    }
    Ok(())
}

#[mitogen::main]
fn main(router: mitogen::Router) -> Result<(), mitogen::Error> {
    println!("master: pid {}", std::process::id());
    let t = Instant::now();
    let a = router.local()?;
    let b = router.local()?;
    println!(
        "started two contexts in {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );

    println!("{}: {}", a.name(), a.call(whoami, ())?);
    println!("{}: {}", b.name(), b.call(whoami, ())?);

    let free = a.call(disk_free, "/")?;
    let pending = b.call_async(disk_free, "/tmp");
    println!("free on /: {free} bytes; on /tmp: {} bytes", pending.get()?);

    let (tx, rx) = a.channel::<u64>();
    a.call_no_reply(squares, (5, tx))?;
    let got: Vec<u64> = rx.iter().collect();
    println!("squares streamed from {}: {got:?}", a.name());

    match a.call(disk_free, "/no/such/dir") {
        Err(e) => println!("a remote error comes back typed: {e}"),
        Ok(v) => println!("unexpected: {v}"),
    }
    a.shutdown()?;
    b.shutdown()?;
    Ok(())
}
