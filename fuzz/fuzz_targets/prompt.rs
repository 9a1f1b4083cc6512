//! The password-prompt matcher: whatever a transport prints on its pty, in
//! whatever pieces, and whatever prompt and failure phrases the caller gave,
//! it never panics and its transcript stays bounded.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    prompts: Vec<String>,
    failures: Vec<String>,
    with_password: bool,
    chunks: Vec<&'a [u8]>,
}

fuzz_target!(|input: Input<'_>| {
    mitogen::testing::prompt(
        &input.prompts,
        &input.failures,
        input.with_password,
        &input.chunks,
    );
});
