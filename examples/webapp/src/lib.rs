//! An example web application on top of `latchkeyd`: the pages of a forgot-password flow
//! (ask for a link, open it, choose a new password, log in with it), served with axum and
//! talking to the daemon through the `latchkey-client` crate.
//!
//! The map:
//! - [`daemon`]: the connection to `latchkeyd`, made again after it breaks.
//! - [`security`]: headers on every response, CSRF tokens checked on every POST, the signed
//!   session cookie, the reset-token cookie, the client IP passed to the daemon.
//! - [`pages`]: the HTML, every interpolated value escaped.
//! - [`routes`]: the handlers, one per page and form.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let settings = latchkey_webapp::Settings::new("./latchkey.sock");
//! let router = latchkey_webapp::app(settings)?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! latchkey_webapp::serve(listener, router, std::future::pending()).await?;
//! # Ok(()) }
//! ```
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::await_holding_lock
)]
#![warn(missing_docs)]

pub mod daemon;
pub mod pages;
pub mod routes;
pub mod security;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;

/// How the app runs, from its command line.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// Take the client IP from the right-most `X-Forwarded-For` entry instead of the peer
    /// address. Only behind a reverse proxy that appends it: anyone can send the header, so
    /// trusting it on a directly reachable app would let clients pick the IP the daemon's
    /// per-IP rate limits count against.
    pub trust_forwarded_for: bool,
    /// Mark every cookie `Secure` (sent over HTTPS only). Set it whenever the app is served
    /// over HTTPS, typically behind a TLS-terminating proxy; the app cannot tell by itself.
    pub secure_cookies: bool,
}

impl Settings {
    /// Settings for the daemon at `socket`, with the peer address as client IP and cookies
    /// that plain HTTP carries (for local use).
    ///
    /// ```
    /// let settings = latchkey_webapp::Settings::new("/run/latchkeyd/latchkeyd.sock");
    /// assert!(!settings.trust_forwarded_for);
    /// ```
    pub fn new(socket: impl Into<PathBuf>) -> Settings {
        Settings {
            socket: socket.into(),
            trust_forwarded_for: false,
            secure_cookies: false,
        }
    }
}

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The state behind [`AppState`], alive as long as the app.
pub struct Shared {
    /// How the app runs.
    pub settings: Settings,
    /// The daemon connection.
    pub daemon: daemon::Daemon,
    /// The keys that sign CSRF tokens and session cookies; new at each start.
    pub keys: security::Keys,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The application: every page, the CSRF check and the security headers. Fails only if the
/// operating system cannot supply random bytes for the signing keys.
///
/// The keys are made fresh at each start, so a restart signs everyone out and voids forms
/// open in browsers (they are asked to reload). Several instances behind one load balancer
/// would need a shared key instead.
pub fn app(settings: Settings) -> Result<Router, getrandom::Error> {
    let state = AppState(Arc::new(Shared {
        daemon: daemon::Daemon::new(settings.socket.clone()),
        keys: security::Keys::generate()?,
        settings,
    }));
    Ok(routes::router(state))
}

/// Serves `router` on `listener` until `shutdown` completes, then lets requests in progress
/// finish. The peer address of each connection is what [`security::ClientIp`] reads.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
