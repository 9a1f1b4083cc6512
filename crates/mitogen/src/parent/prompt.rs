//! Answering a transport's password prompt on its pty.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::bootstrap::StepError;
use crate::core::error::TransportFailure;
use crate::core::secret::Secret;

/// Most pty output kept while looking for a prompt.
const MAX_TRANSCRIPT: usize = 4096;

/// What a method's prompts look like.
#[derive(Clone, Copy, Debug)]
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
    /// the master would read as hung up.
    slave: Option<OwnedFd>,
    password: Option<Secret>,
    style: PromptStyle,
    transcript: Vec<u8>,
    answered: u32,
    closed: bool,
}

impl Prompter {
    pub(crate) fn new(
        master: OwnedFd,
        slave: OwnedFd,
        password: Option<Secret>,
        style: PromptStyle,
    ) -> Prompter {
        Prompter {
            master,
            slave: Some(slave),
            password,
            style,
            transcript: Vec::new(),
            answered: 0,
            closed: false,
        }
    }

    /// The pty master, while it can still carry a prompt.
    pub(crate) fn fd(&self) -> Option<BorrowedFd<'_>> {
        (!self.closed).then(|| self.master.as_fd())
    }

    /// Keeps the pty open for the life of the connection: closing the master
    /// would hang up the transport.
    pub(crate) fn into_master(self) -> OwnedFd {
        drop(self.slave);
        self.master
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
        if self.transcript.len() > MAX_TRANSCRIPT {
            let cut = self.transcript.len() - MAX_TRANSCRIPT;
            self.transcript.drain(..cut);
        }
        let text = String::from_utf8_lossy(&self.transcript).to_lowercase();
        for (phrase, kind) in self.style.failures {
            if text.contains(phrase) {
                return Err(StepError::Refused(*kind, text.trim().to_owned()));
            }
        }
        let trimmed = text.trim_end();
        if !self.style.prompts.iter().any(|p| trimmed.ends_with(p)) {
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
