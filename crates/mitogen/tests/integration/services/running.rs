//! Where and how service calls run: beside the calls on the context's main
//! thread, on threads a panic does not take down, cancelled by their
//! caller, with clear errors for names the callee does not have, and
//! streaming through a channel.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use mitogen::service::{Exposed, Service};
use mitogen::{CallErrorKind, Error, Router};

use super::{kind_of, Faulty, Slow, Streamer, Vault};
use crate::ssh::plus_one;
use crate::util::Guard;

pub fn a_long_service_call_does_not_block_other_calls(router: &Router) -> Result<()> {
    let child = Guard(router.local()?);
    let slow = child.service::<Slow>();
    slow.call(Slow::sleep, 0)?;
    let started = Instant::now();
    let long = slow.call_async(Slow::sleep, 3000);
    std::thread::sleep(Duration::from_millis(100));
    // Functions on the main thread, and another service, go on meanwhile.
    for i in 0..20 {
        ensure!(child.call(plus_one, i)? == i + 1);
    }
    ensure!(child.service::<Vault>().call(Vault::public, ())? == 7);
    let meanwhile = started.elapsed();
    ensure!(
        meanwhile < Duration::from_millis(2500),
        "the other calls took {meanwhile:?} beside a 3 s service call"
    );
    ensure!(long.get_timeout(Duration::from_secs(20))? == 3000);
    ensure!(started.elapsed() >= Duration::from_secs(3));
    Ok(())
}

pub fn a_call_given_up_is_cancelled_in_the_service(router: &Router) -> Result<()> {
    let child = Guard(router.local()?);
    let slow = child.service::<Slow>();
    // Four calls of a minute each occupy every thread, and time out.
    let waits: Vec<_> = (0..4)
        .map(|_| slow.call_async(Slow::sleep, 60_000))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    for w in waits {
        let r = w.get_timeout(Duration::from_millis(100));
        ensure!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
    }
    // Cancelled, the calls stop: the threads are free again at once.
    let started = Instant::now();
    ensure!(slow.call_timeout(Slow::sleep, 1, Duration::from_secs(30))? == 1);
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "a free thread took {:?}",
        started.elapsed()
    );
    Ok(())
}

pub fn a_panicking_method_is_a_call_error_and_the_service_goes_on(router: &Router) -> Result<()> {
    let child = Guard(router.local()?);
    let faulty = child.service::<Faulty>();
    // More panics than the service has threads.
    for i in 0..5 {
        let r = faulty.call(Faulty::boom, format!("number {i}"));
        ensure!(kind_of(&r) == Some(CallErrorKind::Panicked), "{r:?}");
        let text = r.map_err(|e| e.to_string()).err().unwrap_or_default();
        ensure!(
            text.contains(&format!("boom: number {i}")) && text.contains("Faulty::boom"),
            "{text}"
        );
    }
    ensure!(faulty.call(Faulty::fine, ())? == 1);
    let r = faulty.call(Faulty::fails, ());
    ensure!(kind_of(&r) == Some(CallErrorKind::Returned), "{r:?}");
    ensure!(child.call(plus_one, 1)? == 2);
    Ok(())
}

/// A service this program does not have.
struct Ghost;

impl Service for Ghost {
    const NAME: &'static str = "nowhere::Ghost";
}

pub fn unknown_services_and_methods_are_errors(router: &Router) -> Result<()> {
    let child = Guard(router.local()?);
    let r = child
        .service::<Ghost>()
        .call(Exposed::<Ghost, (), u64>::new("haunt"), ());
    ensure!(kind_of(&r) == Some(CallErrorKind::UnknownService), "{r:?}");
    ensure!(r
        .map_err(|e| e.to_string())
        .err()
        .unwrap_or_default()
        .contains("nowhere::Ghost"));
    let r = child
        .service::<Vault>()
        .call(Exposed::<Vault, (), u64>::new("steal"), ());
    ensure!(kind_of(&r) == Some(CallErrorKind::UnknownMethod), "{r:?}");
    ensure!(r
        .map_err(|e| e.to_string())
        .err()
        .unwrap_or_default()
        .contains("steal"));
    // The context goes on serving.
    ensure!(child.service::<Vault>().call(Vault::public, ())? == 7);
    Ok(())
}

pub fn a_method_streams_into_a_channel(router: &Router) -> Result<()> {
    let child = Guard(router.local()?);
    let (tx, rx) = child.channel::<u64>();
    let n = child
        .service::<Streamer>()
        .call(Streamer::count, (1000, tx))?;
    ensure!(n == 1000);
    let mut got = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(v) => got.push(v),
            Err(Error::ChannelClosed(_)) => break,
            Err(e) => return Err(e.into()),
        }
    }
    ensure!(got == (0..1000).collect::<Vec<_>>(), "{} values", got.len());
    Ok(())
}

pub fn a_streaming_call_returns_a_receiver(router: &Router) -> Result<()> {
    let child = Guard(router.local()?);
    let (values, done) = child.service::<Streamer>().stream(Streamer::count, 500);
    let got: Vec<u64> = values.iter().collect();
    ensure!(got == (0..500).collect::<Vec<_>>(), "{} values", got.len());
    ensure!(done.get_timeout(Duration::from_secs(10))? == 500);
    Ok(())
}

crate::tests! {
    a_long_service_call_does_not_block_other_calls,
    a_call_given_up_is_cancelled_in_the_service,
    a_panicking_method_is_a_call_error_and_the_service_goes_on,
    unknown_services_and_methods_are_errors,
    a_method_streams_into_a_channel,
    a_streaming_call_returns_a_receiver,
}
