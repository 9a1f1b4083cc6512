//! Micro-benchmarks of the core bus against a local context: round trip,
//! pipelined calls and bulk throughput. `cargo bench -p mitogen --bench core`.
//!
//! The `mitogen bench` command measures the same things with the same
//! definitions for any target, side by side with Python Mitogen; this bench is
//! the quick loop for work on the hot paths.

use std::time::{Duration, Instant};

use bytes::Bytes;
use mitogen::{Blob, Sender};

#[mitogen::remote]
fn stream(chunks: u32, size: u32, out: Sender<Blob>) -> mitogen::Result<()> {
    let chunk = Bytes::from(vec![0u8; size as usize]);
    for _ in 0..chunks {
        out.send(Blob(chunk.clone()))?;
    }
    out.close()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    mitogen::run(|router| {
        let ctx = router.local().expect("local context");
        for _ in 0..1000 {
            ctx.call(mitogen::builtins::noop, ()).expect("warm-up");
        }
        let mut rtts = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            for _ in 0..500 {
                ctx.call(mitogen::builtins::noop, ()).expect("call");
            }
            rtts.push(t.elapsed().as_secs_f64() * 1e6 / 500.0);
        }
        println!("rtt_us {:.1}", median(rtts));

        let mut rates = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let pending: Vec<_> = (0..20_000)
                .map(|_| ctx.call_async(mitogen::builtins::noop, ()))
                .collect();
            for p in pending {
                p.get().expect("pipelined call");
            }
            rates.push(20_000.0 / t.elapsed().as_secs_f64());
        }
        println!("pipelined_calls_per_s {:.0}", median(rates));

        let rss = ctx.call(mitogen::builtins::rss_kib, ()).expect("rss");
        println!("child_rss_kib {rss}");

        let mut tput = Vec::new();
        for _ in 0..3 {
            let (tx, rx) = ctx.channel::<Blob>();
            let t = Instant::now();
            ctx.call_no_reply(stream, (256, 1 << 20, tx))
                .expect("stream");
            let mut n = 0usize;
            while let Ok(b) = rx.recv_timeout(Duration::from_secs(30)) {
                n += b.len();
            }
            assert_eq!(n, 256 << 20);
            tput.push(256.0 / t.elapsed().as_secs_f64());
        }
        println!("throughput_mib_s {:.0}", median(tput));

        let mut connects = Vec::new();
        for _ in 0..10 {
            let t = Instant::now();
            let c = router.local().expect("local context");
            c.call(mitogen::builtins::noop, ()).expect("first call");
            connects.push(t.elapsed().as_secs_f64() * 1e3);
            c.shutdown().expect("shutdown");
        }
        println!("connect_ms {:.2}", median(connects));
    })
}
