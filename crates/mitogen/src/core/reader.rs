//! The receiving half of a stream: [`FrameReader`] reassembles frames from
//! the bytes a side delivers, and [`pump`] is one step of reading a stream and
//! routing what arrived, shared by the broker and by threads that read a
//! stream themselves while they wait ([`Stream::lead`](super::stream::Stream)).
//!
//! The reader copes with frames split across reads and many frames in one
//! read, and hands out bodies that point into its buffer without a copy. A
//! large frame that is only passing through is not buffered at all: once its
//! header is in, it is relayed as it arrives (see [`cut_through`]).
//!
//! [`cut_through`]: super::cut_through

use std::io;
use std::os::fd::AsFd;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::cut_through::{CutThrough, Fill, CUT_THROUGH_MIN};
use super::message::{
    FrameError, Header, Message, FLAG_SECRET, HEADER_LEN, MAX_MESSAGE_SIZE_LIMIT,
};
use super::router::RouterInner;
use super::side::{IoStatus, Side};
use super::stream::{wipe_on_drop, SendStatus, Stream};

/// Default read size of a side (the seed's `CHUNK_SIZE`); a frame larger than this
/// is read straight into a buffer of its own size.
pub const CHUNK_SIZE: usize = 128 * 1024;

/// Largest frame whose whole size is reserved as soon as its header is in;
/// beyond it, memory grows with what has arrived.
const EAGER_LIMIT: usize = 4 * 1024 * 1024;

/// Read size while frames are being relayed cut-through: the next frame is
/// probably another large one, and the less of it is read into memory, the
/// more of it the kernel moves by reference.
const PEEK_SIZE: usize = 4096;

/// How long the source of a frame being relayed may send nothing, while the
/// relay has room for it, before the relay gives the frame up. Relayed frames
/// come from local peers, which write a frame in one go; one that stops
/// half-way (stopped, or hostile) must not hold the outgoing stream, and
/// whatever is queued behind the frame there, for longer than this. Its later
/// frames are buffered whole instead.
const STALL_LIMIT: Duration = Duration::from_secs(5);

/// The slowest a local peer may trickle a relayed frame in, counting only the
/// time the relay waited for it: a frame of `len` bytes may keep the relay
/// waiting [`STALL_LIMIT`] plus `len` at this rate in all, so a source that
/// sends a byte now and then cannot hold the outgoing stream for long either.
const MIN_SOURCE_RATE: f64 = 1024.0 * 1024.0;

/// Logs the end of a stream: an error when it ended inside a frame.
pub(crate) fn log_end(name: &str, buffered: usize) {
    if buffered > 0 {
        tracing::error!(
            stream = %name,
            "stream ended inside a frame ({buffered} bytes of it arrived); disconnecting"
        );
    } else {
        tracing::debug!(stream = %name, "end of stream");
    }
}

/// A frame being relayed cut-through from this reader's stream.
struct Relay {
    cut: Arc<CutThrough>,
    out: Arc<Stream>,
    /// Body bytes still to come from the source.
    unread: usize,
    /// The frame's header, to answer its sender if it cannot be delivered.
    header: Header,
    /// Whether the pipe is registered with the poller (see [`Pumped::Stalled`]).
    watched: bool,
    /// Since when the relay has been waiting for its source with room in the
    /// pipe (`None` while bytes flow, or while the outgoing stream is what
    /// holds things up: a slow next hop is not a stalled source).
    idle_since: Option<Instant>,
    /// Time spent waiting for the source in earlier idle spells.
    waited: Duration,
}

impl Relay {
    /// The source delivered (or the pipe filled): a spell of waiting ends.
    fn end_idle(&mut self) {
        if let Some(t) = self.idle_since.take() {
            self.waited += t.elapsed();
        }
    }
}

/// Reassembles frames from the bytes a side delivers.
pub struct FrameReader {
    buf: BytesMut,
    max: usize,
    header: Option<Header>,
    relay: Option<Relay>,
    /// The last frame went cut-through: read small until a header shows.
    peek: bool,
    /// Body bytes of a frame given up half-way, still to come and be dropped.
    discard: usize,
    /// This stream once stalled in the middle of a relayed frame: its frames
    /// are buffered from now on.
    no_cut: bool,
    /// The last relayed frame's pipe, for the next one once its outgoing
    /// stream is done with it.
    spare: Option<Arc<CutThrough>>,
}

/// What one read from a side produced.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadStatus {
    /// Some bytes arrived; call [`FrameReader::next_message`].
    Data,
    /// Nothing available now.
    WouldBlock,
    /// The other end is gone.
    Eof,
}

