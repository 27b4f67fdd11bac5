//! Reading a request frame: what can run, what gets an error reply, what closes the
//! connection (issue 17).
//!
//! tarpc's own JSON codec fails the whole connection on any frame it cannot decode, so one
//! unknown method (a newer client talking to an older daemon) or one mistyped argument used
//! to drop every other call in flight on that connection. Here a frame is read in two steps:
//! first the envelope (`{"Request": {"id", "context", "message"}}`, with the context and the
//! message kept as raw JSON), then the context and the message. A request whose `id` could be
//! read but whose rest could not is answered for that id with a server error
//! ([`UNKNOWN_METHOD`] or [`INVALID_REQUEST`]) and the connection carries on. Only a frame that
//! is not JSON at all (or over the size cap, which the framing refuses) closes it; JSON that
//! is no message at all, or a cancellation that does not decode, is dropped.
//!
//! Two more guards:
//! - tarpc turns a request's relative deadline into an `Instant` by adding it to now, which
//!   panics on overflow; a deadline beyond [`MAX_DEADLINE_SECS`] is refused before that.
//! - An error describes the frame by category and position only ([`reduced`]): serde's own
//!   message quotes the offending value, so a client bug that puts a password in the wrong
//!   field would otherwise write it to the journal and send it back.

use std::io;
use std::time::{Duration, Instant};

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use serde_json::value::RawValue;
use tarpc::{ClientMessage, ServerError};

/// The longest deadline a request may carry: a day, far beyond any call's real duration.
pub const MAX_DEADLINE_SECS: u64 = 86_400;

/// The server error `kind` for a method this daemon does not have: tarpc's number for
/// `io::ErrorKind::NotFound` (0 on the wire).
pub const UNKNOWN_METHOD: io::ErrorKind = io::ErrorKind::NotFound;

/// The server error `kind` for a request the daemon could not read (missing or mistyped
/// argument, absent or absurd deadline): tarpc's number for `io::ErrorKind::InvalidInput`
/// (11 on the wire).
pub const INVALID_REQUEST: io::ErrorKind = io::ErrorKind::InvalidInput;

/// What a frame turned out to be.
#[derive(Debug)]
pub(crate) enum Decoded<Req> {
    /// A message tarpc can take: a request to run or a cancellation.
    Message(ClientMessage<Req>),
    /// A request that cannot run: answer `id` with `error` and carry on.
    Refuse {
        /// The request's id.
        id: u64,
        /// Why it cannot run; names no value of the frame.
        error: ServerError,
    },
    /// JSON that is no message this daemon can answer (no readable request id, or a
    /// cancellation that does not decode): nothing to reply to; dropped.
    Drop(String),
    /// Not JSON: the byte stream cannot be trusted any more; the connection closes.
    Close(io::Error),
}

/// The outer shape of a client message, with the parts that may fail kept raw.
#[derive(Deserialize)]
enum Envelope<'a> {
    Request(#[serde(borrow)] RequestEnvelope<'a>),
    Cancel(IgnoredAny),
}

#[derive(Deserialize)]
struct RequestEnvelope<'a> {
    id: u64,
    #[serde(borrow, default)]
    context: Option<&'a RawValue>,
    #[serde(borrow, default)]
    message: Option<&'a RawValue>,
}

/// A request's context as it arrives. The trace context is optional here (tarpc requires
/// it): it only correlates spans, and a hand-written client has no use for it.
#[derive(Deserialize)]
struct WireContext {
    deadline: Option<WireDeadline>,
    #[serde(default)]
    trace_context: Option<tarpc::trace::Context>,
}

/// A relative deadline: `{"secs": 10, "nanos": 0}`; `nanos` may be left out.
#[derive(Deserialize)]
struct WireDeadline {
    secs: u64,
    #[serde(default)]
    nanos: u32,
}

/// The name of the method a message calls: its one key.
struct MethodName(Option<String>);

