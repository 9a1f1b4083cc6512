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

/// A secret crosses the wire only inside the connection request for the hop
/// that needs it (e.g. the sudo password for a sudo hop started by an
/// intermediate context); it is never logged on either side.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(Secret::new)
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