impl FrameReader {
    /// A reader refusing bodies over `max` bytes (at most
    /// [`MAX_MESSAGE_SIZE_LIMIT`]), starting with bytes that arrived during
    /// the bootstrap (after the greeting).
    pub fn new(max: usize, initial: &[u8]) -> FrameReader {
        let mut buf = BytesMut::with_capacity(CHUNK_SIZE.max(initial.len()));
        buf.extend_from_slice(initial);
        FrameReader {
            buf,
            max: max.min(MAX_MESSAGE_SIZE_LIMIT),
            header: None,
            relay: None,
            peek: false,
            discard: 0,
            no_cut: false,
            spare: None,
        }
    }

    /// The memory this reader holds for frames not yet complete.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Appends raw bytes (for tests and fuzzing).
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Reads once from `side`.
    pub fn read_from(&mut self, side: &Side) -> io::Result<ReadStatus> {
        let least = if self.peek { PEEK_SIZE } else { CHUNK_SIZE };
        let want = match self.header {
            // Read a large frame's body in one go into a buffer of its own
            // size; but memory for a frame larger than `EAGER_LIMIT` grows
            // only as its bytes arrive (doubling), so a header alone, or a
            // header and a trickle, cannot make each stream reserve the
            // largest message size.
            Some(h) => {
                let rest = (HEADER_LEN + h.len).saturating_sub(self.buf.len());
                if rest > EAGER_LIMIT {
                    rest.min(self.buf.len().max(EAGER_LIMIT))
                } else {
                    rest
                }
            }
            None => 0,
        }
        .max(least);
        if self.header.is_some_and(|h| h.flags & FLAG_SECRET != 0) {
            drop(reserve_wiping(&mut self.buf, want));
        } else {
            self.buf.reserve(want);
        }
        let spare = self.buf.spare_capacity_mut();
        // While peeking, read no further than asked: what stays in the kernel
        // can still be spliced.
        let limit = if self.peek {
            spare.len().min(want)
        } else {
            spare.len()
        };
        let n = match side.read(&mut spare[..limit])? {
            IoStatus::Done(n) => n,
            IoStatus::WouldBlock => return Ok(ReadStatus::WouldBlock),
            IoStatus::Disconnected => return Ok(ReadStatus::Eof),
        };
        // SAFETY: `read` initialised exactly `n` bytes of the spare capacity.
        unsafe { self.buf.set_len(self.buf.len() + n) };
        Ok(ReadStatus::Data)
    }

    /// The next complete message, if one has arrived.
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        let header = match self.header {
            Some(h) => h,
            None => {
                if self.buf.len() < HEADER_LEN {
                    return Ok(None);
                }
                let h = Header::parse(&self.buf[..HEADER_LEN], self.max)?;
                self.header = Some(h);
                h
            }
        };
        if self.buf.len() < HEADER_LEN + header.len {
            return Ok(None);
        }
        self.header = None;
        self.peek = false;
        // Bulk is over for now: give the pipe back rather than hold two
        // descriptors per stream that once relayed.
        self.spare = None;
        let mut frame = self.buf.split_to(HEADER_LEN + header.len);
        if header.flags & FLAG_SECRET != 0 {
            let body = wipe_on_drop(frame[HEADER_LEN..].to_vec());
            frame.fill(0);
            return Ok(Some(header.into_message(body)));
        }
        let body = frame.split_off(HEADER_LEN).freeze();
        Ok(Some(header.into_message(body)))
    }

    /// Bytes buffered but not yet part of a complete message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// True while a frame is being relayed from this reader's stream.
    pub(crate) fn is_relaying(&self) -> bool {
        self.relay.is_some()
    }

    /// The header of an incomplete frame big enough to relay cut-through.
    fn partial_large(&self) -> Option<Header> {
        let h = self.header?;
        (h.len >= CUT_THROUGH_MIN && self.buf.len() < HEADER_LEN + h.len).then_some(h)
    }
}

/// `reserve` for a buffer that holds part of a secret frame: where
/// `BytesMut` would move the bytes (to a new allocation, or to the front of
/// its own), leaving a copy of the secret behind in memory that is freed or
/// reused unwiped, the bytes are copied to a new buffer here and the old one
/// is returned zeroed, to be dropped.
fn reserve_wiping(buf: &mut BytesMut, want: usize) -> Option<BytesMut> {
    if buf.capacity() - buf.len() >= want {
        return None;
    }
    let mut grown = BytesMut::with_capacity(buf.len() + want);
    grown.extend_from_slice(buf);
    let mut old = std::mem::replace(buf, grown);
    old.fill(0);
    Some(old)
}

