//! Property tests of the frame decoder: whatever bytes arrive, in whatever
//! pieces, `FrameReader` never panics, and valid frames come out as they went in.

use bytes::Bytes;
use mitogen::testing::message::{FrameError, Message, HEADER_LEN};
use mitogen::testing::stream::FrameReader;
use proptest::prelude::*;

const MAX: usize = 4096;

fn message() -> impl Strategy<Value = Message> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u16>(),
        prop::collection::vec(any::<u8>(), 0..600),
    )
        .prop_map(
            |(dst, src, auth_id, handle, reply_to, flags, body)| Message {
                dst,
                src,
                auth_id,
                handle,
                reply_to,
                flags,
                body: Bytes::from(body),
            },
        )
}

fn encode(msgs: &[Message]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        out.extend_from_slice(&m.encode_header());
        out.extend_from_slice(&m.body);
    }
    out
}

/// Splits `data` at the given (sorted, deduplicated) cut points.
fn pieces<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut at = 0;
    for c in cuts {
        out.push(&data[at..c]);
        at = c;
    }
    out.push(&data[at..]);
    out
}

/// Feeds `chunks` one at a time, draining messages after each; stops at the
/// first error, as the broker does.
fn decode(chunks: &[&[u8]]) -> (Vec<Message>, Option<FrameError>, usize) {
    let mut r = FrameReader::new(MAX, &[]);
    let mut got = Vec::new();
    for c in chunks {
        r.feed(c);
        loop {
            match r.next_message() {
                Ok(Some(m)) => got.push(m),
                Ok(None) => break,
                Err(e) => return (got, Some(e), r.buffered()),
            }
        }
    }
    (got, None, r.buffered())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn valid_frames_round_trip_however_split(
        msgs in prop::collection::vec(message(), 0..8),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let data = encode(&msgs);
        let (got, err, left) = decode(&pieces(&data, &cuts));
        prop_assert_eq!(err, None);
        prop_assert_eq!(left, 0);
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn bytes_given_at_construction_count(
        msgs in prop::collection::vec(message(), 1..4),
        split in any::<usize>(),
    ) {
        let data = encode(&msgs);
        let split = split % (data.len() + 1);
        let mut r = FrameReader::new(MAX, &data[..split]);
        r.feed(&data[split..]);
        let mut got = Vec::new();
        while let Some(m) = r.next_message().expect("valid frames") {
            got.push(m);
        }
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn random_bytes_never_panic(
        data in prop::collection::vec(any::<u8>(), 0..2000),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let (got, _err, _left) = decode(&pieces(&data, &cuts));
        for m in got {
            prop_assert!(m.body.len() <= MAX);
        }
    }

    #[test]
    fn mutated_frames_never_panic(
        msgs in prop::collection::vec(message(), 1..6),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        truncate in any::<Option<usize>>(),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let mut data = encode(&msgs);
        for (at, byte) in flips {
            let at = at % data.len();
            data[at] = byte;
        }
        if let Some(t) = truncate {
            data.truncate(t % (data.len() + 1));
        }
        let (got, err, left) = decode(&pieces(&data, &cuts));
        for m in &got {
            prop_assert!(m.body.len() <= MAX);
        }
        // Without an error, every byte is either in a message or still waiting
        // for the rest of its frame.
        if err.is_none() {
            let used: usize = got.iter().map(|m| HEADER_LEN + m.body.len()).sum();
            prop_assert_eq!(used + left, data.len());
        }
    }

    #[test]
    fn oversized_length_is_refused_before_the_body_arrives(
        len in (MAX as u32 + 1)..=u32::MAX,
    ) {
        let mut header = Message::default().encode_header();
        header[24..28].copy_from_slice(&len.to_le_bytes());
        let mut r = FrameReader::new(MAX, &header);
        prop_assert_eq!(
            r.next_message(),
            Err(FrameError::TooLarge { len: len as usize, max: MAX })
        );
    }

    #[test]
    fn bad_magic_is_refused(magic in any::<u16>().prop_filter("not the magic", |m| *m != 0x4d47)) {
        let mut header = Message::default().encode_header();
        header[0..2].copy_from_slice(&magic.to_le_bytes());
        let mut r = FrameReader::new(MAX, &header);
        prop_assert_eq!(r.next_message(), Err(FrameError::BadMagic { found: magic }));
    }
}

/// Writes `data` into one end of a socketpair and lets `r` read the other
/// until it has taken everything.
fn read_through_socket(r: &mut FrameReader, data: &[u8]) {
    use mitogen::testing::side::{socketpair, Side};
    use mitogen::testing::stream::ReadStatus;
    let (a, b) = socketpair().expect("socketpair");
    let side = Side::new(b).expect("side");
    let mut w = std::fs::File::from(a);
    std::io::Write::write_all(&mut w, data).expect("write");
    drop(w);
    while r.read_from(&side).expect("read") == ReadStatus::Data {
        while let Some(_m) = r.next_message().expect("valid") {}
    }
}

#[test]
fn a_large_header_reserves_memory_only_as_its_body_arrives() {
    let max = 128 * 1024 * 1024;
    let mut header = Message::default().encode_header();
    header[24..28].copy_from_slice(&(100u32 << 20).to_le_bytes());
    let mut r = FrameReader::new(max, &[]);
    let mut data = header.to_vec();
    data.extend_from_slice(&[7u8; 1000]);
    read_through_socket(&mut r, &data);
    assert_eq!(r.buffered(), HEADER_LEN + 1000);
    assert!(
        r.capacity() <= 8 << 20,
        "a header and 1000 bytes made the reader hold {} bytes",
        r.capacity()
    );
}

#[test]
fn a_large_frame_still_arrives_whole() {
    let body: Vec<u8> = (0..(20u32 << 20)).map(|i| i as u8).collect();
    let msg = Message {
        dst: 1,
        handle: 1234,
        body: Bytes::from(body),
        ..Default::default()
    };
    let data = encode(std::slice::from_ref(&msg));
    let mut r = FrameReader::new(64 << 20, &[]);
    use mitogen::testing::side::{socketpair, Side};
    use mitogen::testing::stream::ReadStatus;
    let (a, b) = socketpair().expect("socketpair");
    let side = Side::new(b).expect("side");
    let writer = std::thread::spawn(move || {
        let mut w = std::fs::File::from(a);
        std::io::Write::write_all(&mut w, &data).expect("write");
    });
    let mut got = None;
    while got.is_none() {
        match r.read_from(&side).expect("read") {
            ReadStatus::Data => got = r.next_message().expect("valid"),
            ReadStatus::WouldBlock => std::thread::sleep(std::time::Duration::from_millis(1)),
            ReadStatus::Eof => panic!("end of stream before the frame"),
        }
    }
    writer.join().expect("writer");
    assert_eq!(got, Some(msg));
}

#[test]
fn a_limit_above_the_length_field_is_clamped() {
    // A limit of more than 32 bits would let a sender truncate a length on
    // the wire; the reader takes the largest a length field can say.
    let mut header = Message::default().encode_header();
    header[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut r = FrameReader::new(usize::MAX, &header);
    assert!(matches!(
        r.next_message(),
        Err(FrameError::TooLarge { len, .. }) if len == u32::MAX as usize
    ));
}