impl<'de> Deserialize<'de> for MethodName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = MethodName;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object with one key, the method")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<MethodName, A::Error> {
                let name = map.next_key::<String>()?;
                map.next_value::<IgnoredAny>()?;
                Ok(MethodName(name))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<MethodName, E> {
                // serde also reads a unit variant from a plain string.
                Ok(MethodName(Some(v.to_owned())))
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

/// Decodes one frame. `methods` is every method name the request type knows, to tell an
/// unknown method from bad arguments to a known one.
pub(crate) fn decode<Req: DeserializeOwned>(frame: &[u8], methods: &[&str]) -> Decoded<Req> {
    let envelope = match serde_json::from_slice::<Envelope>(frame) {
        Ok(envelope) => envelope,
        Err(e) => {
            return match serde_json::from_slice::<IgnoredAny>(frame) {
                Ok(_) => Decoded::Drop(reduced("a message without a readable request id: ", &e)),
                Err(e) => Decoded::Close(invalid(reduced("a frame that does not decode: ", &e))),
            }
        }
    };
    let request = match envelope {
        Envelope::Request(request) => request,
        Envelope::Cancel(_) => {
            return match serde_json::from_slice::<ClientMessage<Req>>(frame) {
                Ok(message) => Decoded::Message(message),
                Err(e) => Decoded::Drop(reduced("a cancellation that does not decode: ", &e)),
            }
        }
    };
    let id = request.id;
    let refuse = |kind, detail: String| Decoded::Refuse {
        id,
        error: ServerError::new(kind, detail),
    };
    let Some(context) = request.context else {
        return refuse(
            INVALID_REQUEST,
            "invalid request: missing field `context`".into(),
        );
    };
    let context = match serde_json::from_str::<WireContext>(context.get()) {
        Ok(context) => context,
        Err(e) => return refuse(INVALID_REQUEST, reduced("invalid request context: ", &e)),
    };
    let Some(deadline) = context.deadline else {
        return refuse(
            INVALID_REQUEST,
            "invalid request: missing field `deadline` in `context` (a relative duration, \
             {\"secs\": 10, \"nanos\": 0})"
                .into(),
        );
    };
    if deadline.secs > MAX_DEADLINE_SECS {
        return refuse(
            INVALID_REQUEST,
            format!(
                "invalid request: a deadline of {} s is beyond the {MAX_DEADLINE_SECS} s allowed",
                deadline.secs
            ),
        );
    }
    let Some(message) = request.message else {
        return refuse(
            INVALID_REQUEST,
            "invalid request: missing field `message`".into(),
        );
    };
    let message = match serde_json::from_str::<Req>(message.get()) {
        Ok(message) => message,
        Err(e) => {
            let name = serde_json::from_str::<MethodName>(message.get())
                .ok()
                .and_then(|n| n.0);
            return match name {
                Some(name) if methods.contains(&name.as_str()) => refuse(
                    INVALID_REQUEST,
                    reduced(&format!("invalid arguments to `{name}`: "), &e),
                ),
                Some(name) => refuse(UNKNOWN_METHOD, unknown_method(&name)),
                None => refuse(
                    INVALID_REQUEST,
                    "invalid request: `message` must be an object with one key, the method \
                     ({\"Health\": {}})"
                        .into(),
                ),
            };
        }
    };
    let mut ctx = tarpc::context::current();
    // At most a day plus u32::MAX ns: no overflow.
    ctx.deadline = Instant::now()
        + Duration::new(deadline.secs, 0)
        + Duration::from_nanos(deadline.nanos.into());
    if let Some(trace) = context.trace_context {
        ctx.trace_context = trace;
    }
    Decoded::Message(ClientMessage::Request(tarpc::Request {
        context: ctx,
        id,
        message,
    }))
}

/// The reply text for an unknown method. The name is the caller's, so it is quoted only
/// when it looks like a method name (short, ASCII letters and digits), never a value.
fn unknown_method(name: &str) -> String {
    let plausible =
        name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let protocol = latchkey_client::PROTOCOL_VERSION;
    if plausible {
        format!(
            "unknown method `{name}`: this daemon (protocol {protocol}) does not have it; \
             `health` lists the methods it has"
        )
    } else {
        format!(
            "unknown method: this daemon (protocol {protocol}) does not have it; `health` \
             lists the methods it has"
        )
    }
}

/// The reply frame's body for a request that was not run: `{"request_id": id, "message":
/// {"Err": {"kind": …, "detail": …}}}`, tarpc's own form for a server error.
pub(crate) fn refusal(id: u64, error: ServerError) -> io::Result<bytes::Bytes> {
    let reply = tarpc::Response::<()> {
        request_id: id,
        message: Err(error),
    };
    serde_json::to_vec(&reply)
        .map(bytes::Bytes::from)
        .map_err(io::Error::other)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// A decoding error without the bytes it quotes (issue 19, item 9): the category, the
/// position, and for a missing field its name, which is ours, not the caller's.
fn reduced(prefix: &str, e: &serde_json::Error) -> String {
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
                return format!(
                    "{prefix}missing field `{field}` at line {} column {}",
                    e.line(),
                    e.column()
                );
            }
            "a value of the wrong type, an unknown name or a number out of range"
        }
    };
    format!("{prefix}{what} at line {} column {}", e.line(), e.column())
}

