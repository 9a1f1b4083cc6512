//! Answering a transport's password prompt on its pty.
//!
//! The password is typed only while nothing of the target account can be
//! running yet: the prompter is *armed* from the transport's start until the
//! first stage's status line (`MITOGEN-STAGE …`) appears on the data stream,
//! and answers nothing at all after that, whatever the pty shows. From that
//! line on the code running is chosen by the target account (the stage execs
//! a build from that account's cache, which the account can replace), so a
//! later `Password:` on the terminal is never the tool's.
//!
//! Ordering makes that hold against a hostile build: its terminal output is
//! written after the stage's status line, so the stream is read before the
//! pty at every step (see [`crate::core::handshake::read_some`]) and a prompt
//! is answered only once the stream has been found empty *after* the pty was
//! read.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::first_stage::STAGE_MARKER;
use crate::core::error::TransportFailure;
use crate::core::handshake::StepError;
use crate::core::secret::Secret;

/// Most pty output kept while looking for a prompt.
const MAX_TRANSCRIPT: usize = 4096;

/// What a method's prompts look like.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PromptStyle {
    /// Lower-case endings of a password prompt (after trailing blanks).
    pub prompts: &'static [&'static str],
    /// Lower-case phrases that mean the attempt failed, and how.
    pub failures: &'static [(&'static str, TransportFailure)],
}

/// What a transcript shows, as judged by [`Matcher::judge`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing to act on yet.
    Nothing,
    /// It ends in a prompt this hop's password is for.
    Prompt,
    /// It ends in a password prompt that is not the exact one the tool was
    /// told to print: someone else is asking, and gets no answer.
    Foreign(String),
    /// The tool refused (the text as said, trimmed).
    Failed(TransportFailure, String),
}

/// Recognises prompts and refusals in a transcript: a pure function of the
/// method's style and the text, kept apart from the I/O so it can be tested
/// (and fuzzed) alone.
#[derive(Clone, Debug, Default)]
pub(crate) struct Matcher {
    /// Lower-case prompt endings: the style's and the caller's.
    prompts: Vec<String>,
    /// The only prompt answered, when the tool prints one we chose (sudo's
    /// `-p`); lower case.
    exact: Option<String>,
    /// Lower-case failure phrases: the caller's first, then the style's.
    failures: Vec<(String, TransportFailure)>,
}

impl Matcher {
    /// The matcher for `spec`.
    pub(crate) fn new(spec: &super::PromptSpec) -> Matcher {
        let lower = |s: &str| s.trim().to_lowercase();
        let mut prompts: Vec<String> = spec.extra_prompts.iter().map(|p| lower(p)).collect();
        prompts.extend(spec.style.prompts.iter().map(|p| p.to_string()));
        let mut failures: Vec<(String, TransportFailure)> = spec
            .extra_failures
            .iter()
            .map(|(p, k)| (lower(p), *k))
            .collect();
        failures.extend(spec.style.failures.iter().map(|(p, k)| (p.to_string(), *k)));
        prompts.retain(|p| !p.is_empty());
        failures.retain(|(p, _)| !p.is_empty());
        let exact = spec
            .exact_prompt
            .as_deref()
            .map(lower)
            .filter(|p| !p.is_empty());
        Matcher {
            prompts,
            exact,
            failures,
        }
    }

    /// What `transcript` (the pty's output since the last answer) shows.
    pub(crate) fn judge(&self, transcript: &[u8]) -> Verdict {
        let said = String::from_utf8_lossy(transcript);
        let text = said.to_lowercase();
        for (phrase, kind) in &self.failures {
            if text.contains(phrase.as_str()) {
                // Matched without case, reported as said: a host key
                // fingerprint (base64) is wrong in lower case.
                return Verdict::Failed(*kind, said.trim().to_owned());
            }
        }
        let trimmed = text.trim_end();
        let prompt = self.prompts.iter().any(|p| trimmed.ends_with(p.as_str()));
        let Some(exact) = &self.exact else {
            return if prompt {
                Verdict::Prompt
            } else {
                Verdict::Nothing
            };
        };
        // sudo prints the prompt it was given; sudo-rs puts it in brackets
        // before PAM's own (`[sudo: GIVEN] Password:`). Either way the given
        // prompt, which nobody else knows, is on the last line.
        let last = last_line(trimmed);
        if trimmed.ends_with(exact.as_str()) || (prompt && last.contains(exact.as_str())) {
            return Verdict::Prompt;
        }
        if prompt {
            return Verdict::Foreign(last_line(said.trim()).to_owned());
        }
        Verdict::Nothing
    }
}

