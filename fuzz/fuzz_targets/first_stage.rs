//! The master's side of the first-stage dialog, against whatever a remote
//! shell prints (then end of file), over a real socket pair: it never panics
//! or hangs, whatever comes before or after the `MITOGEN-STAGE` line.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|said: &[u8]| {
    let _ = mitogen::testing::first_stage(said);
});
