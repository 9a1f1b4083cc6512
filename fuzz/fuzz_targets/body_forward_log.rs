//! A `FORWARD_LOG` body as the master's log receiver decodes and emits it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    mitogen::testing::handle_body(mitogen::testing::message::handles::FORWARD_LOG, body);
});
