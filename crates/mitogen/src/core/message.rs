//! The unit of traffic: a fixed binary header followed by a body.
//!
//! Every frame on a stream is
//!
//! ```text
//! offset size field     meaning
//!      0    2 magic     0x4d47 ("MG"); anything else is a corrupt stream
//!      2    2 flags     bit 0: DEAD (the handle or its peer is gone; body = reason)
//!                       bit 1: DISCONNECTED (with DEAD: because a context is gone)
//!                       bit 2: SECRET (the body holds a password: wipe it)
//!                       bit 3: TRAILER (relayed cut-through: the body's last
//!                              byte is 1 if it arrived whole, 0 if not)
//!                       bit 4: KEYED (`reply_to` holds the key of the channel
//!                              the message is for, not a reply handle)
//!      4    4 dst       context id the message is for
//!      8    4 src       context id that sent it
//!     12    4 auth_id   context id whose authority it carries (set by the receiving
//!                       stream, never trusted from the sender beyond its own subtree)
//!     16    4 handle    handle at `dst` that receives it
//!     20    4 reply_to  handle at `src` for a reply, 0 for none
//!     24    4 len       body length in bytes
//! ```
//!
//! All integers are little-endian. The body is either a serde value encoded with
//! postcard or, for bulk data ([`Blob`](crate::Blob)), the raw bytes themselves, so
//! large chunks are never copied into an encoded array.

use bytes::{Buf, Bytes};

/// Size in bytes of the fixed message header.
pub const HEADER_LEN: usize = 28;

/// The two bytes every frame starts with.
pub const MAGIC: u16 = 0x4d47;

/// Default upper bound on a message body: larger data must be streamed in chunks.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 128 * 1024 * 1024;

/// Largest body size a limit may be set to: the header's length field is 32
/// bits, and a relay's trailer byte may add one (see [`FLAG_TRAILER`]). A
/// larger limit is clamped to this, so a length is never truncated on the
/// wire (which would put the stream out of step).
pub const MAX_MESSAGE_SIZE_LIMIT: usize = u32::MAX as usize - 1;

/// Flag: this message reports that a handle, a channel or a peer is gone.
pub const FLAG_DEAD: u16 = 1;

/// Flag (with [`FLAG_DEAD`]): the reason is that a context became unreachable,
/// as opposed to a sender closing its channel.
pub const FLAG_DISCONNECTED: u16 = 2;

/// A context's identity on the bus. The master is always 0.
pub type ContextId = u32;

/// Flag: the body carries a secret (a password for a hop further on). The
/// sender's buffer is wiped when freed; every router that reads the frame
/// copies the body into memory that is wiped when freed and zeroes its read
/// buffer at once, so the secret does not linger in freed memory on any hop.
pub const FLAG_SECRET: u16 = 4;

/// Flag: a relay forwarded this frame before all of its body had arrived (see
/// `cut_through`). The last byte of the body is not part of it: `1` means the
/// frame is whole, `0` that a relay lost its source half-way and padded it.
/// The destination strips the byte; relays pass it on.
pub const FLAG_TRAILER: u16 = 8;

/// Flag: the message is for a channel, and `reply_to` holds that channel's
/// key (the secret a [`Sender`](crate::Sender) carries) instead of a reply
/// handle. A channel's receiver takes only messages with its key, so knowing
/// (or guessing) a handle number is not enough to send to it; nothing ever
/// answers a keyed message, so the key never travels back.
pub const FLAG_KEYED: u16 = 16;

/// Flag (with [`FLAG_KEYED`]): a channel's control message, not a value: a
/// context saying that it dropped its last copy of the channel's sender, or
/// handed one on (see `core/channel/senders.rs`). It needs the key like a
/// value, so only a holder of the sender can send it.
pub const FLAG_CONTROL: u16 = 32;

/// The id of the master context, the root of every tree.
pub const MASTER_ID: ContextId = 0;

/// Well-known handles, below [`FIRST_USER_HANDLE`].
pub mod handles {
    /// Function calls into a context (run on its main thread).
    pub const CALL_FUNCTION: u32 = 101;
    /// Log records forwarded from a child to the master.
    pub const FORWARD_LOG: u32 = 102;
    /// The bootstrap frame carrying a new child's configuration.
    pub const BOOTSTRAP: u32 = 100;
    /// Orderly shutdown request from a parent.
    pub const SHUTDOWN: u32 = 103;
    /// A new context became reachable below the sender.
    pub const ADD_ROUTE: u32 = 104;
    /// A context below the sender went away.
    pub const DEL_ROUTE: u32 = 105;
    /// The caller of a call gave up on it; the body is the call's reply
    /// handle (4 bytes, little-endian).
    pub const CANCEL_CALL: u32 = 110;
    /// Credit for a channel's senders from its receiver's context: a grant
    /// of window, or word that the channel takes nothing more (see
    /// `core/channel/flow.rs`).
    pub const CHANNEL_CREDIT: u32 = 111;
    /// Calls of a service's methods (`service/`): open to every context,
    /// each method's own rule decides who may call it.
    pub const CALL_SERVICE: u32 = 120;
    /// The caller of a service call gave up on it; the body is as for
    /// [`CANCEL_CALL`], and only the caller's own calls are found.
    pub const CANCEL_SERVICE: u32 = 121;
}

/// Handles for replies and channels are drawn at random from this number up
/// (the numbers below it are reserved for [`handles`]), so that a context
/// cannot guess the handle of a call or a channel it was not given.
pub const FIRST_USER_HANDLE: u32 = 1000;