/// The last line of `s`, at most 300 bytes of it (cut on a character
/// boundary).
fn last_line(s: &str) -> &str {
    let line = s.rsplit(['\n', '\r']).next().unwrap_or(s);
    let mut start = line.len().saturating_sub(300);
    while !line.is_char_boundary(start) {
        start += 1;
    }
    &line[start..]
}

/// Watches a pty for prompts and answers them once.
pub(crate) struct Prompter {
    master: OwnedFd,
    /// Our copy of the terminal side, held while prompts may come: between the
    /// transport's exec and its opening `/dev/tty`, nobody else has it open, and
    /// the master would read as hung up. `None` on a full pty, whose data
    /// stream must see end-of-file when the child is gone.
    slave: Option<OwnedFd>,
    password: Option<Secret>,
    matcher: Matcher,
    /// The prompts arrive in the data stream itself (a full pty), which the
    /// bootstrap shows us with [`stream_data`](Self::stream_data); `master` is
    /// then only written to.
    inline: bool,
    transcript: Vec<u8>,
    /// The transcript grew since it was last judged.
    fresh: bool,
    answered: u32,
    closed: bool,
    /// False once the stage's status line was seen: nothing is answered or
    /// judged after it.
    armed: bool,
    /// The stream's last bytes, to find the status line's marker split
    /// across two reads.
    stream_tail: Vec<u8>,
}

impl Prompter {
    /// A prompter for the pty `master`; `slave` is held open while prompts may
    /// come (see the field). With `inline`, `master` is (a copy of) the data
    /// stream and prompts are seen through [`stream_data`](Self::stream_data).
    pub(crate) fn new(
        master: OwnedFd,
        slave: Option<OwnedFd>,
        spec: &super::PromptSpec,
        inline: bool,
    ) -> Prompter {
        Prompter {
            master,
            slave,
            password: spec.password.clone(),
            matcher: Matcher::new(spec),
            inline,
            transcript: Vec::new(),
            fresh: false,
            answered: 0,
            closed: false,
            armed: true,
            stream_tail: Vec::new(),
        }
    }

