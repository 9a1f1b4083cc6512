//! Unicode characters that are not seen themselves but change how the text
//! around them looks: the bidirectional controls of the "Trojan Source"
//! attacks (CVE-2021-42574) and the invisible format characters. A target
//! that prints them can make its output read as something it is not: an
//! override (U+202E) reverses what follows, so `[web1] exit 1` can be sent
//! as bytes that read `[web1] exit 0` or that pull another target's label
//! into view; isolates reorder whole runs; a zero-width space or a tag
//! character hides text inside text that looks plain. The text printer
//! shows each as `<U+202E>` instead (docs/cli.md); `--json` escapes them as
//! `\u202e`, which any JSON reader decodes back to the same character.
//!
//! Not on the list, because ordinary text needs them and they reorder or
//! hide nothing: the zero-width joiner and non-joiner (U+200D, U+200C; emoji
//! sequences, Persian, Indic scripts) and the variation selectors (U+FE0F
//! of emoji).

/// Whether `c` is shown as `<U+XXXX>` by the text printer.
pub fn is_invisible(c: char) -> bool {
    matches!(c as u32,
        0x00AD            // soft hyphen
        | 0x061C          // Arabic letter mark
        | 0x180E          // Mongolian vowel separator
        | 0x200B          // zero-width space
        | 0x200E | 0x200F // left-to-right and right-to-left marks
        | 0x2028 | 0x2029 // line and paragraph separators
        | 0x202A..=0x202E // embeddings, pops and overrides
        | 0x2060..=0x2064 // word joiner, invisible operators
        | 0x2066..=0x2069 // isolates
        | 0x206A..=0x206F // deprecated format characters
        | 0xFEFF          // zero-width no-break space (byte order mark)
        | 0xFFF9..=0xFFFB // interlinear annotations (hide the text between)
        | 0x1D173..=0x1D17A // musical formatting
        | 0xE0000..=0xE007F // tags (invisible copies of ASCII)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direction_controls_are_invisible_and_ordinary_text_is_not() {
        for c in [
            '\u{202e}',
            '\u{2066}',
            '\u{2069}',
            '\u{200e}',
            '\u{200f}',
            '\u{061c}',
            '\u{200b}',
            '\u{feff}',
            '\u{e0041}',
        ] {
            assert!(is_invisible(c), "{:04X}", c as u32);
        }
        for c in
            "abc é ü ß 漢字 한국어 العربية עברית 🎉 👨\u{200d}👩\u{200d}👧 ❤\u{fe0f} \t".chars()
        {
            assert!(!is_invisible(c), "{:04X}", c as u32);
        }
    }
}
