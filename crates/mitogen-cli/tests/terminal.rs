//! What `copy`, `fetch` and `run` put on an operator's terminal beyond the
//! reports: the byte progress of a copy or fetch (on a terminal only, never
//! with `--json` or into a pipe), and text from a target that would look
//! like something else (Unicode direction controls and invisible format
//! characters) shown visibly. Real local contexts, a real pty (script(1),
//! util-linux: the progress tests return where skipping is allowed).

// The ssh fixture's macro is not used here.
#[allow(unused_macros)]
mod common;

use std::io::Write;

use common::pty::on_a_terminal;
use common::scratch::{assert_code, assert_has, Scratch};

/// A file of `mib` MiB of bytes that do not compress.
fn big_file(d: &Scratch, name: &str, mib: usize) -> String {
    let mut f = std::fs::File::create(d.path(name)).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for b in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&block).unwrap();
    }
    d.s(name)
}

/// The byte figures `N.N MiB` the progress line showed before `marker`
/// (` of TOTAL` for a copy, `, ` for a fetch), in MiB.
fn figures(screen: &str, verb: &str, marker: &str) -> Vec<f64> {
    screen
        .split(&format!("{verb}: "))
        .skip(1)
        .filter_map(|s| {
            let after = s.split_once("targets done, ")?.1;
            let (n, rest) = after.split_once(" MiB")?;
            rest.starts_with(marker).then(|| n.parse().ok())?
        })
        .collect()
}

#[test]
fn a_copy_and_a_fetch_show_bytes_moving_on_a_terminal() {
    let d = Scratch::new("bytes");
    let src = big_file(&d, "big", 256);
    let dst = d.s("copy");
    let Some(screen) = on_a_terminal(&d.0, &format!("copy local -- {src} {dst}")) else {
        return;
    };
    // The total (the source's size, one target) from the start, and bytes
    // moving towards it while the file is under way.
    let seen = figures(&screen, "copying", " of 256.0 MiB");
    assert!(
        seen.iter().any(|&n| n > 0.0 && n < 256.0),
        "no byte figure between 0 and the total: {seen:?} in {screen:?}"
    );
    assert_has(&screen, "[local] sent 1 file (256.0 MiB)");
    let Some(screen) = on_a_terminal(&d.0, &format!("fetch local -- {dst} {}", d.s("back")))
    else {
        return;
    };
    // A fetch's total is not known before the target lists it: bytes and
    // no bar.
    let seen = figures(&screen, "fetching", "");
    assert!(
        seen.iter().any(|&n| n > 0.0),
        "no byte figure in {screen:?}"
    );
    assert!(!screen.contains(" of 256.0 MiB"), "{screen:?}");
    assert_has(&screen, "[local] fetched 1 file (256.0 MiB)");
}

#[test]
fn no_progress_without_a_terminal_or_with_json() {
    let d = Scratch::new("quiet");
    let src = big_file(&d, "big", 16);
    let out = d.run(&["copy", "local", "--", &src, &d.s("copy")]);
    assert_code(&out, 0);
    assert_eq!(out.stderr, "", "{}", out.stdout);
    assert!(!out.stdout.contains("copying"), "{}", out.stdout);
    let Some(screen) = on_a_terminal(&d.0, &format!("copy --json local -- {src} {}", d.s("j")))
    else {
        return;
    };
    assert!(!screen.contains("copying"), "{screen:?}");
    assert!(!screen.contains("MiB"), "{screen:?}");
    assert_eq!(screen.lines().count(), 1, "{screen:?}");
}
