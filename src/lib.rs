//! `latchkeyd`: a password-reset and credential daemon that sits beside an application and
//! answers on a Unix socket.
//!
//! The map, lowest layer first; a module imports only from the ones above it in this list:
//! - `clock`, `random`, `setting`: the time, the OS CSPRNG, a refused setting.
//! - `store`: one interface (`store/mod.rs`) over two backends, the embedded `store/sled/`
//!   (group commit for durability; key encodings in `store/sled/keys.rs`) and the shared
//!   `store/postgres/` (migrations in `store/postgres/migrations/`); the records both keep in
//!   `store/records.rs`; the `[store]` settings. The backup file format is `store/dump.rs`,
//!   the online snapshots `store/sled/backup.rs` and `store/postgres/backup.rs`, restore and
//!   `copy-store` `store/load.rs` (with `store/sled/load.rs` and `store/postgres/load.rs`).
//! - `tokens`: the reset token format (selector and verifier).
//! - `passwords`: the password policy and argon2id hashing on dedicated threads;
//!   `[passwords]`.
//! - `limits`: in-process rate limits; `[limits]`.
//! - `validate`: checks and normalisation of every other caller-supplied field.
//! - `error`: where internal failures become the stable [`latchkey_client::ApiError`].
//! - `mail`: the queued mail jobs and the outbox sender (`mail/sender.rs` sends); `[mail]`.
//! - `metrics`: call counts and latencies, and the levels read at each scrape.
//! - `service`: the RPC methods (the [`latchkey_client::Latchkey`] trait): a dispatch table
//!   in `service/mod.rs`, the flows in `accounts`, `login`, `reset` (where a token is minted,
//!   checked and consumed), `outbox`, `events`, `status`, `backup`; `[reset]`.
//! - `maintenance`: background sweeps (expired tokens, old events, idle limiter keys);
//!   `[events]`.
//! - `server`: the socket, peer credentials and roles, connection limits, graceful shutdown;
//!   the frame decoding that answers a request it cannot run (`server/codec.rs`,
//!   `server/transport.rs`); `[server]` and `[auth]`.
//! - `scrape`: the optional metrics HTTP listener on a loopback port; `[metrics]`.
//! - [`config`]: the whole configuration, loaded from defaults, a TOML file and `LATCHKEY_*`
//!   variables.
//! - [`daemon`]: start-up checks, background tasks, systemd notifications, reload, stop.
//! - `fuzz`: entry points for the fuzz targets in `fuzz/` (frames, tokens, fields, templates,
//!   the request handlers); hidden, called by nothing else.

pub(crate) mod clock;
pub mod config;
pub mod daemon;
pub(crate) mod error;
#[doc(hidden)]
pub mod fuzz;
pub(crate) mod limits;
pub(crate) mod mail;
pub(crate) mod maintenance;
pub(crate) mod metrics;
pub(crate) mod passwords;
pub(crate) mod random;
pub(crate) mod scrape;
pub(crate) mod server;
pub(crate) mod service;
pub(crate) mod setting;
pub(crate) mod store;
pub(crate) mod tokens;
pub(crate) mod validate;

pub use daemon::{run, DaemonError, Options};
/// The backup file format, for `latchkey backup --verify`, and restoring one offline.
pub use store::{dump as backup, load};

#[cfg(test)]
mod layers;
