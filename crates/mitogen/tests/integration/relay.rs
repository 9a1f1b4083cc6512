//! Large frames relayed cut-through (spliced from stream to stream as they
//! arrive): they arrive whole and in order both ways, around the size where
//! relaying switches from buffering to splicing, and a relay whose source or
//! next hop dies half-way through a frame neither hangs nor corrupts the
//! streams it still has.

use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use mitogen::testing::message::{Message, MASTER_ID};
use mitogen::{Blob, Context, Error, Local, Receiver, Router, Sender};

use crate::bad_input::{write_raw, After};
use crate::calls::add;
use crate::capture;
use crate::routing::Chain;
use crate::util::{kill9, proc_state, wait_until, Guard};

/// The size from which relays splice instead of buffering (the library's
/// `CUT_THROUGH_MIN`).
const CUT: u32 = 256 * 1024;

/// Byte `k` of pattern `seed`: position-dependent, so a lost, repeated or
/// shifted piece shows.
fn pattern(seed: u32, len: u32) -> Vec<u8> {
    (0..len)
        .map(|k| (k.wrapping_mul(31).wrapping_add(seed * 7) % 251) as u8)
        .collect()
}

/// A position-sensitive checksum.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().enumerate().fold(0u64, |acc, (i, &b)| {
        acc.wrapping_mul(1_000_003)
            .wrapping_add((i as u64 + 1) ^ u64::from(b))
    })
}

/// Sends one patterned blob of each size, in order.
#[mitogen::remote]
pub fn send_patterns(sizes: Vec<u32>, out: Sender<Blob>) -> mitogen::Result<()> {
    for (i, &len) in sizes.iter().enumerate() {
        out.send(Blob::from(pattern(i as u32, len)))?;
    }
    out.close()
}

/// The checksum of bytes, as the context received them.
#[mitogen::remote]
pub fn blob_checksum(data: Vec<u8>) -> u64 {
    checksum(&data)
}

/// Stops the calling process (SIGSTOP), so it reads nothing until killed.
#[mitogen::remote]
pub fn stop_self() -> std::io::Result<()> {
    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::STOP)?;
    Ok(())
}

/// Bytes `pid` has written so far (`wchar` of `/proc/PID/io`).
fn written_by(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("wchar: ")?.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Has `pid` call `write_raw(bytes)` and waits until it has written them.
fn write_raw_and_wait(ctx: &Context, pid: u32, bytes: Vec<u8>) -> Result<()> {
    let want = written_by(pid) + bytes.len() as u64;
    ctx.call_no_reply(write_raw, (bytes, After::Nothing, 0))?;
    ensure!(
        wait_until(Duration::from_secs(20), || written_by(pid) >= want),
        "{} wrote {} of {want} bytes",
        ctx.name(),
        written_by(pid)
    );
    Ok(())
}

/// A 4 MiB frame for the master from `from`, filled with `fill`, cut in two:
/// its header with the first MiB of its body, and the rest of the body.
fn frame_for_master(from: &Context, fill: u8) -> (Vec<u8>, Vec<u8>) {
    let msg = Message {
        dst: MASTER_ID,
        src: from.id(),
        auth_id: from.id(),
        handle: 4999,
        body: bytes::Bytes::from(vec![fill; 4 << 20]),
        ..Default::default()
    };
    let mut head = msg.encode_header().to_vec();
    head.extend_from_slice(&msg.body[..1 << 20]);
    (head, msg.body[1 << 20..].to_vec())
}

fn sizes() -> Vec<u32> {
    vec![
        CUT - 1,
        CUT,
        CUT + 1,
        1 << 20,
        (3 << 20) + 7,
        17,
        2 * CUT,
        8 << 20,
    ]
}

fn receive_all(rx: &Receiver<Blob>) -> Result<Vec<Blob>> {
    let mut got = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(b) => got.push(b),
            Err(Error::ChannelClosed(_)) => return Ok(got),
            Err(e) => bail!("after {} blobs: {e}", got.len()),
        }
    }
}

