//! Why a shipped build did not start on a host, in words that name the cause
//! and the fix.
//!
//! A dynamically linked build needs, on the host, the loader its ELF header
//! names (`PT_INTERP`, e.g. `/lib64/ld-linux-x86-64.so.2`) and a C library at
//! least as new as the one it was linked against. A host without them (a
//! busybox-only root, an embedded box, an older distribution) refuses it with
//! a message that names neither: the shell says `exec: ./HASH: not found`
//! although the file is there, and the loader of an older glibc says
//! ``version `GLIBC_2.34' not found``. The master reads its build's loader path
//! from the bytes it ships and recognises both messages in what the
//! transport printed, so the connection error says what is missing and that a
//! static build (`-C target-feature=+crt-static`, see the README) runs on any
//! Linux host of the architecture.

/// The loader path (`PT_INTERP`) of a 64-bit little-endian ELF file, or `None`
/// for a static build or anything that is not such a file. Every offset is
/// checked against the length: the bytes are the program's own, but a
/// `RouterBuilder::binary` may name any file.
pub(crate) fn elf_interp(bytes: &[u8]) -> Option<String> {
    const PT_INTERP: u32 = 3;
    if bytes.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let at = |o: usize, n: usize| bytes.get(o..o.checked_add(n)?);
    let u16_at = |o: usize| Some(u16::from_le_bytes(at(o, 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(at(o, 4)?.try_into().ok()?));
    let u64_at = |o: usize| {
        let v = u64::from_le_bytes(at(o, 8)?.try_into().ok()?);
        usize::try_from(v).ok()
    };
    let phoff = u64_at(0x20)?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(ph)? != PT_INTERP {
            continue;
        }
        let off = u64_at(ph.checked_add(0x08)?)?;
        let len = u64_at(ph.checked_add(0x20)?)?;
        let raw = at(off, len)?;
        let raw = raw.split(|&b| b == 0).next()?;
        return std::str::from_utf8(raw).ok().map(str::to_owned);
    }
    None
}

/// What to tell the user to do: the one-liner of the README.
const FIX: &str = "build the program static so it runs on any Linux host of its \
    architecture: RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release \
    --target x86_64-unknown-linux-gnu (the README's \"Any Linux host\")";

/// Explains a start that failed because the host cannot run the build with
/// `hash` and `bytes`, given everything the transport printed (`said`);
/// `None` when `said` shows no such cause.
pub(crate) fn explain(hash: &str, bytes: &[u8], said: &str) -> Option<String> {
    // The dynamic loader of an older glibc:
    // "./HASH: /lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.34' not found
    // (required by ./HASH)".
    if let Some(at) = said.find("version `GLIBC_") {
        let rest = &said[at + "version `".len()..];
        let version: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
            .collect();
        if rest[version.len()..].starts_with("' not found") {
            return Some(format!(
                "the host's C library is older than this build needs ({version} not found \
                 there): the build is dynamically linked against a newer glibc; {FIX}"
            ));
        }
    }
    // The shell could not exec the file it had just checked or written: with
    // a loader path in the build, that is the loader missing. Shells word it
    // differently: busybox `exec: ./HASH: not found`, dash `1: exec: ./HASH:
    // not found`, bash `./HASH: cannot execute: required file not found` or
    // `No such file or directory`.
    let interp = elf_interp(bytes)?;
    let named = format!("{hash}: ");
    let missing = said.lines().any(|line| {
        line.find(&named).is_some_and(|at| {
            let after = &line[at + named.len()..];
            after.contains("not found") || after.contains("No such file or directory")
        })
    });
    missing.then(|| {
        format!(
            "the host cannot start this build: it is dynamically linked and needs the \
             loader {interp}, which the host does not have (a busybox-only or non-glibc \
             system); {FIX}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_build_names_its_loader_or_none_when_static() {
        let me = std::fs::read(std::env::current_exe().expect("exe")).expect("read");
        let interp = elf_interp(&me);
        if cfg!(target_feature = "crt-static") {
            assert_eq!(interp, None);
        } else {
            let interp = interp.expect("a dynamic build has a loader");
            assert!(interp.starts_with('/'), "{interp}");
            assert!(std::path::Path::new(&interp).exists(), "{interp}");
        }
    }

    #[test]
    fn garbage_is_not_an_elf_file() {
        assert_eq!(elf_interp(b""), None);
        assert_eq!(elf_interp(b"\x7fELF\x02\x01"), None);
        let mut fake = b"\x7fELF\x02\x01".to_vec();
        fake.resize(64, 0xff);
        assert_eq!(elf_interp(&fake), None);
    }

    #[test]
    fn recognises_each_shell_and_the_glibc_loader() {
        let me = std::fs::read(std::env::current_exe().expect("exe")).expect("read");
        if elf_interp(&me).is_none() {
            return;
        }
        let h = "0123abcd";
        for said in [
            "sh: exec: ./0123abcd: not found",
            "sh: 1: exec: ./0123abcd: not found",
            "bash: line 1: ./0123abcd: cannot execute: required file not found",
            "sh: ./0123abcd: No such file or directory",
        ] {
            let why = explain(h, &me, said).expect(said);
            assert!(why.contains("loader /"), "{why}");
            assert!(why.contains("crt-static"), "{why}");
        }
        let old = "./0123abcd: /lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.34' not found \
                   (required by ./0123abcd)";
        let why = explain(h, &me, old).expect("glibc");
        assert!(why.contains("GLIBC_2.34 not found"), "{why}");
        assert!(why.contains("crt-static"), "{why}");
        // A missing shell or tool is not the build's fault.
        assert_eq!(
            explain(h, &me, "sh: not found\nbash: gzip: not found"),
            None
        );
    }
}
