//! `latchkeyd`: a password-reset and credential daemon that sits beside an application and
//! answers on a Unix socket.
//!
//! The map:
//! - [`config`]: settings from defaults, a TOML file and `LATCHKEY_*` variables.
//! - [`server`]: the socket, peer credentials and roles, connection limits, graceful shutdown.
//! - [`service`]: the RPC methods (the [`latchkey_client::Latchkey`] trait) and their logging.
//! - [`store`]: sled trees behind the store's own interface, with group commit for durability.
//! - [`passwords`]: the password policy and argon2id hashing off the async threads.
//! - [`tokens`]: the reset token format (selector and verifier).
//! - [`limits`]: in-process rate limits.
//! - [`mail`]: the queued mail jobs and the outbox sender.
//! - [`maintenance`]: background sweeps (expired tokens, old events, idle limiter keys).
//! - [`validate`]: checks and normalisation of every other caller-supplied field.
//! - [`error`]: where internal failures become the stable [`latchkey_client::ApiError`].
//! - [`random`]: the OS CSPRNG.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::await_holding_lock
)]

pub mod config;
pub mod error;
pub mod limits;
pub mod mail;
pub mod maintenance;
pub mod passwords;
pub mod random;
pub mod server;
pub mod service;
pub mod store;
pub mod tokens;
pub mod validate;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use config::Config;
use passwords::Passwords;
use service::State;
use store::Store;
use tokio_util::sync::CancellationToken;

/// Why the daemon could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The socket could not be set up.
    #[error(transparent)]
    Bind(#[from] server::BindError),
    /// The store could not be opened or flushed.
    #[error("store in {path}: {source}")]
    Store {
        /// The data directory.
        path: std::path::PathBuf,
        /// What failed.
        #[source]
        source: store::StoreError,
    },
    /// The hasher rejected its parameters.
    #[error(transparent)]
    Hash(#[from] passwords::HashError),
}

/// Opens the store, binds the socket and serves until `shutdown` completes; then finishes the
/// calls in flight, flushes the store and removes the socket.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let data_dir = config.store.data_dir.clone();
    let store_err = |source| DaemonError::Store {
        path: data_dir.clone(),
        source,
    };
    let store = Store::open(&data_dir, config.store.cache_bytes).map_err(store_err)?;
    let passwords = Passwords::new(&config.passwords, config.hash_concurrency())?;
    let (listener, socket_gid) = server::bind(&config).await?;
    let auth = server::Auth::new(&config.auth, socket_gid);
    let socket = config.server.socket.clone();
    tracing::info!(
        socket = %socket.display(),
        data_dir = %config.store.data_dir.display(),
        users = store.user_count(),
        "latchkeyd {} ready",
        env!("CARGO_PKG_VERSION")
    );
    let state = Arc::new(State {
        store: store.clone(),
        passwords,
        limits: limits::Limits::new(&config.limits),
        mail_wake: Arc::new(tokio::sync::Notify::new()),
        config,
        started: Instant::now(),
    });
    let background = CancellationToken::new();
    let upkeep = tokio::spawn(maintenance::run(state.clone(), background.clone()));
    let mailer = tokio::spawn(mail::run(
        store.clone(),
        state.config.mail.clone(),
        state.mail_wake.clone(),
        background.clone(),
    ));
    server::run(listener, state, auth, shutdown).await;
    background.cancel();
    for (name, task) in [("maintenance", upkeep), ("mail sender", mailer)] {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "{name} task failed");
        }
    }
    server::remove_socket(&socket);
    store.flush_now().map_err(store_err)?;
    tracing::info!("stopped cleanly");
    Ok(())
}