/// What one [`pump`] step came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pumped {
    /// Something arrived and was dealt with; step again.
    Progress,
    /// Nothing to read: wait for the stream to become readable.
    WouldBlock,
    /// A relayed frame's pipe is full: wait for it to have room (the broker
    /// watches the pipe too, as `Source::RelayPipe`) as well as for the
    /// stream.
    Stalled,
    /// The stream ended or broke (already logged): disconnect it.
    Ended,
    /// Reading is paused until the parent stream drains (the broker resumes
    /// it, see `RouterInner::hold`).
    Held,
}

/// Reads `stream` once and routes every complete message; relays a large frame
/// bound elsewhere as it arrives.
pub(crate) fn pump(stream: &Arc<Stream>, reader: &mut FrameReader, router: &RouterInner) -> Pumped {
    if reader.discard > 0 {
        return pump_discard(stream, reader);
    }
    if reader.relay.is_some() {
        return pump_relay(stream, reader, router);
    }
    if stream.is_held() {
        return Pumped::Held;
    }
    match reader.read_from(stream.rx_side()) {
        Err(e) => {
            tracing::warn!(stream = %stream.name(), "read failed: {e}");
            Pumped::Ended
        }
        Ok(ReadStatus::WouldBlock) => Pumped::WouldBlock,
        Ok(ReadStatus::Eof) => {
            log_end(stream.name(), reader.buffered());
            Pumped::Ended
        }
        Ok(ReadStatus::Data) => {
            loop {
                match reader.next_message() {
                    Ok(Some(msg)) => router.route(msg, Some(stream)),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(stream = %stream.name(), "protocol error, disconnecting: {e}");
                        return Pumped::Ended;
                    }
                }
            }
            if let Some(h) = reader.partial_large() {
                start_relay(stream, reader, router, h);
            }
            Pumped::Progress
        }
    }
}

/// Starts relaying the frame whose header (and part of whose body) `reader`
/// holds, if the router sends it out on another stream that can take it.
fn start_relay(stream: &Arc<Stream>, reader: &mut FrameReader, router: &RouterInner, h: Header) {
    if reader.no_cut {
        return;
    }
    let Some((out, head)) = router.cut_through_target(&h, stream) else {
        return;
    };
    if !(stream.can_splice_in() && out.can_splice_out()) {
        return;
    }
    let have = reader.buf.len() - HEADER_LEN;
    let own_trailer = h.flags & super::message::FLAG_TRAILER == 0;
    let reused = reader
        .spare
        .take()
        .and_then(|c| Arc::try_unwrap(c).ok())
        .and_then(|c| c.reuse(h.len - have, own_trailer));
    let cut = match reused.map_or_else(|| CutThrough::new(h.len - have, own_trailer), Ok) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::debug!("no pipe for cut-through relaying ({e}); buffering instead");
            return;
        }
    };
    let len = h.len + usize::from(own_trailer);
    let flags = head.flags | super::message::FLAG_TRAILER;
    let header = Message { flags, ..head }.encode_header_len(len);
    let prefix: Bytes = reader.buf.split().freeze().slice(HEADER_LEN..);
    reader.header = None;
    reader.peek = true;
    if out.send_cut(header, prefix, cut.clone()) == SendStatus::Disconnected {
        // Gone between the routing decision and now: read the rest and drop it.
        cut.abandon();
    }
    stream.set_relaying(Some((cut.clone(), out.clone())));
    watch_stall(router, stream, &cut, STALL_LIMIT);
    reader.relay = Some(Relay {
        cut,
        out,
        unread: h.len - have,
        header: h,
        watched: false,
        idle_since: None,
        waited: Duration::ZERO,
    });
}

/// Drops body bytes of a frame given up half-way as they arrive.
fn pump_discard(stream: &Arc<Stream>, reader: &mut FrameReader) -> Pumped {
    let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); 16 * 1024];
    let n = reader.discard.min(scratch.len());
    match stream.rx_side().read(&mut scratch[..n]) {
        Ok(IoStatus::Done(k)) => {
            reader.discard -= k;
            Pumped::Progress
        }
        Ok(IoStatus::WouldBlock) => Pumped::WouldBlock,
        Ok(IoStatus::Disconnected) | Err(_) => {
            tracing::debug!(
                stream = %stream.name(),
                "end of stream while dropping the rest of a frame given up ({} bytes short)",
                reader.discard
            );
            Pumped::Ended
        }
    }
}

/// Looks at a relayed frame again after `delay`: if its source has then sent
/// nothing for [`STALL_LIMIT`], the frame is given up.
fn watch_stall(router: &RouterInner, stream: &Arc<Stream>, cut: &Arc<CutThrough>, delay: Duration) {
    let (stream, cut) = (stream.clone(), Arc::downgrade(cut));
    router.broker.call_later(delay, move |core| {
        check_stall(core.router(), &stream, &cut);
    });
}