    /// The pty master, while it can still carry a prompt we would answer.
    pub(crate) fn fd(&self) -> Option<BorrowedFd<'_>> {
        (self.armed && !self.closed && !self.inline).then(|| self.master.as_fd())
    }

    /// Whether pty output read since the last look waits to be judged.
    pub(crate) fn pending(&self) -> bool {
        self.armed && self.fresh
    }

    /// Whether prompts are still answered (the stage has not started).
    #[cfg(test)]
    pub(crate) fn armed(&self) -> bool {
        self.armed
    }

    /// Keeps the pty open for the life of the connection: closing the master
    /// would hang up the transport. A full pty's master is the stream itself,
    /// which must close when the stream does, so no copy is kept.
    pub(crate) fn into_master(mut self) -> Option<OwnedFd> {
        drop(self.slave.take());
        self.password = None;
        (!self.inline).then_some(self.master)
    }

    /// Looks at data read from the data stream: the stage's status line
    /// disarms the prompter for good; on a full pty, text before it is where
    /// the prompts are.
    pub(crate) fn stream_data(&mut self, data: &[u8]) -> Result<(), StepError> {
        if !self.armed {
            return Ok(());
        }
        let mut window = std::mem::take(&mut self.stream_tail);
        window.extend_from_slice(data);
        if window
            .windows(STAGE_MARKER.len())
            .any(|w| w == STAGE_MARKER)
        {
            // Anything that came with the status line is the target's, and a
            // tool waiting for its answer prints nothing after its prompt.
            self.disarm();
            return Ok(());
        }
        let keep = window.len().min(STAGE_MARKER.len() - 1);
        self.stream_tail = window.split_off(window.len() - keep);
        if self.inline {
            self.push(data);
            return self.check();
        }
        Ok(())
    }

    /// Stops answering: the target account's code may be running.
    fn disarm(&mut self) {
        self.armed = false;
        self.fresh = false;
        self.transcript.clear();
        self.stream_tail.clear();
    }

    fn push(&mut self, data: &[u8]) {
        self.transcript.extend_from_slice(data);
        if self.transcript.len() > MAX_TRANSCRIPT {
            let cut = self.transcript.len() - MAX_TRANSCRIPT;
            self.transcript.drain(..cut);
        }
        self.fresh = true;
    }

    /// Reads what the pty has, without judging it: the caller first reads
    /// whatever the data stream has by now (see [`check`](Self::check)).
    pub(crate) fn read_pty(&mut self) -> Result<(), StepError> {
        if !self.armed {
            return Ok(());
        }
        let mut buf = [MaybeUninit::<u8>::uninit(); 1024];
        match rustix::io::read(&self.master, &mut buf) {
            Ok(([], _)) | Err(rustix::io::Errno::IO) => {
                self.closed = true;
                Ok(())
            }
            Ok((data, _)) => {
                self.push(data);
                Ok(())
            }
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => Ok(()),
            Err(e) => Err(StepError::Io(e.into())),
        }
    }

    /// The transport's stream ended: reads what the pty still holds and
    /// reports a refusal it shows (a wrong password, …), answering nothing.
    pub(crate) fn closing(&mut self) -> Result<(), StepError> {
        if !self.armed {
            return Ok(());
        }
        if !self.inline {
            // Bounded: a tool that has exited writes nothing more.
            for _ in 0..16 {
                if self.closed || !crate::core::handshake::readable_now(self.master.as_fd())? {
                    break;
                }
                self.read_pty()?;
            }
        }
        match self.matcher.judge(&self.transcript) {
            Verdict::Failed(kind, text) => Err(StepError::Refused(kind, text)),
            _ => Ok(()),
        }
    }

    /// Answers a prompt at the end of the transcript, or reports a failure.
    /// The caller must have read the data stream empty after the pty output
    /// in the transcript was read, so that a status line written before that
    /// output has disarmed us.
    pub(crate) fn check(&mut self) -> Result<(), StepError> {
        if !self.armed || !self.fresh {
            return Ok(());
        }
        self.fresh = false;
        match self.matcher.judge(&self.transcript) {
            Verdict::Nothing => Ok(()),
            Verdict::Failed(kind, text) => Err(StepError::Refused(kind, text)),
            Verdict::Foreign(line) => Err(StepError::Refused(
                TransportFailure::PasswordRequired,
                format!(
                    "a password was asked for with a prompt other than the one the tool was \
                     given ({line:?}); not answered"
                ),
            )),
            Verdict::Prompt => self.answer(),
        }
    }

    fn answer(&mut self) -> Result<(), StepError> {
        let Some(password) = &self.password else {
            return Err(StepError::Refused(
                TransportFailure::PasswordRequired,
                "a password was asked for and none was given".to_owned(),
            ));
        };
        if self.answered > 0 {
            // A second prompt means the first answer was wrong: say so now
            // rather than when the transport gives up.
            return Err(StepError::Refused(
                TransportFailure::AuthenticationFailed,
                "the password was refused".to_owned(),
            ));
        }
        self.answered += 1;
        self.transcript.clear();
        let mut line = zeroize::Zeroizing::new(Vec::with_capacity(password.expose().len() + 1));
        line.extend_from_slice(password.expose());
        line.push(b'\n');
        let mut data: &[u8] = &line;
        while !data.is_empty() {
            match rustix::io::write(&self.master, data) {
                Ok(n) => data = &data[n..],
                Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => continue,
                Err(e) => return Err(StepError::Io(e.into())),
            }
        }
        Ok(())
    }
}

