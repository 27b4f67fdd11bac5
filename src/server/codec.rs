//! The JSON codec of the socket, with one guard that tarpc's own lacks.
//!
//! tarpc turns a request's relative deadline into an `Instant` by adding it to now, which
//! panics on overflow: a frame claiming a deadline of 2^64 seconds would bring down its
//! connection's task with a panic. This codec reads the deadline first, with a partial parse
//! that skips everything else, and refuses frames whose deadline is beyond
//! [`MAX_DEADLINE_SECS`]: the connection is closed, as for any other malformed frame.
//!
//! A frame that does not decode is described by its category and position only
//! ([`reduced`]): serde's own message quotes the offending value, and tarpc logs it, so a
//! client bug that puts a password in the wrong field would write it to the journal.

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

/// A decoding error without the bytes it quotes (issue 19, item 9): the category, the
/// position, and for a missing field its name, which is ours, not the caller's.
fn reduced(e: serde_json::Error) -> io::Error {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Io => "an I/O error",
        Category::Syntax => "malformed JSON",
        Category::Eof => "JSON cut off",
        Category::Data => {
            let message = e.to_string();
            if let Some(field) = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split_once('`'))
                .map(|(field, _)| field)
                .filter(|f| f.len() <= 32 && f.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
            {
                return invalid(format!(
                    "a frame that does not decode: missing field `{field}` at line {} column {}",
                    e.line(),
                    e.column()
                ));
            }
            "a value of the wrong type, an unknown name or a number out of range"
        }
    };
    invalid(format!(
        "a frame that does not decode: {what} at line {} column {}",
        e.line(),
        e.column()
    ))
}

impl<Item: DeserializeOwned, SinkItem> Deserializer<Item> for Json<Item, SinkItem> {
    type Error = io::Error;

    fn deserialize(self: Pin<&mut Self>, src: &BytesMut) -> Result<Item, io::Error> {
        if let Peek::Request(request) = serde_json::from_slice::<Peek>(src).map_err(reduced)? {
            let secs = request.context.deadline.secs;
            if secs > MAX_DEADLINE_SECS {
                return Err(invalid(format!(
                    "deadline of {secs} s is beyond the {MAX_DEADLINE_SECS} s allowed"
                )));
            }
        }
        serde_json::from_slice(src).map_err(reduced)
    }
}

impl<Item, SinkItem: Serialize> Serializer<SinkItem> for Json<Item, SinkItem> {
    type Error = io::Error;

    fn serialize(self: Pin<&mut Self>, item: &SinkItem) -> Result<Bytes, io::Error> {
        serde_json::to_vec(item).map(Bytes::from).map_err(invalid)
    }
}

#[cfg(test)]
mod tests {
    use latchkey_client::LatchkeyRequest;

    use super::*;

    /// A whole client frame carrying `message` (JSON), as a client would send it.
    fn frame(message: &str) -> String {
        let request = tarpc::ClientMessage::Request(tarpc::Request {
            context: tarpc::context::current(),
            id: 1,
            message: LatchkeyRequest::Health {},
        });
        let json = serde_json::to_string(&request).expect("requests serialise");
        json.replace("{\"Health\":{}}", message)
    }

    fn decode(frame: &str) -> String {
        let mut codec = Json::<tarpc::ClientMessage<LatchkeyRequest>, ()>::default();
        let src = BytesMut::from(frame.as_bytes());
        match Pin::new(&mut codec).deserialize(&src) {
            Ok(_) => String::from("decoded"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_decoding_error_names_its_category_and_place_but_never_the_value() {
        assert_eq!(decode(&frame("{\"Health\":{}}")), "decoded");
        let secret = "correct horse \\\" battery";
        for frame in [
            frame(&format!("{{\"GetUser\":{{\"id\":\"{secret}\"}}}}")),
            frame(&format!("{{\"{secret}\":{{}}}}")),
            frame(&format!(
                "{{\"GetUser\":{{\"id\":1e999, \"x\": \"{secret}\"}}}}"
            )),
            frame(&format!(
                "{{\"GetUser\":{{\"id\":-1, \"x\": \"{secret}\"}}}}"
            )),
            format!("{{\"{secret}\": 1}}"),
            format!("\"{secret}"),
        ] {
            let message = decode(&frame);
            assert!(
                message.starts_with("a frame that does not decode: "),
                "{message}"
            );
            assert!(message.contains(" at line 1 column "), "{message}");
            assert!(!message.contains("horse"), "{message}");
        }
        let missing = decode(&frame("{\"GetUser\":{}}"));
        assert!(missing.contains("missing field `id`"), "{missing}");
    }
}
