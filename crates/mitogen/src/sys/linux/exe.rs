//! This process's own executable.

use std::fs::File;
use std::io;

/// Where Linux shows the image this process runs: it opens the file that was
/// executed, even if a new one has since taken its name or it was deleted.
const OWN_EXE: &str = "/proc/self/exe";

/// Opens the image this process runs (not whatever its path names now).
pub(crate) fn open_own_exe() -> io::Result<File> {
    File::open(OWN_EXE)
}

/// The bytes of the image this process runs.
pub(crate) fn read_own_exe() -> io::Result<Vec<u8>> {
    std::fs::read(OWN_EXE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn the_own_image_is_the_running_test_binary() {
        let by_path = std::fs::metadata(std::env::current_exe().unwrap()).unwrap();
        let opened = open_own_exe().unwrap().metadata().unwrap();
        assert_eq!((opened.dev(), opened.ino()), (by_path.dev(), by_path.ino()));
        assert_eq!(read_own_exe().unwrap().len() as u64, by_path.len());
    }
}
