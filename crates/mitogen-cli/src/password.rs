//! The password for `sudo`, `su` and `doas` hops: from a file, or typed at the
//! terminal with echo off. Never from the command line, where every user of
//! the machine could read it in `ps`.

use std::io::{Read, Write};

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
    // Read a byte at a time into one buffer that is wiped when dropped and
    // never grows (a growing buffer leaves copies behind in freed memory, and
    // a `BufReader` keeps its own): the terminal hands over one line anyway.
    let mut line = zeroize::Zeroizing::new(vec![0u8; MAX_LINE]);
    let mut len = 0;
    let mut byte = [0u8; 1];
    loop {
        match (&tty).read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if len == MAX_LINE => {
                anyhow::bail!("the password is longer than {MAX_LINE} bytes")
            }
            Ok(_) => {
                line[len] = byte[0];
                len += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
    }
    zeroize::Zeroize::zeroize(&mut byte);
    let text = line[..len].strip_suffix(b"\r").unwrap_or(&line[..len]);
    let text = std::str::from_utf8(text)
        .map_err(|_| anyhow::anyhow!("the password is not valid UTF-8"))?;
    Ok(Secret::new(text))
}

/// Longest password accepted at the terminal.
const MAX_LINE: usize = 4096;