fn check_stall(router: &RouterInner, stream: &Arc<Stream>, cut: &Weak<CutThrough>) {
    let Some(cut) = cut.upgrade() else {
        return;
    };
    if stream.is_dead() {
        return;
    }
    let Some(mut reader) = stream.try_reader() else {
        // Someone is reading right now: look again soon.
        watch_stall(router, stream, &cut, STALL_LIMIT / 10);
        return;
    };
    let Some(relay) = reader.relay.as_ref().filter(|r| Arc::ptr_eq(&r.cut, &cut)) else {
        return;
    };
    let idle = relay.idle_since.map_or(Duration::ZERO, |t| t.elapsed());
    let budget = STALL_LIMIT + Duration::from_secs_f64(relay.header.len as f64 / MIN_SOURCE_RATE);
    let waited = relay.waited + idle;
    if idle < STALL_LIMIT && waited < budget {
        let next = (STALL_LIMIT - idle).min(budget - waited);
        drop(reader);
        watch_stall(router, stream, &cut, next);
        return;
    }
    tracing::warn!(
        stream = %stream.name(),
        "a frame relayed from this stream stopped half-way ({} bytes short; waited {waited:.1?} \
         for it, the last {idle:.1?} without a byte); giving it up, and buffering this \
         stream's frames from now on",
        relay.unread
    );
    let Some(r) = finish_relay(stream, &mut reader) else {
        return;
    };
    r.cut.abort();
    reader.discard = r.unread;
    reader.no_cut = true;
    drop(reader);
    kick(&r.out, router);
}

/// One step of moving a relayed frame's body along.
fn pump_relay(stream: &Arc<Stream>, reader: &mut FrameReader, router: &RouterInner) -> Pumped {
    let Some(relay) = reader.relay.as_mut() else {
        return Pumped::Progress;
    };
    if relay.cut.is_abandoned() {
        // The way out is gone: the rest of the frame is read and dropped
        // (`pump_discard`), and its sender told.
        if let Some(r) = finish_relay(stream, reader) {
            reader.discard = r.unread;
            router.bounce_header(&r.header, "the next hop went away");
        }
        return Pumped::Progress;
    }
    match relay.cut.fill(stream.rx_side().as_fd(), relay.unread) {
        Ok(Fill::Moved(n)) => {
            relay.unread -= n;
            relay.end_idle();
            let out = relay.out.clone();
            if relay.unread == 0 {
                reader.spare = finish_relay(stream, reader).map(|r| r.cut);
            }
            kick(&out, router);
            Pumped::Progress
        }
        Ok(Fill::WouldBlock) => {
            relay.idle_since.get_or_insert_with(Instant::now);
            Pumped::WouldBlock
        }
        Ok(Fill::Stalled) => {
            relay.end_idle();
            if !relay.watched {
                relay.watched = stream.watch_pipe(relay.cut.pipe_w());
            }
            Pumped::Stalled
        }
        Ok(Fill::Eof) | Err(_) => {
            tracing::error!(
                stream = %stream.name(),
                "stream ended inside a frame being relayed ({} bytes short); disconnecting",
                relay.unread
            );
            if let Some(r) = finish_relay(stream, reader) {
                r.cut.abort();
                kick(&r.out, router);
            }
            Pumped::Ended
        }
    }
}

/// Ends the relay of the current frame, returning it.
fn finish_relay(stream: &Stream, reader: &mut FrameReader) -> Option<Relay> {
    let relay = reader.relay.take()?;
    if relay.watched {
        stream.unwatch_pipe(relay.cut.pipe_w());
    }
    stream.set_relaying(None);
    Some(relay)
}

/// Lets the outgoing stream write what the pipe holds.
fn kick(out: &Arc<Stream>, router: &RouterInner) {
    if out.on_transmit() == SendStatus::Disconnected {
        let out = out.clone();
        router.broker.defer(move |core| core.disconnect(&out));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_frame_is_moved_by_hand_and_its_old_buffer_zeroed() {
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(b"header and the first bytes of a password");
        let old = reserve_wiping(&mut buf, 1 << 20).expect("the buffer had to grow");
        assert!(
            old.iter().all(|&b| b == 0),
            "the old buffer kept the secret"
        );
        assert_eq!(&buf[..], b"header and the first bytes of a password");
        assert!(buf.capacity() - buf.len() >= 1 << 20);
        assert!(
            reserve_wiping(&mut buf, 16).is_none(),
            "room enough: no move"
        );
    }
}
