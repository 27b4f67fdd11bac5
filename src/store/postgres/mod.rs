//! The shared backend: one PostgreSQL (13 or newer) for the daemons of every host.
//!
//! Clients: tokio-postgres with a deadpool pool (statements prepared once per connection and
//! cached; no compile-time checks that would need a live database at build time), TLS by
//! rustls, which the daemon already carries for SMTP.
//!
//! Each method is one transaction at READ COMMITTED, on a pooled connection; the
//! single-statement reads on a call's path run on a few shared connections instead, where
//! tokio-postgres pipelines the calls in flight (`Inner::readers`). A change to a user's tokens first locks
//! the user's row, so every such change (issue, consume, password change, delete) is
//! serialised per user across hosts, in one lock order, and a token is consumed once: the
//! second of two racing completions waits for the first and then sees the token used.
//! Every connection sets `synchronous_commit = on`, so a commit the caller is told about is
//! durable whatever the server's default. Serialisation failures and deadlocks are retried.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Object, Pool, PoolError};
use tokio_postgres::error::SqlState;

use super::seal::Sealer;
use super::{Levels, PostgresConfig, Probe, StoreError};

pub(super) use self::backup::PgBackup;

/// Advisory lock keys, one per job that must run on one host at a time.
mod lock {
    /// Applying migrations.
    pub(super) const MIGRATE: i64 = 0x6c61_7463_686b_0001;
    /// Sweeping tokens past their purge time.
    pub(super) const SWEEP: i64 = 0x6c61_7463_686b_0002;
    /// Trimming the event log.
    pub(super) const TRIM: i64 = 0x6c61_7463_686b_0003;
    /// Sweeping shared rate-limit buckets.
    pub(super) const LIMITS: i64 = 0x6c61_7463_686b_0004;
    /// Writing events (shared, by every transaction that appends one) against numbering them
    /// (exclusive).
    pub(super) const EVENTS: i64 = 0x6c61_7463_686b_0005;
    /// Sweeping forgotten login failures.
    pub(super) const FAILURES: i64 = 0x6c61_7463_686b_0006;

    /// Takes the lock `key` for the rest of the transaction if no other host holds it; the
    /// jobs that run on one host at a time skip their round when it answers `false`.
    pub(super) async fn try_take(
        tx: &deadpool_postgres::Transaction<'_>,
        key: i64,
    ) -> Result<bool, tokio_postgres::Error> {
        let statement = tx
            .prepare_cached("SELECT pg_try_advisory_xact_lock($1)")
            .await?;
        Ok(tx.query_one(&statement, &[&key]).await?.get(0))
    }
}

/// Attempts of a transaction that failed to serialise or deadlocked.
const ATTEMPTS: usize = 4;

/// Runs `$body` in a transaction on a pooled connection, again if it fails to serialise or
/// deadlocks; `$tx` names the open transaction inside it. The body evaluates to
/// `Result<T, TxError>` and must not have effects outside the transaction. A macro rather
/// than a function taking a closure: the body's future borrows the transaction it is given.
macro_rules! transact {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let mut outcome = None;
        for _ in 0..$crate::store::postgres::ATTEMPTS {
            let mut client = $store.client().await?;
            let $tx = client
                .transaction()
                .await
                .map_err($crate::store::postgres::sql)?;
            let result: Result<_, $crate::store::postgres::TxError> = async { $body }.await;
            match result {
                Ok(value) => match $tx.commit().await {
                    Ok(()) => {
                        outcome = Some(Ok(value));
                        break;
                    }
                    Err(e) if $crate::store::postgres::retryable(&e) => {
                        outcome = Some(Err($crate::store::postgres::sql(e)))
                    }
                    Err(e) => {
                        outcome = Some(Err($crate::store::postgres::sql(e)));
                        break;
                    }
                },
                Err($crate::store::postgres::TxError::Sql(e))
                    if $crate::store::postgres::retryable(&e) =>
                {
                    outcome = Some(Err($crate::store::postgres::sql(e)))
                }
                Err($crate::store::postgres::TxError::Sql(e)) => {
                    outcome = Some(Err($crate::store::postgres::sql(e)));
                    break;
                }
                Err($crate::store::postgres::TxError::Store(e)) => {
                    outcome = Some(Err(e));
                    break;
                }
            }
        }
        outcome.unwrap_or(Err($crate::store::StoreError::Stale))
    }};
}

// After the macro: a macro is visible only in what follows it.
mod backup;
mod connect;
mod events;
mod failures;
mod limits;
mod load;
mod outbox;
mod schema;
mod signups;
mod tokens;
mod users;