pub fn large_frames_through_a_chain_both_ways(router: &Router) -> Result<()> {
    let chain = Chain::new(router, "relay-both", 3)?;
    both_ways(router, &chain.hops[0], chain.leaf(), 3)
}

/// Through an ssh hop, whose streams to its parent are whatever sshd gives
/// it (pipes), to a local context below it.
pub fn large_frames_through_an_ssh_hop(router: &Router) -> Result<()> {
    crate::sshd::require_root_and_sshd()?;
    let sshd = crate::sshd::Sshd::start()?;
    let web = Guard(router.ssh(sshd.ssh("root")?)?);
    let below = Guard(router.start(Some(&web), Local::new().name("relay-below-ssh"))?);
    both_ways(router, &web, &below, 1)
}

/// Streams patterned blobs from `leaf` to the master and back, `rounds`
/// times, while small calls to `first` keep going.
fn both_ways(router: &Router, first: &Context, leaf: &Context, rounds: u32) -> Result<()> {
    let first = first.clone();
    let chatter = std::thread::spawn(move || -> Result<u64> {
        let mut n = 0;
        for i in 0..300u64 {
            ensure!(
                first.call(add, (i, 1))? == i + 1,
                "call {i} to the first hop"
            );
            n += 1;
        }
        Ok(n)
    });

    for round in 0..rounds {
        // Upward: the leaf streams to the master.
        let (tx, rx) = router.channel::<Blob>();
        leaf.call_no_reply(send_patterns, (sizes(), tx))?;
        let got = receive_all(&rx)?;
        ensure!(
            got.len() == sizes().len(),
            "round {round}: {} blobs",
            got.len()
        );
        for (i, (blob, &len)) in got.iter().zip(sizes().iter()).enumerate() {
            ensure!(
                blob.len() == len as usize && **blob == pattern(i as u32, len)[..],
                "round {round}: blob {i} of {len} bytes came up as {} different bytes",
                blob.len()
            );
        }
        // Downward: the master sends them to the leaf, several in flight.
        let pending: Vec<_> = sizes()
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let data = pattern(i as u32 + 100, len);
                (checksum(&data), leaf.call_async(blob_checksum, (data,)))
            })
            .collect();
        for (i, (want, call)) in pending.into_iter().enumerate() {
            let got = call
                .get_timeout(Duration::from_secs(30))
                .with_context(|| format!("round {round}: blob {i} down"))?;
            ensure!(got == want, "round {round}: blob {i} arrived altered");
        }
    }
    let calls = chatter
        .join()
        .map_err(|_| anyhow::anyhow!("the chatter thread panicked"))??;
    ensure!(calls == 300);
    Ok(())
}

pub fn source_dying_mid_frame_drops_only_that_frame(router: &Router) -> Result<()> {
    let chain = Chain::new(router, "relay-src", 2)?;
    let (mid, leaf) = (&chain.hops[0], &chain.hops[1]);
    let leaf_pid = chain.pids()?[1];
    // A frame for the master of 4 MiB, of which the leaf writes the header
    // and 1 MiB, then dies: its parent has relayed that much already.
    let (head, _) = frame_for_master(leaf, 0xAB);
    let mark = capture::mark();
    write_raw_and_wait(leaf, leaf_pid, head)?;
    kill9(leaf_pid)?;
    let dropped = capture::wait_for(mark, Duration::from_secs(10), |e| {
        e.message.contains("lost half-way")
    });
    ensure!(
        dropped.is_some(),
        "the master did not drop the broken frame; warnings: {:?}",
        capture::warnings_since(mark, 10)
    );
    ensure!(
        !capture::since(mark)
            .iter()
            .any(|e| e.message.contains("unknown handle") || e.message.contains("protocol error")),
        "the broken frame was delivered or broke the stream: {:?}",
        capture::warnings_since(mark, 10)
    );
    // The stream from the relay is still in step: calls, and bulk, still pass.
    ensure!(mid.call_timeout(add, (2, 2), Duration::from_secs(10))? == 4);
    let data = pattern(9, 2 << 20);
    ensure!(
        mid.call_timeout(blob_checksum, (data.clone(),), Duration::from_secs(10))?
            == checksum(&data)
    );
    Ok(())
}

