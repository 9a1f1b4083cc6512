//! The password for `sudo`, `su` and `doas` hops: from a file, or typed at the
//! terminal with echo off. Never from the command line, where every user of
//! the machine could read it in `ps`.

use std::io::{BufRead, BufReader, Write};

use mitogen::Secret;
use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};

/// Puts the terminal's echo back however the prompt ends.
struct Restore<'a> {
    tty: &'a std::fs::File,
    saved: rustix::termios::Termios,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let _ = tcsetattr(self.tty, OptionalActions::Now, &self.saved);
    }
}

/// Asks for a password on the controlling terminal (`/dev/tty`, so that it
/// works with stdin and stdout redirected), with echo off.
pub fn ask(prompt: &str) -> anyhow::Result<Secret> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| {
            anyhow::anyhow!("no terminal to ask for the password on ({e}); use --password-file")
        })?;
    let saved = tcgetattr(&tty)?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    // The newline the user types is still shown, so output goes on below.
    quiet.local_modes.insert(LocalModes::ECHONL);
    tcsetattr(&tty, OptionalActions::Flush, &quiet)?;
    let _restore = Restore { tty: &tty, saved };
    (&tty).write_all(prompt.as_bytes())?;
    let mut line = zeroize::Zeroizing::new(String::new());
    BufReader::new(&tty).read_line(&mut line)?;
    let text = line.trim_end_matches(['\n', '\r']);
    Ok(Secret::new(text))
}
