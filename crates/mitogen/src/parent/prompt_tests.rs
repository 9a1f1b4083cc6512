//! The handshake's reads (`core::handshake::read_some`) driving a real
//! [`Prompter`] on a real pty: which of a status line and a prompt wins.

use std::os::fd::AsFd;
use std::time::Instant;

use super::prompt::Prompter;
use crate::core::error::TransportFailure;
use crate::core::handshake::{read_some, readable_now};
use crate::parent::prompt::PromptStyle;
use crate::parent::PromptSpec;

/// A status line on the stream and a prompt on the pty, both waiting: the
/// stream is read first, so the prompt is never answered.
#[test]
fn the_stream_is_read_before_the_pty() {
    let (master, slave) = crate::parent::pty::open_pty().unwrap();
    let tty = slave.try_clone().unwrap();
    let spec = PromptSpec {
        password: Some("bait".into()),
        style: PromptStyle {
            prompts: &["password:"],
            failures: &[("sorry", TransportFailure::AuthenticationFailed)],
        },
        ..Default::default()
    };
    let mut prompter = Prompter::new(master, Some(slave), &spec, false);
    let (ours, theirs) = crate::core::side::socketpair().unwrap();
    rustix::io::write(&theirs, b"MITOGEN-STAGE cached\n").unwrap();
    rustix::io::write(&tty, b"Password: ").unwrap();
    // The pty's line discipline hands the bytes over asynchronously.
    let deadline = Instant::now() + std::time::Duration::from_secs(2);
    while !readable_now(prompter.fd().unwrap()).unwrap() {
        assert!(Instant::now() < deadline, "the pty never became readable");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let mut out = Vec::new();
    read_some(ours.as_fd(), &mut out, deadline, Some(&mut prompter)).unwrap();
    assert_eq!(out, b"MITOGEN-STAGE cached\n");
    assert!(!prompter.armed());
    // More reads answer nothing either.
    rustix::io::write(&theirs, b"MITOGEN-RS/1\n").unwrap();
    read_some(ours.as_fd(), &mut out, deadline, Some(&mut prompter)).unwrap();
    crate::core::side::set_nonblock(tty.as_fd(), true).unwrap();
    let mut buf = [0u8; 64];
    let got = rustix::io::read(&tty, &mut buf);
    assert!(
        matches!(got, Err(rustix::io::Errno::AGAIN)),
        "something was typed into the terminal: {got:?}"
    );
}

/// Without a status line, the same prompt is answered once.
#[test]
fn a_prompt_before_the_status_line_is_answered() {
    let (master, slave) = crate::parent::pty::open_pty().unwrap();
    let tty = slave.try_clone().unwrap();
    let spec = PromptSpec {
        password: Some("right".into()),
        style: PromptStyle {
            prompts: &["password:"],
            failures: &[],
        },
        ..Default::default()
    };
    let mut prompter = Prompter::new(master, Some(slave), &spec, false);
    let (ours, theirs) = crate::core::side::socketpair().unwrap();
    rustix::io::write(&tty, b"Password: ").unwrap();
    let answerer = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let n = rustix::io::read(&tty, &mut buf).unwrap();
        rustix::io::write(&theirs, b"MITOGEN-STAGE cached\n").unwrap();
        (buf[..n].to_vec(), theirs)
    });
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    let mut out = Vec::new();
    read_some(ours.as_fd(), &mut out, deadline, Some(&mut prompter)).unwrap();
    let (typed, _theirs) = answerer.join().unwrap();
    assert_eq!(typed, b"right\n");
    assert!(!prompter.armed());
}
