//! The optional metrics listener (`[metrics] listen`, issue 17): Prometheus cannot scrape a
//! Unix-socket RPC, so the same text the `metrics` method renders is served over HTTP at
//! `GET /metrics`, on a loopback address only. hyper does the HTTP (its http1 server, the one
//! axum and most Rust services stand on); this module only routes and bounds it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::service::State;
use crate::setting::BadSetting;

/// How many scrape connections are served at once; more wait in the kernel's backlog. A
/// Prometheus server or two, an agent and an operator's curl need a handful.
const MAX_CONNECTIONS: usize = 8;

/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The media type of the text `prometheus-client` renders.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `[metrics]`: the optional HTTP listener.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// A loopback address and port to serve `GET /metrics` on, such as `"127.0.0.1:9464"`;
    /// unset (the default) serves metrics over the socket only.
    pub listen: Option<String>,
}

impl MetricsConfig {
    /// The address to listen on, if any: it must parse and be a loopback address, because the
    /// metrics tell anyone who can read them how many accounts there are and how busy each
    /// method is, and the listener has no authentication of its own.
    pub fn address(&self) -> Result<Option<SocketAddr>, BadSetting> {
        let Some(raw) = &self.listen else {
            return Ok(None);
        };
        let address: SocketAddr = raw.parse().map_err(|_| {
            BadSetting::new(
                "metrics.listen",
                format!("{raw:?} is not an address and port such as \"127.0.0.1:9464\""),
            )
        })?;
        if !address.ip().is_loopback() {
            return Err(BadSetting::new(
                "metrics.listen",
                format!(
                    "{raw:?} is not a loopback address: the metrics listener has no \
                     authentication, so it binds 127.0.0.0/8 or ::1 only (scrape it through a \
                     local agent or a proxy)"
                ),
            ));
        }
        Ok(Some(address))
    }

    /// Checks the setting.
    pub(crate) fn validate(&self) -> Result<(), BadSetting> {
        self.address().map(|_| ())
    }
}

/// Binds the listener, so a taken port fails the start-up instead of a scrape.
pub(crate) async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

/// Serves scrapes until `stop` is cancelled.
pub(crate) async fn run(listener: TcpListener, state: Arc<State>, stop: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => return,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(answer(&state, &request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "metrics listener: connection ended with an error");
                    }
                }
                () = stop.cancelled() => connection.as_mut().graceful_shutdown(),
            }
            drop(permit);
        });
    }
}

/// The reply to one request: the metrics for `GET /metrics` (and `HEAD`), 404 elsewhere,
/// 405 for other methods.
async fn answer(state: &State, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    };
    if request.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "not found; the metrics are at /metrics\n".into(),
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = reply(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let started = std::time::Instant::now();
    let text = crate::service::render_metrics(state).await;
    state.metrics.call("metrics_http", "ok", started.elapsed());
    let mut response = reply(StatusCode::OK, text);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
    response
}
