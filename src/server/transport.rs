//! One connection's message stream for tarpc: frames in, decoded by [`codec::decode`], and
//! replies out, with the error replies of requests that could not run written in between.
//!
//! tarpc's `serde_transport` can only fail the stream on a frame it cannot decode, which
//! closes the connection. This transport answers such a request itself, for its id, with a
//! tarpc server error (`{"request_id": N, "message": {"Err": {"kind": K, "detail": "…"}}}`),
//! the same form tarpc uses when it throttles a request, so every client already reads it.

use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures::{Sink, SinkExt, Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tarpc::{ClientMessage, Response};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use super::codec::{self, Decoded, UNKNOWN_METHOD};
use super::UntilShutdown;
use crate::service::State;

/// The JSON message stream of one connection.
pub(crate) struct Transport<Req, Resp> {
    /// The length-delimited frames.
    framed: Framed<UntilShutdown, LengthDelimitedCodec>,
    /// The error reply of the last request refused, until the sink takes it. At most one
    /// waits: no further frame is read until it is written, so a client that sends bad
    /// requests without reading the replies is slowed down, not buffered for.
    refusal: Option<Bytes>,
    /// Refusals so far on this connection; only the first is logged at warn.
    refused: u64,
    /// For the refused-frame counter.
    state: Arc<State>,
    /// The message types; the transport holds none.
    types: PhantomData<fn(Resp) -> Req>,
}

impl<Req, Resp> Transport<Req, Resp> {
    pub(crate) fn new(
        framed: Framed<UntilShutdown, LengthDelimitedCodec>,
        state: Arc<State>,
    ) -> Self {
        Transport {
            framed,
            refusal: None,
            refused: 0,
            state,
            types: PhantomData,
        }
    }

    /// Logs a refused frame: the first of a connection at warn, later ones at debug, so a
    /// client looping on a bad request does not flood the journal (the counter counts all).
    fn note(&mut self, reason: &'static str, detail: &str) {
        self.state.metrics.frame_refused(reason);
        self.refused += 1;
        if self.refused == 1 {
            tracing::warn!(
                reason,
                detail,
                "a request frame was not run (later ones on this connection are logged at debug)"
            );
        } else {
            tracing::debug!(reason, detail, "a request frame was not run");
        }
    }

    /// Writes the waiting refusal into the sink's buffer, if the sink has room.
    fn push_refusal(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.refusal.is_some() {
            ready!(Sink::<Bytes>::poll_ready(Pin::new(&mut self.framed), cx))?;
            if let Some(frame) = self.refusal.take() {
                self.framed.start_send_unpin(frame)?;
            }
            // The bytes are in the write buffer; tarpc flushes it whenever it has no reply of
            // its own to write, so a flush that cannot finish now is not waited for.
            if let Poll::Ready(Err(e)) = Sink::<Bytes>::poll_flush(Pin::new(&mut self.framed), cx) {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<Req: DeserializeOwned, Resp> Stream for Transport<Req, Resp> {
    type Item = io::Result<ClientMessage<Req>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            ready!(this.push_refusal(cx))?;
            let Some(frame) = ready!(this.framed.poll_next_unpin(cx)?) else {
                return Poll::Ready(None);
            };
            match codec::decode::<Req>(&frame, latchkey_client::METHODS) {
                Decoded::Message(message) => return Poll::Ready(Some(Ok(message))),
                Decoded::Refuse { id, error } => {
                    let reason = if error.kind == UNKNOWN_METHOD {
                        "unknown_method"
                    } else {
                        "invalid_request"
                    };
                    this.note(reason, &error.detail);
                    this.refusal = Some(codec::refusal(id, error)?);
                }
                Decoded::Drop(why) => this.note("dropped", &why),
                Decoded::Close(e) => {
                    this.note("not_json", &e.to_string());
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}

impl<Req, Resp: Serialize> Sink<Response<Resp>> for Transport<Req, Resp> {
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.push_refusal(cx))?;
        Sink::<Bytes>::poll_ready(Pin::new(&mut this.framed), cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Response<Resp>) -> io::Result<()> {
        let json = serde_json::to_vec(&item).map_err(io::Error::other)?;
        self.get_mut().framed.start_send_unpin(Bytes::from(json))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.push_refusal(cx))?;
        Sink::<Bytes>::poll_flush(Pin::new(&mut this.framed), cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.push_refusal(cx))?;
        Sink::<Bytes>::poll_close(Pin::new(&mut this.framed), cx)
    }
}