/// One message: routing header plus body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// Destination context.
    pub dst: ContextId,
    /// Source context.
    pub src: ContextId,
    /// Context whose authority the message carries; assigned on receipt.
    pub auth_id: ContextId,
    /// Handle at `dst` that receives the message.
    pub handle: u32,
    /// Handle at `src` that receives a reply, or 0.
    pub reply_to: u32,
    /// Flag bits, see [`FLAG_DEAD`].
    pub flags: u16,
    /// The encoded body.
    pub body: Bytes,
}

impl Message {
    /// True when the message reports a dead handle, channel or peer.
    pub fn is_dead(&self) -> bool {
        self.flags & FLAG_DEAD != 0
    }

    /// A DEAD message for `handle` at `dst`, carrying `reason`.
    pub fn dead(dst: ContextId, src: ContextId, handle: u32, reason: &str) -> Message {
        Message {
            dst,
            src,
            auth_id: src,
            handle,
            reply_to: 0,
            flags: FLAG_DEAD,
            body: Bytes::copy_from_slice(reason.as_bytes()),
        }
    }

    /// A DEAD message saying that context `src` is unreachable.
    pub fn disconnected(dst: ContextId, src: ContextId, handle: u32, reason: &str) -> Message {
        let mut m = Message::dead(dst, src, handle, reason);
        m.flags |= FLAG_DISCONNECTED;
        m
    }

    /// True when `reply_to` names a handle waiting for an answer (not a
    /// channel's key, and not on a DEAD message, which is never answered).
    pub fn wants_reply(&self) -> bool {
        self.reply_to != 0 && self.flags & (FLAG_DEAD | FLAG_KEYED) == 0
    }

    /// True when a DEAD message reports an unreachable context.
    pub fn is_disconnect(&self) -> bool {
        self.flags & FLAG_DISCONNECTED != 0
    }

    /// The reason carried by a DEAD message.
    pub fn dead_reason(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Encodes the header (with the body length) into a fixed array.
    pub fn encode_header(&self) -> [u8; HEADER_LEN] {
        self.encode_header_len(self.body.len())
    }

    /// Encodes the header announcing a body of `len` bytes, for a frame whose
    /// body follows later (cut-through relaying).
    pub(crate) fn encode_header_len(&self, len: usize) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..2].copy_from_slice(&MAGIC.to_le_bytes());
        h[2..4].copy_from_slice(&self.flags.to_le_bytes());
        h[4..8].copy_from_slice(&self.dst.to_le_bytes());
        h[8..12].copy_from_slice(&self.src.to_le_bytes());
        h[12..16].copy_from_slice(&self.auth_id.to_le_bytes());
        h[16..20].copy_from_slice(&self.handle.to_le_bytes());
        h[20..24].copy_from_slice(&self.reply_to.to_le_bytes());
        h[24..28].copy_from_slice(&(len as u32).to_le_bytes());
        h
    }
}

/// Why a frame could not be decoded. Any of these means the stream is corrupt or
/// hostile and is disconnected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame does not start with [`MAGIC`].
    #[error("bad magic {found:#06x} (expected {MAGIC:#06x}): stream is corrupt")]
    BadMagic {
        /// The two bytes found instead.
        found: u16,
    },
    /// The header announces a body larger than the configured maximum.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced body length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
}

/// A decoded header, before its body has arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Flag bits.
    pub flags: u16,
    /// Destination context.
    pub dst: ContextId,
    /// Source context.
    pub src: ContextId,
    /// Authority id as sent.
    pub auth_id: ContextId,
    /// Destination handle.
    pub handle: u32,
    /// Reply handle.
    pub reply_to: u32,
    /// Body length.
    pub len: usize,
}

impl Header {
    /// Parses a header from exactly [`HEADER_LEN`] bytes, checking the magic and
    /// the length limit.
    pub fn parse(mut b: &[u8], max: usize) -> Result<Header, FrameError> {
        debug_assert!(b.len() >= HEADER_LEN);
        let magic = b.get_u16_le();
        if magic != MAGIC {
            return Err(FrameError::BadMagic { found: magic });
        }
        let flags = b.get_u16_le();
        let dst = b.get_u32_le();
        let src = b.get_u32_le();
        let auth_id = b.get_u32_le();
        let handle = b.get_u32_le();
        let reply_to = b.get_u32_le();
        let len = b.get_u32_le() as usize;
        // A relay's trailer byte may take a body of the largest size one over.
        if len > max + usize::from(flags & FLAG_TRAILER != 0) {
            return Err(FrameError::TooLarge { len, max });
        }
        Ok(Header {
            flags,
            dst,
            src,
            auth_id,
            handle,
            reply_to,
            len,
        })
    }

    /// Joins the header with its body into a message.
    pub fn into_message(self, body: Bytes) -> Message {
        Message {
            dst: self.dst,
            src: self.src,
            auth_id: self.auth_id,
            handle: self.handle,
            reply_to: self.reply_to,
            flags: self.flags,
            body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let m = Message {
            dst: 7,
            src: 3,
            auth_id: 3,
            handle: 1001,
            reply_to: 1002,
            flags: FLAG_DEAD,
            body: Bytes::from_static(b"hello"),
        };
        let h = Header::parse(&m.encode_header(), 100).unwrap();
        assert_eq!(h.into_message(m.body.clone()), m);
    }

    #[test]
    fn bad_magic_and_oversize_are_refused() {
        let m = Message {
            body: Bytes::from_static(b"0123456789"),
            ..Default::default()
        };
        let mut h = m.encode_header();
        assert_eq!(
            Header::parse(&h, 5),
            Err(FrameError::TooLarge { len: 10, max: 5 })
        );
        h[0] = 0;
        assert!(matches!(
            Header::parse(&h, 100),
            Err(FrameError::BadMagic { .. })
        ));
    }
}