/// The handshake drives the prompter through this (core knows no prompts).
impl crate::core::handshake::Prompts for Prompter {
    fn pending(&self) -> bool {
        Prompter::pending(self)
    }
    fn check(&mut self) -> Result<(), StepError> {
        Prompter::check(self)
    }
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        Prompter::fd(self)
    }
    fn read_pty(&mut self) -> Result<(), StepError> {
        Prompter::read_pty(self)
    }
    fn closing(&mut self) -> Result<(), StepError> {
        Prompter::closing(self)
    }
    fn stream_data(&mut self, data: &[u8]) -> Result<(), StepError> {
        Prompter::stream_data(self, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parent::PromptSpec;

    fn spec(exact: Option<&str>) -> PromptSpec {
        PromptSpec {
            style: PromptStyle {
                prompts: &["password:"],
                failures: &[("sorry, try again", TransportFailure::AuthenticationFailed)],
            },
            exact_prompt: exact.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn judges_prompts_and_failures() {
        let m = Matcher::new(&spec(None));
        assert_eq!(m.judge(b"banner\r\nPassword: "), Verdict::Prompt);
        assert_eq!(m.judge(b"Password: x"), Verdict::Nothing);
        assert!(matches!(
            m.judge(b"Sorry, try again.\nPassword:"),
            Verdict::Failed(TransportFailure::AuthenticationFailed, _)
        ));
        assert_eq!(m.judge("\u{fc}\u{e9}\u{ff}".as_bytes()), Verdict::Nothing);
        assert_eq!(m.judge(&[0xff, 0xfe, b':']), Verdict::Nothing);
    }

    #[test]
    fn an_exact_prompt_is_the_only_one_answered() {
        let m = Matcher::new(&spec(Some("[mitogen-sudo 0123abcd] password:")));
        assert_eq!(
            m.judge(b"lecture\r\n[mitogen-sudo 0123abcd] password:"),
            Verdict::Prompt
        );
        assert!(matches!(m.judge(b"Password: "), Verdict::Foreign(_)));
        assert!(matches!(
            m.judge(b"[mitogen-sudo 0123abce] password:"),
            Verdict::Foreign(_)
        ));
        // sudo-rs's form, the given prompt in brackets before PAM's.
        assert_eq!(
            m.judge(b"[sudo: [mitogen-sudo 0123abcd] password:] Password: "),
            Verdict::Prompt
        );
        // On an earlier line it proves nothing about the last one.
        assert!(matches!(
            m.judge(b"[mitogen-sudo 0123abcd] password:\nPassword: "),
            Verdict::Foreign(_)
        ));
        assert!(matches!(
            m.judge(
                "\u{e9}"
                    .repeat(300)
                    .as_bytes()
                    .iter()
                    .chain(b"\nPassword:")
                    .copied()
                    .collect::<Vec<u8>>()
                    .as_slice()
            ),
            Verdict::Foreign(_)
        ));
    }

    #[test]
    fn the_status_line_disarms_even_split_across_reads() {
        let (a, b) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let mut s = spec(None);
        s.password = Some(Secret::new("x"));
        let mut p = Prompter::new(a, Some(b), &s, false);
        p.stream_data(b"noise MITOGEN-ST").unwrap();
        assert!(p.armed());
        p.stream_data(b"AGE cached\n").unwrap();
        assert!(!p.armed());
        assert!(p.fd().is_none());
        p.push(b"Password:");
        p.fresh = true;
        // Disarmed: nothing is judged, let alone answered.
        p.check().unwrap();
        assert_eq!(p.answered, 0);
    }
}
