//! `ADD_ROUTE` and `DEL_ROUTE` bodies (the first byte picks which).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mitogen::testing::message::handles;

fuzz_target!(|data: &[u8]| {
    if let Some((which, body)) = data.split_first() {
        let handle = if which % 2 == 0 {
            handles::ADD_ROUTE
        } else {
            handles::DEL_ROUTE
        };
        mitogen::testing::handle_body(handle, body);
    }
});
