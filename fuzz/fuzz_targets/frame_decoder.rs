//! The frame decoder: whatever bytes a peer sends, in whatever pieces,
//! `FrameReader` never panics, never hands out a body over its limit, and
//! stops at the first bad header.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mitogen::testing::message::{DEFAULT_MAX_MESSAGE_SIZE, HEADER_LEN};
use mitogen::testing::stream::FrameReader;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    /// Which body limit: small ones reach the size check, the default one
    /// the real configuration.
    limit: u8,
    /// Where the data is cut into reads.
    cuts: Vec<u16>,
    data: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    let max = match input.limit % 4 {
        0 => 0,
        1 => 16,
        2 => 4096,
        _ => DEFAULT_MAX_MESSAGE_SIZE,
    };
    let data = input.data;
    let mut cuts: Vec<usize> = input
        .cuts
        .iter()
        .map(|c| usize::from(*c) % (data.len() + 1))
        .collect();
    cuts.push(data.len());
    cuts.sort_unstable();
    cuts.dedup();
    let mut reader = FrameReader::new(max, &[]);
    let mut at = 0;
    let mut taken = 0;
    for cut in cuts {
        reader.feed(&data[at..cut]);
        at = cut;
        loop {
            match reader.next_message() {
                Ok(Some(msg)) => {
                    assert!(msg.body.len() <= max);
                    taken += HEADER_LEN + msg.body.len();
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    assert_eq!(taken + reader.buffered(), data.len());
});
