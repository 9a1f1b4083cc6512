//! How values become message bodies.

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};

use super::error::Error;

/// A value that can travel in a message body.
///
/// Every `serde` type is a payload, encoded with `postcard` (compact, no schema on
/// the wire). [`Blob`] is the exception: its bytes *are* the body, so bulk data is
/// neither copied into an encoded array nor parsed on arrival.
pub trait Payload: Sized + Send + 'static {
    /// Encodes `self` as a message body.
    fn encode(&self) -> Result<Bytes, Error>;
    /// Decodes a message body.
    fn decode(body: Bytes) -> Result<Self, Error>;
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Payload for T {
    fn encode(&self) -> Result<Bytes, Error> {
        postcard::to_allocvec(self)
            .map(Bytes::from)
            .map_err(|e| Error::encode(std::any::type_name::<T>(), e))
    }

    fn decode(body: Bytes) -> Result<Self, Error> {
        postcard::from_bytes(&body).map_err(|e| Error::decode(std::any::type_name::<T>(), e))
    }
}

/// Raw bytes that travel as the message body itself, without encoding.
///
/// Use it for bulk data on a [`Sender`](crate::Sender): a `Blob` made from a
/// `Bytes` is written to the socket straight from its buffer, and the receiving
/// side gets a `Bytes` that points into its read buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Blob(pub Bytes);

impl Payload for Blob {
    fn encode(&self) -> Result<Bytes, Error> {
        Ok(self.0.clone())
    }

    fn decode(body: Bytes) -> Result<Self, Error> {
        Ok(Blob(body))
    }
}

impl From<Vec<u8>> for Blob {
    fn from(v: Vec<u8>) -> Blob {
        Blob(Bytes::from(v))
    }
}

impl From<Bytes> for Blob {
    fn from(b: Bytes) -> Blob {
        Blob(b)
    }
}

impl std::ops::Deref for Blob {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}
