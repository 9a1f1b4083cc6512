//! Answering a transport's password prompt on its pty.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::bootstrap::StepError;
use crate::core::error::TransportFailure;
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

/// Watches a pty for prompts and answers them once.
pub(crate) struct Prompter {
    master: OwnedFd,
    /// Our copy of the terminal side, held while prompts may come: between the
    /// transport's exec and its opening `/dev/tty`, nobody else has it open, and
    /// the master would read as hung up. `None` on a full pty, whose data
    /// stream must see end-of-file when the child is gone.
    slave: Option<OwnedFd>,
    password: Option<Secret>,
    /// Lower-case prompt endings: the style's and the caller's.
    prompts: Vec<String>,
    /// Lower-case failure phrases: the caller's first, then the style's.
    failures: Vec<(String, TransportFailure)>,
    /// The prompts arrive in the data stream itself (a full pty), which the
    /// bootstrap shows us with [`observe`](Self::observe); `master` is then
    /// only written to.
    inline: bool,
    transcript: Vec<u8>,
    answered: u32,
    closed: bool,
}

impl Prompter {
    /// A prompter for the pty `master`; `slave` is held open while prompts may
    /// come (see the field). With `inline`, `master` is (a copy of) the data
    /// stream and prompts are seen through [`observe`](Self::observe).
    pub(crate) fn new(
        master: OwnedFd,
        slave: Option<OwnedFd>,
        spec: &super::PromptSpec,
        inline: bool,
    ) -> Prompter {
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
        Prompter {
            master,
            slave,
            password: spec.password.clone(),
            prompts,
            failures,
            inline,
            transcript: Vec::new(),
            answered: 0,
            closed: false,
        }
    }

    /// The pty master, while it can still carry a prompt.
    pub(crate) fn fd(&self) -> Option<BorrowedFd<'_>> {
        (!self.closed && !self.inline).then(|| self.master.as_fd())
    }

    /// Keeps the pty open for the life of the connection: closing the master
    /// would hang up the transport. A full pty's master is the stream itself,
    /// which must close when the stream does, so no copy is kept.
    pub(crate) fn into_master(self) -> Option<OwnedFd> {
        drop(self.slave);
        (!self.inline).then_some(self.master)
    }

    /// Looks at data read from a full pty's stream for a prompt or a failure.
    pub(crate) fn observe(&mut self, data: &[u8]) -> Result<(), StepError> {
        if !self.inline {
            return Ok(());
        }
        self.transcript.extend_from_slice(data);
        self.check()
    }

    /// Reads what the pty has and answers a prompt, or reports a failure.
    pub(crate) fn on_readable(&mut self) -> Result<(), StepError> {
        let mut buf = [MaybeUninit::<u8>::uninit(); 1024];
        match rustix::io::read(&self.master, &mut buf) {
            Ok(([], _)) | Err(rustix::io::Errno::IO) => {
                self.closed = true;
                return Ok(());
            }
            Ok((data, _)) => self.transcript.extend_from_slice(data),
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => return Ok(()),
            Err(e) => return Err(StepError::Io(e.into())),
        }
        self.check()
    }

    /// Answers a prompt at the end of the transcript, or reports a failure.
    fn check(&mut self) -> Result<(), StepError> {
        if self.transcript.len() > MAX_TRANSCRIPT {
            let cut = self.transcript.len() - MAX_TRANSCRIPT;
            self.transcript.drain(..cut);
        }
        let said = String::from_utf8_lossy(&self.transcript);
        let text = said.to_lowercase();
        for (phrase, kind) in &self.failures {
            if text.contains(phrase.as_str()) {
                // Matched without case, reported as said: a host key
                // fingerprint (base64) is wrong in lower case.
                return Err(StepError::Refused(*kind, said.trim().to_owned()));
            }
        }
        let trimmed = text.trim_end();
        if !self.prompts.iter().any(|p| trimmed.ends_with(p.as_str())) {
            return Ok(());
        }
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
        let mut line = zeroize::Zeroizing::new(password.expose().to_vec());
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
