//! A reply body (the built-in functions' results and `CallError`s), and a
//! channel message as the payload types the library sends.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    mitogen::testing::handle_body(mitogen::testing::message::FIRST_USER_HANDLE, body);
});