pub fn next_hop_dying_mid_frame_fails_only_that_call(router: &Router) -> Result<()> {
    let chain = Chain::new(router, "relay-dst", 2)?;
    let (mid, leaf) = (&chain.hops[0], &chain.hops[1]);
    let leaf_pid = chain.pids()?[1];
    // The leaf stops reading; a big frame for it fills the relay's pipe and
    // the kernel buffers, and waits there until the leaf dies.
    leaf.call_no_reply(stop_self, ())?;
    ensure!(
        wait_until(Duration::from_secs(10), || proc_state(leaf_pid)
            == Some('T')),
        "the leaf did not stop: {:?}",
        proc_state(leaf_pid)
    );
    let data = pattern(3, 32 << 20);
    let call = leaf.call_async(blob_checksum, (data,));
    std::thread::sleep(Duration::from_millis(300));
    kill9(leaf_pid)?;
    match call.get_timeout(Duration::from_secs(10)) {
        Err(Error::Timeout(_)) => bail!("the call through the dead hop hung"),
        Err(_) => {}
        Ok(v) => bail!("a call to a stopped, killed context returned {v}"),
    }
    // The relay threw the rest of the frame away and serves on.
    ensure!(mid.call_timeout(add, (3, 4), Duration::from_secs(10))? == 7);
    let data = pattern(4, 3 << 20);
    ensure!(
        mid.call_timeout(blob_checksum, (data.clone(),), Duration::from_secs(10))?
            == checksum(&data)
    );
    Ok(())
}

pub fn stalled_source_is_given_up_and_buffered_after(router: &Router) -> Result<()> {
    let chain = Chain::new(router, "relay-stall", 2)?;
    let (mid, leaf) = (&chain.hops[0], &chain.hops[1]);
    let leaf_pid = chain.pids()?[1];
    // The leaf writes the header and 1 MiB of a 4 MiB frame for the master,
    // and then nothing for a while: the relay holds its stream to the master
    // for that frame until it gives up on it.
    let (head, rest) = frame_for_master(leaf, 0xCD);
    let mark = capture::mark();
    write_raw_and_wait(leaf, leaf_pid, head)?;
    // The relay's own reply waits behind the frame, then passes: no hang.
    let started = std::time::Instant::now();
    ensure!(mid.call_timeout(add, (1, 1), Duration::from_secs(20))? == 2);
    let waited = started.elapsed();
    ensure!(
        capture::wait_for(mark, Duration::from_secs(10), |e| e
            .message
            .contains("lost half-way"))
        .is_some(),
        "the master did not drop the given-up frame (the relay's reply took {waited:?}); warnings: {:?}",
        capture::warnings_since(mark, 10)
    );
    ensure!(
        capture::wait_for(mark, Duration::from_secs(5), |e| e
            .message
            .contains("stopped half-way"))
        .is_some(),
        "the relay did not say why it gave the frame up: {:?}",
        capture::warnings_since(mark, 10)
    );
    // The leaf finishes its frame late: the relay drops the rest, and the
    // stream is in step again; its large frames now arrive buffered, whole.
    write_raw_and_wait(leaf, leaf_pid, rest)?;
    ensure!(leaf.call_timeout(add, (5, 5), Duration::from_secs(10))? == 10);
    let (tx, rx) = router.channel::<Blob>();
    leaf.call_no_reply(send_patterns, (sizes(), tx))?;
    let got = receive_all(&rx)?;
    ensure!(got.len() == sizes().len(), "{} blobs", got.len());
    for (i, (blob, &len)) in got.iter().zip(sizes().iter()).enumerate() {
        ensure!(**blob == pattern(i as u32, len)[..], "blob {i} altered");
    }
    Ok(())
}

