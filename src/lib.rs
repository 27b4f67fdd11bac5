//! `latchkeyd`: a password-reset and credential daemon that sits beside an application and
//! answers on a Unix socket.
//!
//! The map:
//! - [`daemon`]: start-up checks, background tasks, systemd notifications, reload, stop.
//! - [`config`]: settings from defaults, a TOML file and `LATCHKEY_*` variables.
//! - [`server`]: the socket, peer credentials and roles, connection limits, graceful shutdown.
//! - [`service`]: the RPC methods (the [`latchkey_client::Latchkey`] trait) and their logging.
//! - [`store`]: sled trees behind the store's own interface, with group commit for durability.
//! - [`passwords`]: the password policy and argon2id hashing off the async threads.
//! - [`tokens`]: the reset token format (selector and verifier).
//! - [`limits`]: in-process rate limits.
//! - [`mail`]: the queued mail jobs and the outbox sender.
//! - [`maintenance`]: background sweeps (expired tokens, old events, idle limiter keys).
//! - [`metrics`]: call counts, latencies and levels in the Prometheus text format.
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
pub mod daemon;
pub mod error;
pub mod limits;
pub mod mail;
pub mod maintenance;
pub mod metrics;
pub mod passwords;
pub mod random;
pub mod server;
pub mod service;
pub mod store;
pub mod tokens;
pub mod validate;

pub use daemon::{run, DaemonError, Options};
