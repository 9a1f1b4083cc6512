//! A `BOOTSTRAP` body: a child's configuration, and a unix client's
//! handshake.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    mitogen::testing::handle_body(mitogen::testing::message::handles::BOOTSTRAP, body);
});
