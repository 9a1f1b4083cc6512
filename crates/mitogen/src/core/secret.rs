//! [`Secret`]: a password that is never printed and is wiped when dropped.

use zeroize::Zeroizing;

/// Most bytes of a password file's first line that [`Secret::from_file`]
/// reads.
const MAX_FILE_LINE: usize = 4096;

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

    /// Reads a password from the first line of a file (a trailing newline,
    /// or `\r\n`, is not part of it). At most 4 KiB are read, into one
    /// buffer that is wiped when dropped and never grows (a growing buffer
    /// leaves copies of the password in freed memory).
    pub fn from_file(path: impl AsRef<std::path::Path>) -> std::io::Result<Secret> {
        use std::io::Read;
        let mut file = std::fs::File::open(path)?;
        let mut buf = Zeroizing::new(vec![0u8; MAX_FILE_LINE]);
        let mut len = 0;
        while len < buf.len() && !buf[..len].contains(&b'\n') {
            match file.read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        let line = match buf[..len].iter().position(|&b| b == b'\n') {
            Some(end) => &buf[..end],
            None if len == buf.len() => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("the first line is longer than {MAX_FILE_LINE} bytes"),
                ))
            }
            None => &buf[..len],
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = std::str::from_utf8(line).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "the password is not UTF-8")
        })?;
        Ok(Secret::new(text))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_file_takes_the_first_line_only() {
        let dir = std::env::temp_dir().join(format!("mitogen-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pw");
        for (text, want) in [
            ("s3cret\nsecond\n", Some("s3cret")),
            ("s3cret\r\n", Some("s3cret")),
            ("no newline", Some("no newline")),
            ("", Some("")),
            ("\u{e9}t\u{e9}\n", Some("\u{e9}t\u{e9}")),
        ] {
            std::fs::write(&f, text).unwrap();
            let s = Secret::from_file(&f).ok();
            assert_eq!(
                s.as_ref().map(Secret::expose),
                want.map(str::as_bytes),
                "{text:?}"
            );
        }
        std::fs::write(&f, "x".repeat(MAX_FILE_LINE + 10)).unwrap();
        assert!(Secret::from_file(&f).is_err());
        std::fs::write(&f, [0xffu8, 0xfe, b'\n']).unwrap();
        assert!(Secret::from_file(&f).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