pub fn slow_next_hop_is_not_a_stalled_source(router: &Router) -> Result<()> {
    let chain = Chain::new(router, "relay-slow", 2)?;
    let leaf = &chain.hops[1];
    let leaf_pid = chain.pids()?[1];
    // The leaf stops reading for longer than a relay lets a silent source
    // hold a frame; the relay waits on its next hop, not on its source, so
    // the frame must arrive whole once the leaf runs again.
    leaf.call_no_reply(stop_self, ())?;
    ensure!(
        wait_until(Duration::from_secs(10), || proc_state(leaf_pid)
            == Some('T')),
        "the leaf did not stop: {:?}",
        proc_state(leaf_pid)
    );
    let mark = capture::mark();
    let data = pattern(5, 16 << 20);
    let want = checksum(&data);
    let call = leaf.call_async(blob_checksum, (data,));
    std::thread::sleep(Duration::from_millis(6500));
    let p = rustix::process::Pid::from_raw(leaf_pid as i32).context("leaf pid")?;
    rustix::process::kill_process(p, rustix::process::Signal::CONT)?;
    let got = call
        .get_timeout(Duration::from_secs(20))
        .context("the call after the leaf resumed")?;
    ensure!(got == want, "the frame arrived altered");
    ensure!(
        !capture::since(mark)
            .iter()
            .any(|e| e.message.contains("stopped half-way") || e.message.contains("lost half-way")),
        "a frame was given up: {:?}",
        capture::warnings_since(mark, 10)
    );
    Ok(())
}

/// Writes `bytes` raw on this child's parent stream one at a time, `every_ms`
/// apart: a source that is never quite silent.
#[mitogen::remote]
pub fn drip_raw(bytes: Vec<u8>, every_ms: u64) -> std::io::Result<()> {
    let raw = crate::bad_input::parent_stream_fd()?;
    // SAFETY: the descriptor stays open for the life of the process.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
    for b in bytes {
        loop {
            match rustix::io::write(fd, &[b]) {
                Ok(_) => break,
                Err(rustix::io::Errno::AGAIN) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => return Err(e.into()),
            }
        }
        std::thread::sleep(Duration::from_millis(every_ms));
    }
    Ok(())
}

pub fn dripping_source_is_given_up_too(router: &Router) -> Result<()> {
    let chain = Chain::new(router, "relay-drip", 2)?;
    let (mid, leaf) = (&chain.hops[0], &chain.hops[1]);
    let leaf_pid = chain.pids()?[1];
    // A 4 MiB frame for the master: the header and 1 MiB at once, then a byte
    // every 150 ms. It is never silent for long, but it keeps the relay
    // waiting for more than the 5 s + 4 s its size allows in all.
    let (head, rest) = frame_for_master(leaf, 0xEF);
    let mark = capture::mark();
    let started = std::time::Instant::now();
    write_raw_and_wait(leaf, leaf_pid, head)?;
    let drip = 70;
    let before = written_by(leaf_pid);
    leaf.call_no_reply(drip_raw, (rest[..drip].to_vec(), 150))?;
    let gave_up = capture::wait_for(mark, Duration::from_secs(25), |e| {
        e.message.contains("stopped half-way")
    });
    ensure!(
        gave_up.is_some(),
        "the relay did not give the dripping frame up; warnings: {:?}",
        capture::warnings_since(mark, 10)
    );
    let after = started.elapsed();
    ensure!(
        after < Duration::from_secs(14),
        "the relay held the dripping frame for {after:?}"
    );
    println!("    (given up after {after:.1?})");
    // The relay's own replies pass again at once.
    ensure!(mid.call_timeout(add, (2, 3), Duration::from_secs(5))? == 5);
    // Let the drip finish, then complete the frame: the stream is back in step.
    ensure!(
        wait_until(Duration::from_secs(30), || written_by(leaf_pid)
            >= before + drip as u64),
        "the drip did not finish"
    );
    write_raw_and_wait(leaf, leaf_pid, rest[drip..].to_vec())?;
    ensure!(leaf.call_timeout(add, (5, 5), Duration::from_secs(10))? == 10);
    Ok(())
}

crate::tests! {
    large_frames_through_a_chain_both_ways => 120,
    large_frames_through_an_ssh_hop => 120,
    source_dying_mid_frame_drops_only_that_frame,
    next_hop_dying_mid_frame_fails_only_that_call,
    stalled_source_is_given_up_and_buffered_after,
    slow_next_hop_is_not_a_stalled_source,
    dripping_source_is_given_up_too => 120,
}
