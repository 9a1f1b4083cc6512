//! [`Secret`]: a password that is never printed and is wiped when dropped.

use zeroize::Zeroizing;

/// A password or passphrase.
///
/// It is sent only to the transport prompt that asks for it (over a pty, never in
/// a process's arguments or environment), never logged (its `Debug` form is
/// `Secret(***)`), and its memory is overwritten with zeros when the last copy
/// is dropped.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a password.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(Zeroizing::new(s.into()))
    }

    /// Reads a password from the first line of a file (a trailing newline is
    /// not part of it).
    pub fn from_file(path: impl AsRef<std::path::Path>) -> std::io::Result<Secret> {
        let text = Zeroizing::new(std::fs::read_to_string(path)?);
        let line = text.lines().next().unwrap_or("");
        Ok(Secret::new(line))
    }

    /// The password's bytes, for writing to a prompt.
    pub(crate) fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret::new(s)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret::new(s)
    }
}
