//! The program's own executable, as shipped to remote hosts (the seed's
//! `ModuleResponder`, for a program that ships itself rather than modules).
//!
//! A binary is identified by a content hash, which names it in each remote
//! user's cache, so a host that already has this build runs it at once. A
//! master may also be given builds for other systems, keyed by what `uname -sm`
//! prints there (`Linux aarch64`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::core::error::{Error, Result};

/// Hex digits of the BLAKE3 hash used to name a binary (128 bits).
pub(crate) const HASH_HEX: usize = 32;

/// One build of the program.
pub struct Binary {
    /// Where it was read from.
    pub path: PathBuf,
    /// Hex content hash (its name in remote caches).
    pub hash: String,
    /// The bytes.
    pub bytes: Arc<Vec<u8>>,
}

impl std::fmt::Debug for Binary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Binary")
            .field("path", &self.path)
            .field("hash", &self.hash)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// The hex name of `bytes` in remote caches.
pub fn content_hash(bytes: &[u8]) -> String {
    let mut hex = blake3::hash(bytes).to_hex().to_string();
    hex.truncate(HASH_HEX);
    hex
}

impl Binary {
    /// Reads and hashes the file at `path`.
    pub fn load(path: &Path) -> Result<Binary> {
        let bytes =
            std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Ok(Binary {
            path: path.to_owned(),
            hash: content_hash(&bytes),
            bytes: Arc::new(bytes),
        })
    }

    /// Starts making the compressed bytes on a thread of its own, so that a
    /// later [`gzipped`](Self::gzipped) finds them ready: called when a
    /// transport starts logging in (hundreds of milliseconds over ssh), as
    /// reading and checking the stored file, or compressing, takes tens to
    /// hundreds of milliseconds of CPU.
    pub fn prepare_gzipped(self: &Arc<Self>) {
        if !crate::core::packed::claim(&self.hash) {
            return;
        }
        let me = self.clone();
        let _ = std::thread::Builder::new()
            .name("mitogen-gzip".into())
            .spawn(move || {
                me.gzipped();
            });
    }

    /// The bytes gzip-compressed at gzip's best level, made once per build
    /// and kept on this machine's disk (`$XDG_CACHE_HOME/mitogen-packed`),
    /// a stored copy used only once it is found to inflate to exactly these
    /// bytes (`core/packed.rs`). Made once per process.
    pub fn gzipped(&self) -> Arc<Vec<u8>> {
        crate::core::packed::gzipped(&self.hash, &self.bytes)
    }
}

/// What `uname -sm` prints on this machine, e.g. `Linux x86_64`.
pub fn own_system() -> String {
    let u = rustix::system::uname();
    format!(
        "{} {}",
        u.sysname().to_string_lossy(),
        u.machine().to_string_lossy()
    )
}

/// The builds a master can ship: its own, and any given for other systems.
#[derive(Default)]
pub(crate) struct Binaries {
    own: OnceLock<std::result::Result<Arc<Binary>, String>>,
    extra: Mutex<HashMap<String, Arc<Binary>>>,
}

impl Binaries {
    /// Builds whose own is `bytes` instead of the running executable: a
    /// stand-in small enough to upload over and over (the fuzz targets').
    pub(crate) fn with_own_bytes(bytes: Vec<u8>) -> Binaries {
        let own = Binary {
            path: PathBuf::new(),
            hash: content_hash(&bytes),
            bytes: Arc::new(bytes),
        };
        Binaries {
            own: OnceLock::from(Ok(Arc::new(own))),
            extra: Mutex::default(),
        }
    }

    /// This program's own executable (read and hashed once).
    pub(crate) fn own(&self) -> Result<Arc<Binary>> {
        self.own
            .get_or_init(|| {
                let path = std::env::current_exe().map_err(|e| e.to_string())?;
                // The running image still reads if the file was replaced on disk.
                let bytes = crate::sys::read_own_exe()
                    .or_else(|_| std::fs::read(&path))
                    .map_err(|e| format!("reading own executable: {e}"))?;
                Ok(Arc::new(Binary {
                    path,
                    hash: content_hash(&bytes),
                    bytes: Arc::new(bytes),
                }))
            })
            .clone()
            .map_err(|e| Error::io("loading the program", std::io::Error::other(e)))
    }

    /// Registers a build for `system` (as `uname -sm` prints it).
    pub(crate) fn add(&self, system: &str, path: &Path) -> Result<()> {
        let b = Binary::load(path)?;
        self.extra
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(system.to_owned(), Arc::new(b));
        Ok(())
    }

    /// `(system, hash)` of every build given for another system, sorted.
    pub(crate) fn others(&self) -> Vec<(String, String)> {
        let own = own_system();
        let extra = self.extra.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<(String, String)> = extra
            .iter()
            .filter(|(system, _)| **system != own)
            .map(|(system, b)| (system.clone(), b.hash.clone()))
            .collect();
        v.sort();
        v
    }

    /// The build for `system`, or an error naming what is available.
    pub(crate) fn for_system(&self, system: &str) -> std::result::Result<Arc<Binary>, String> {
        if system == own_system() {
            return self.own().map_err(|e| e.to_string());
        }
        let extra = self.extra.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = extra.get(system) {
            return Ok(b.clone());
        }
        let mut have: Vec<String> = extra.keys().cloned().collect();
        have.push(own_system());
        have.sort();
        Err(format!(
            "the remote runs {system:?} and this program has builds only for {}; \
             build one for that system and pass it with RouterBuilder::binary",
            have.join(", ")
        ))
    }
}