/// A cheap, cloneable handle to the pool.
#[derive(Clone)]
pub(super) struct PgStore {
    /// The pool and the key; shared by every handle.
    inner: Arc<Inner>,
}

/// What every handle shares.
struct Inner {
    /// Connections to the server.
    pool: Pool,
    /// Seals outbox payloads under the key kept outside the database.
    seal: Sealer,
    /// This daemon's name on the outbox leases it holds: random per start, so a restarted
    /// daemon does not mistake its predecessor's leases for its own.
    owner: String,
    /// Connections shared by the single-statement reads on a call's path (a token check, a
    /// user looked up by id or email): calls in flight on one connection are pipelined, so a
    /// batch of queries costs one write and one read of the socket and one wake-up of its
    /// connection task, where a pooled connection per call costs them per query. Taken out
    /// of the pool (so it can make others), one per core, each replaced when it closes.
    readers: Vec<arc_swap::ArcSwapOption<deadpool_postgres::ClientWrapper>>,
    /// The reader the next read takes, round robin.
    next_reader: std::sync::atomic::AtomicUsize,
}

/// A statement's error as the store reports it: lost connections as `Unreachable`, the
/// server's refusals as `Sql`.
pub(super) fn sql(e: tokio_postgres::Error) -> StoreError {
    let Some(db) = e.as_db_error() else {
        // No reply from the server: the connection broke or could not be made.
        return StoreError::Unreachable(match std::error::Error::source(&e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        });
    };
    let text = format!("{} ({})", db.message(), db.code().code());
    if e.is_closed() {
        return StoreError::Unreachable(text);
    }
    match e.code() {
        Some(code)
            if *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW =>
        {
            StoreError::Unreachable(text)
        }
        _ => StoreError::Sql(text),
    }
}

/// Whether `e` is worth running the transaction again for.
pub(super) fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// Whether `e` is a unique index refusing a duplicate.
fn duplicate(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// A connection from the pool.
async fn client(pool: &Pool) -> Result<Object, StoreError> {
    pool.get().await.map_err(|e| match e {
        PoolError::Backend(e) => sql(e),
        other => StoreError::Unreachable(other.to_string()),
    })
}

/// A `u64` as PostgreSQL's `bigint`. Our numbers (ids, times) stay far below 2^63.
pub(super) fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A `bigint` read back as `u64`; a negative one is a corrupt record.
pub(super) fn uint(table: &'static str, v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt {
        tree: table,
        reason: format!("negative number {v}"),
    })
}

/// Either a statement error (which may be retried) or a store outcome.
pub(super) enum TxError {
    /// The server's error.
    Sql(tokio_postgres::Error),
    /// An outcome that ends the transaction (`NotFound`, `Stale`, ...).
    Store(StoreError),
}

impl From<tokio_postgres::Error> for TxError {
    fn from(e: tokio_postgres::Error) -> TxError {
        TxError::Sql(e)
    }
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> TxError {
        TxError::Store(e)
    }
}

