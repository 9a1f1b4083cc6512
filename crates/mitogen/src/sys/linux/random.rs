//! The kernel's random source.

use std::io;

/// Fills `buf` from the kernel's random source (`getrandom(2)`, which blocks
/// only until the pool is first seeded, early in boot).
pub(crate) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_fill_the_buffer_and_differ() {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        random_bytes(&mut a).unwrap();
        random_bytes(&mut b).unwrap();
        assert_ne!(a, b);
        // A large buffer is filled to its end, not just its first piece.
        let mut big = vec![0u8; 1 << 20];
        random_bytes(&mut big).unwrap();
        assert!(big[big.len() - 64..].iter().any(|&x| x != 0));
    }
}
