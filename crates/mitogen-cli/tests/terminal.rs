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
    let src = big_file(&d, "big", 512);
    let dst = d.s("copy");
    let Some(screen) = on_a_terminal(&d.0, &format!("copy local -- {src} {dst}")) else {
        return;
    };
    // The total (the source's size, one target) from the start, and bytes
    // moving towards it while the file is under way.
    let seen = figures(&screen, "copying", " of 512.0 MiB");
    assert!(
        seen.iter().any(|&n| n > 0.0 && n < 512.0),
        "no byte figure between 0 and the total: {seen:?} in {screen:?}"
    );
    assert_has(&screen, "[local] sent 1 file (512.0 MiB)");
    let Some(screen) = on_a_terminal(&d.0, &format!("fetch local -- {dst} {}", d.s("back"))) else {
        return;
    };
    // A fetch's total is not known before the target lists it: bytes and
    // no bar.
    let seen = figures(&screen, "fetching", "");
    assert!(
        seen.iter().any(|&n| n > 0.0),
        "no byte figure in {screen:?}"
    );
    assert!(!screen.contains(" of 512.0 MiB"), "{screen:?}");
    assert_has(&screen, "[local] fetched 1 file (512.0 MiB)");
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

/// What a hostile target prints to pass one line off as another: a
/// right-to-left override before a reversed status line (it would read
/// `[local#2] exit 0`), an isolate, marks, a zero-width space and a tag
/// character (an invisible `A`); and ordinary non-ASCII text around it.
const TROJAN: &str =
    "ok \u{202e}0 tixe ]2#lacol[\u{202c} \u{2067}x\u{2069}\u{200f}\u{200b}\u{e0041}";
const SHOWN: &str =
    "ok <U+202E>0 tixe ]2#lacol[<U+202C> <U+2067>x<U+2069><U+200F><U+200B><U+E0041>";
const ORDINARY: &str =
    "café naïve Straße 漢字 한국어 العربية עברית 🎉 👨\u{200d}👩\u{200d}👧 ❤\u{fe0f}";

#[test]
fn direction_controls_and_invisible_characters_from_a_target_are_shown() {
    let d = Scratch::new("trojan");
    // On stdout, on stderr, and in a log record (a line the context's own
    // stderr got: the command writes to its parent's descriptor 2, which
    // the context forwards to the master, printed at `warn`).
    let script = r#"printf '%s\n%s\n' "$1" "$2"; printf '%s\n' "$1" >&2
        printf 'log %s\r[local] exit 0\n' "$1" > /proc/$PPID/fd/2; sleep 1"#;
    let out = d.run(&[
        "run", "local", "--", "sh", "-c", script, "sh", TROJAN, ORDINARY,
    ]);
    assert_code(&out, 0);
    assert_has(&out.stdout, &format!("local: {SHOWN}\n"));
    assert_has(&out.stdout, &format!("local: {ORDINARY}\n"));
    assert_has(&out.stderr, &format!("local: {SHOWN}\n"));
    assert_has(&out.stderr, &format!("log {SHOWN}^M[local] exit 0"));
    for text in [&out.stdout, &out.stderr] {
        assert!(
            !text.contains([
                '\u{202e}',
                '\u{2067}',
                '\u{200f}',
                '\u{200b}',
                '\u{e0041}',
                '\r'
            ]),
            "{text:?}"
        );
    }
    // --json carries the text exactly (escaped as \u202e, read back as it was).
    let out = d.run(&["run", "--json", "local", "--", "printf", "%s", TROJAN]);
    assert_code(&out, 0);
    assert_has(&out.stdout, r#""stdout":"ok \u202e0 tixe"#);
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(v["stdout"], TROJAN);
    // A failure's message, here a path the target names in its error.
    let missing = format!("/nonexistent/{TROJAN}");
    let out = d.run(&["fetch", "local", "--", &missing, &d.s("into")]);
    assert_code(&out, 1);
    assert_has(&out.stderr, &format!("/nonexistent/{SHOWN}"));
    assert!(!out.stderr.contains('\u{202e}'), "{}", out.stderr);
}
