//! Schema migrations, embedded in the binary and applied at start under an advisory lock, so
//! that daemons starting at once on several hosts apply each exactly once.

use deadpool_postgres::Pool;

use super::{lock, sql};
use crate::store::StoreError;

/// Every migration, in order; the schema version is the number of those applied.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_shared_limits.sql"),
    include_str!("migrations/0003_login_failures.sql"),
    include_str!("migrations/0004_signups.sql"),
];

/// The schema version this daemon writes.
pub(super) const VERSION: i32 = MIGRATIONS.len() as i32;

/// Brings the schema up to [`VERSION`], or refuses a database that is newer.
pub(super) async fn migrate(pool: &Pool) -> Result<(), StoreError> {
    let mut client = super::client(pool).await?;
    let tx = client.transaction().await.map_err(sql)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock::MIGRATE])
        .await
        .map_err(sql)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS latchkey_schema (
             version integer PRIMARY KEY,
             applied_at bigint NOT NULL,
             by_version text NOT NULL
         )",
    )
    .await
    .map_err(sql)?;
    let row = tx
        .query_one("SELECT coalesce(max(version), 0) FROM latchkey_schema", &[])
        .await
        .map_err(sql)?;
    let current: i32 = row.get(0);
    if current > VERSION {
        return Err(StoreError::Schema(format!(
            "the database has schema version {current}, newer than the {VERSION} this \
             latchkeyd {} knows; upgrade latchkeyd on this host",
            env!("CARGO_PKG_VERSION")
        )));
    }
    let now = i64::try_from(crate::clock::now()).unwrap_or(i64::MAX);
    for (version, migration) in (1..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(current).unwrap_or(0))
    {
        tx.batch_execute(migration)
            .await
            .map_err(|e| StoreError::Schema(format!("migration {version} failed: {e}")))?;
        tx.execute(
            "INSERT INTO latchkey_schema (version, applied_at, by_version) VALUES ($1, $2, $3)",
            &[&version, &now, &env!("CARGO_PKG_VERSION")],
        )
        .await
        .map_err(sql)?;
        tracing::info!(version, "applied schema migration");
    }
    tx.commit().await.map_err(sql)
}
