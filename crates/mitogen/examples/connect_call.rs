//! Times `Router::connect_call`: a connect and the new context's first call, as a
//! program over a slow link sees it (`benches/wan.py` runs it through a delay
//! proxy).
//!
//! ```text
//! connect_call [--samples N] [--clear CMD] [-o SSH_OPTION]... TARGET
//! ```
//!
//! One untimed connect warms the master (its own build read and hashed, the
//! remote cache filled), then each of N samples connects afresh, makes one
//! no-op call and shuts the context down; only connect + call are timed.
//! With `--clear`, the shell command CMD runs (untimed) before each sample:
//! `benches/wan.py` gives one that empties the remote cache, for cold
//! connects. Prints one JSON line: `{"connect_call_ms": [..]}`.

use std::time::Instant;

use mitogen::{ConnectOptions, Target};

/// The first call: nothing but the round trip.
#[mitogen::remote]
fn noop() {}

fn usage() -> ! {
    eprintln!("usage: connect_call [--samples N] [--clear CMD] [-o SSH_OPTION]... TARGET");
    std::process::exit(2)
}

#[mitogen::main]
fn main(router: mitogen::Router) -> Result<(), Box<dyn std::error::Error>> {
    let mut samples = 5usize;
    let mut clear = None;
    let mut options = ConnectOptions::default();
    let mut target = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--samples" => {
                samples = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--clear" => clear = Some(args.next().unwrap_or_else(|| usage())),
            "-o" => options
                .ssh_options
                .push(args.next().unwrap_or_else(|| usage())),
            t if target.is_none() && !t.starts_with('-') => target = Some(t.parse::<Target>()?),
            _ => usage(),
        }
    }
    let target = target.unwrap_or_else(|| usage());
    let (ctx, first) = router.connect_call(&target, &options, noop, ())?;
    first.get()?;
    ctx.shutdown()?;
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        if let Some(cmd) = &clear {
            let status = std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .status()?;
            if !status.success() {
                return Err(format!("--clear command failed: {status}").into());
            }
        }
        let t = Instant::now();
        let (ctx, first) = router.connect_call(&target, &options, noop, ())?;
        first.get()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        ctx.shutdown()?;
    }
    let list: Vec<String> = times.iter().map(|t| format!("{t:.2}")).collect();
    println!("{{\"connect_call_ms\": [{}]}}", list.join(", "));
    Ok(())
}