impl PgStore {
    /// Connects, applies migrations, and checks that the server is new enough.
    pub(super) async fn open(config: &PostgresConfig, seal: Sealer) -> Result<PgStore, StoreError> {
        let pool = connect::pool(config)?;
        {
            let c = client(&pool).await?;
            let row = c
                .query_one("SELECT current_setting('server_version_num')::int", &[])
                .await
                .map_err(sql)?;
            let version: i32 = row.get(0);
            if version < 130_000 {
                return Err(StoreError::Schema(format!(
                    "PostgreSQL {}.{} is too old: latchkeyd needs 13 or newer",
                    version / 10_000,
                    version % 10_000 / 100
                )));
            }
        }
        schema::migrate(&pool).await?;
        let owner = crate::random::bytes::<8>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        // One per core: the server runs each connection's queries on one process.
        let readers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, 8);
        Ok(PgStore {
            inner: Arc::new(Inner {
                pool,
                seal,
                owner,
                readers: (0..readers)
                    .map(|_| arc_swap::ArcSwapOption::empty())
                    .collect(),
                next_reader: std::sync::atomic::AtomicUsize::new(0),
            }),
        })
    }

    /// A shared connection for a single-statement read outside any transaction; see
    /// `Inner::readers`. Its first use, or a use after the connection closed (the server
    /// restarted), takes a fresh one from the pool.
    async fn reader(&self) -> Result<Arc<deadpool_postgres::ClientWrapper>, StoreError> {
        let readers = &self.inner.readers;
        let i = self
            .inner
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % readers.len().max(1);
        let Some(slot) = readers.get(i) else {
            return Err(StoreError::Unreachable("no reader connection".into()));
        };
        if let Some(c) = slot.load_full() {
            if !c.is_closed() {
                return Ok(c);
            }
        }
        let fresh = Arc::new(Object::take(self.client().await?));
        slot.store(Some(fresh.clone()));
        Ok(fresh)
    }

    /// A connection from the pool.
    async fn client(&self) -> Result<Object, StoreError> {
        client(&self.inner.pool).await
    }

    /// See [`crate::store::Store::probe`]: a round trip within `within`. A refused or broken
    /// connection is the server's state, not ours; no answer at all is a stall.
    pub(super) async fn probe(&self, within: Duration) -> Probe {
        let ping = async {
            let c = self.client().await?;
            c.simple_query("SELECT 1").await.map_err(sql)?;
            Ok::<(), StoreError>(())
        };
        match tokio::time::timeout(within, ping).await {
            Ok(Ok(())) => Probe::Ok,
            Ok(Err(StoreError::Unreachable(_))) => Probe::Unreachable,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "database probe failed");
                Probe::Unreachable
            }
            Err(_) => Probe::Stalled,
        }
    }

    /// Closes the pool; every commit is durable already.
    pub(super) async fn close(&self) {
        if let Err(e) = self.release_leases().await {
            tracing::warn!(error = %e, "cannot release outbox leases; they end on their own");
        }
        self.inner.pool.close();
    }

    /// The levels a metrics scrape reports.
    pub(super) async fn levels(&self) -> Result<Levels, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "SELECT (SELECT count(*) FROM latchkey_users),
                        (SELECT count(*) FROM latchkey_tokens),
                        (SELECT count(*) FROM latchkey_outbox WHERE state = 'queued'),
                        (SELECT count(*) FROM latchkey_outbox WHERE state = 'dead'),
                        (SELECT min(created_at) FROM latchkey_outbox WHERE state = 'queued'),
                        (SELECT sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c
                          WHERE c.relkind = 'r' AND c.relname LIKE 'latchkey\\_%')",
                &[],
            )
            .await
            .map_err(sql)?;
        let n = |i: usize| -> Result<u64, StoreError> { uint("latchkey_users", row.get(i)) };
        Ok(Levels {
            users: n(0)?,
            tokens: n(1)?,
            queued: n(2)?,
            dead: n(3)?,
            oldest_queued_at: row
                .get::<_, Option<i64>>(4)
                .map(|v| uint("latchkey_outbox", v))
                .transpose()?,
            bytes: row
                .get::<_, Option<i64>>(5)
                .map(|v| uint("pg_class", v))
                .transpose()?
                .unwrap_or(0),
        })
    }

    /// Refuses an outbox key that does not open the queued mail. Two hosts starting at once
    /// with different keys: the first check value written wins and the other is refused.
    pub(super) async fn check_key(&self) -> Result<(), StoreError> {
        let c = self.client().await?;
        let (remembered, queued) = read_key_check(&c).await?;
        let Some(value) = self.inner.seal.judge_check(remembered.as_deref(), queued)? else {
            return Ok(());
        };
        let statement = if remembered.is_some() {
            "UPDATE latchkey_meta SET value = $1 WHERE name = 'outbox_key_check'"
        } else {
            "INSERT INTO latchkey_meta (name, value) VALUES ('outbox_key_check', $1)
             ON CONFLICT (name) DO NOTHING"
        };
        c.execute(statement, &[&value]).await.map_err(sql)?;
        // Another host may have written its own value first: the one there now must open.
        let (remembered, _) = read_key_check(&c).await?;
        match remembered {
            Some(v) if self.inner.seal.opens_check(&v) => Ok(()),
            _ => Err(StoreError::Key(
                "another host started at the same time with a different outbox key; every host \
                 must use the same store.outbox_key_file or store.outbox_key_credential"
                    .into(),
            )),
        }
    }
}

/// The outbox key check value the database remembers, and how many messages it holds.
async fn read_key_check(c: &Object) -> Result<(Option<Vec<u8>>, u64), StoreError> {
    let row = c
        .query_opt(
            "SELECT value FROM latchkey_meta WHERE name = 'outbox_key_check'",
            &[],
        )
        .await
        .map_err(sql)?;
    let queued = c
        .query_one("SELECT count(*) FROM latchkey_outbox", &[])
        .await
        .map_err(sql)?;
    Ok((
        row.map(|r| r.get::<_, Vec<u8>>(0)),
        uint("latchkey_outbox", queued.get(0))?,
    ))
}
