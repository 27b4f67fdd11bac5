//! The JSON codec of the socket, with one guard that tarpc's own lacks.
//!
//! tarpc turns a request's relative deadline into an `Instant` by adding it to now, which
//! panics on overflow: a frame claiming a deadline of 2^64 seconds would bring down its
//! connection's task with a panic. This codec reads the deadline first, with a partial parse
//! that skips everything else, and refuses frames whose deadline is beyond
//! [`MAX_DEADLINE_SECS`]: the connection is closed, as for any other malformed frame.

use std::io;
use std::marker::PhantomData;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use tarpc::tokio_serde::{Deserializer, Serializer};

/// The longest deadline a request may carry: a day, far beyond any call's real duration.
pub const MAX_DEADLINE_SECS: u64 = 86_400;

/// JSON frames in and out.
pub struct Json<Item, SinkItem> {
    /// The frame types; the codec itself holds no state.
    types: PhantomData<fn(SinkItem) -> Item>,
}

impl<Item, SinkItem> Default for Json<Item, SinkItem> {
    fn default() -> Self {
        Json { types: PhantomData }
    }
}

/// Just enough of a client message to read its deadline.
#[derive(Deserialize)]
enum Peek {
    Request(PeekRequest),
    Cancel(IgnoredAny),
}

#[derive(Deserialize)]
struct PeekRequest {
    context: PeekContext,
}

#[derive(Deserialize)]
struct PeekContext {
    deadline: PeekDeadline,
}

#[derive(Deserialize)]
struct PeekDeadline {
    secs: u64,
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<Item: DeserializeOwned, SinkItem> Deserializer<Item> for Json<Item, SinkItem> {
    type Error = io::Error;

    fn deserialize(self: Pin<&mut Self>, src: &BytesMut) -> Result<Item, io::Error> {
        if let Peek::Request(request) = serde_json::from_slice::<Peek>(src).map_err(invalid)? {
            let secs = request.context.deadline.secs;
            if secs > MAX_DEADLINE_SECS {
                return Err(invalid(format!(
                    "deadline of {secs} s is beyond the {MAX_DEADLINE_SECS} s allowed"
                )));
            }
        }
        serde_json::from_slice(src).map_err(invalid)
    }
}

impl<Item, SinkItem: Serialize> Serializer<SinkItem> for Json<Item, SinkItem> {
    type Error = io::Error;

    fn serialize(self: Pin<&mut Self>, item: &SinkItem) -> Result<Bytes, io::Error> {
        serde_json::to_vec(item).map(Bytes::from).map_err(invalid)
    }
}