#[cfg(test)]
mod tests {
    use latchkey_client::{LatchkeyRequest, METHODS};

    use super::*;

    /// A whole client frame carrying `message` (JSON), as a client would send it.
    fn frame(message: &str) -> String {
        format!(
            r#"{{"Request":{{"context":{{"deadline":{{"secs":10,"nanos":0}}}},"id":7,"message":{message}}}}}"#
        )
    }

    /// What a frame decodes to, in words.
    fn decode_text(frame: &str) -> String {
        match decode::<LatchkeyRequest>(frame.as_bytes(), METHODS) {
            Decoded::Message(ClientMessage::Request(r)) => format!("request {}", r.id),
            Decoded::Message(_) => String::from("cancel"),
            Decoded::Refuse { id, error } => {
                format!("refuse {id} {:?}: {}", error.kind, error.detail)
            }
            Decoded::Drop(why) => format!("drop: {why}"),
            Decoded::Close(e) => format!("close: {e}"),
        }
    }

    #[test]
    fn a_request_that_cannot_run_is_refused_for_its_id_and_only_non_json_closes() {
        assert_eq!(decode_text(&frame(r#"{"Health":{}}"#)), "request 7");
        let unknown = decode_text(&frame(r#"{"Teleport":{"to":"mars"}}"#));
        assert!(
            unknown.starts_with("refuse 7 NotFound: unknown method `Teleport`"),
            "{unknown}"
        );
        let missing = decode_text(&frame(r#"{"GetUser":{}}"#));
        assert!(
            missing.starts_with(
                "refuse 7 InvalidInput: invalid arguments to `GetUser`: missing field `id`"
            ),
            "{missing}"
        );
        let mistyped = decode_text(&frame(r#"{"GetUser":{"id":"three"}}"#));
        assert!(
            mistyped.starts_with(
                "refuse 7 InvalidInput: invalid arguments to `GetUser`: a value of the wrong type"
            ),
            "{mistyped}"
        );
        let no_deadline =
            decode_text(r#"{"Request":{"context":{},"id":8,"message":{"Health":{}}}}"#);
        assert!(
            no_deadline
                .starts_with("refuse 8 InvalidInput: invalid request: missing field `deadline`"),
            "{no_deadline}"
        );
        let absurd = decode_text(
            r#"{"Request":{"context":{"deadline":{"secs":18446744073709551615}},"id":9,"message":{"Health":{}}}}"#,
        );
        assert!(
            absurd.starts_with(
                "refuse 9 InvalidInput: invalid request: a deadline of 18446744073709551615 s"
            ),
            "{absurd}"
        );
        let no_message = decode_text(r#"{"Request":{"context":{"deadline":{"secs":1}},"id":10}}"#);
        assert!(
            no_message.starts_with("refuse 10 InvalidInput"),
            "{no_message}"
        );
        assert!(decode_text(r#"{"Request":{"id":"x"}}"#).starts_with("drop: "));
        assert!(decode_text(r#"[1, 2, 3]"#).starts_with("drop: "));
        assert!(decode_text(r#"{"Cancel":{"request_id":"x"}}"#).starts_with("drop: "));
        assert!(decode_text(r#"{"Request": {"id": 1, "#).starts_with("close: "));
        assert!(decode_text("\u{1}not json").starts_with("close: "));
    }

    #[test]
    fn every_method_name_is_known_to_the_request_type() {
        // serde itself, not `decode` (which takes METHODS' word for what a method is): a
        // name that is no variant fails with "unknown variant".
        for method in METHODS {
            let verdict =
                serde_json::from_str::<LatchkeyRequest>(&format!(r#"{{"{method}":{{}}}}"#));
            if let Err(e) = verdict {
                assert!(!e.to_string().contains("unknown variant"), "{method}: {e}");
            }
        }
    }

    #[test]
    fn no_error_quotes_a_value_of_the_frame() {
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
            format!("{{\"Request\":{{\"id\":1,\"context\":{{\"deadline\":\"{secret}\"}}}}}}"),
            format!("{{\"{secret}\": 1}}"),
            format!("\"{secret}"),
        ] {
            let text = decode_text(&frame);
            assert!(
                text.contains(" at line 1 column ") || text.contains("unknown method:"),
                "{text}"
            );
            assert!(!text.contains("horse"), "{text}");
        }
    }
}
