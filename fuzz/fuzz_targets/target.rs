//! The target parser (`user@host:port/sudo:app/...`): any text either parses
//! or is refused with an error, and what parses prints back to text that
//! parses to the same target.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mitogen::Target;

fuzz_target!(|text: &str| {
    if let Ok(target) = text.parse::<Target>() {
        let shown = target.to_string();
        let again: Target = shown
            .parse()
            .unwrap_or_else(|e| panic!("{text:?} shows as {shown:?}, which does not parse: {e}"));
        assert_eq!(again, target, "{text:?} shows as {shown:?}");
    }
});
