//! A `CALL_FUNCTION` body as a child's dispatcher decodes it: the head, the
//! function's name, and the arguments of every built-in remote function.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    mitogen::testing::handle_body(mitogen::testing::message::handles::CALL_FUNCTION, body);
});
