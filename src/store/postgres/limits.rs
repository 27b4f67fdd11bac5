//! Rate limits shared by every host: GCRA buckets, one row each, keyed by a keyed hash.
//!
//! A bucket stores the theoretical arrival time (TAT) of the next call. A call at `now` is
//! allowed when `max(tat, now) - now <= tau` (the burst's worth of slack) and moves the TAT on
//! by one emission interval; both the test and the move are one statement, so hosts racing on
//! one key each see the other's calls.

use super::super::records::SharedLimit;
use super::{int, lock, uint, PgStore};
use crate::store::StoreError;

impl PgStore {
    /// See [`crate::store::Store::take_shared`].
    pub(in crate::store) async fn take_shared(
        &self,
        limit: SharedLimit,
        key: &str,
        burst: u32,
        per_secs: u64,
        now_ms: u64,
    ) -> Result<Option<u64>, StoreError> {
        let period = per_secs.max(1).saturating_mul(1000);
        let interval = (period / u64::from(burst.max(1))).max(1);
        let tau = period.saturating_sub(interval);
        let bucket = limit.id();
        // The rate is part of the key: a changed setting starts fresh buckets, as the
        // in-process ones do on reload, and hosts on different settings during a rolling
        // change do not read each other's buckets with the wrong interval.
        let key = self
            .inner
            .seal
            .limit_key(bucket, (burst, per_secs), key.as_bytes());
        let (now, interval, tau_ms) = (int(now_ms), int(interval), tau);
        let tau = int(tau_ms);
        let key = key.as_slice();
        let tat = transact!(self, |tx| {
            // A bucket is not a write anyone is told about: losing the last few to a crash
            // only forgets some calls. So it does not wait for a flush, which would double
            // what a reset request or a login costs the server.
            tx.batch_execute("SET LOCAL synchronous_commit = off")
                .await?;
            let statement = tx
                .prepare_cached(
                    "INSERT INTO latchkey_limits AS l (bucket, key, tat_ms)
                         VALUES ($1, $2, $3::bigint + $4::bigint)
                     ON CONFLICT (bucket, key) DO UPDATE
                         SET tat_ms = greatest(l.tat_ms, $3::bigint) + $4::bigint
                         WHERE greatest(l.tat_ms, $3::bigint) - $3::bigint <= $5::bigint
                     RETURNING tat_ms",
                )
                .await?;
            let taken = tx
                .query_opt(&statement, &[&bucket, &key, &now, &interval, &tau])
                .await?;
            if taken.is_some() {
                return Ok(None);
            }
            let statement = tx
                .prepare_cached("SELECT tat_ms FROM latchkey_limits WHERE bucket = $1 AND key = $2")
                .await?;
            let tat = match tx.query_opt(&statement, &[&bucket, &key]).await? {
                Some(row) => uint("latchkey_limits", row.get(0))?,
                None => now_ms,
            };
            Ok(Some(tat))
        })?;
        Ok(tat.map(|tat| {
            let wait_ms = tat.saturating_sub(now_ms).saturating_sub(tau_ms);
            wait_ms.div_ceil(1000).max(1)
        }))
    }

    /// See [`crate::store::Store::sweep_limits`]; one host at a time.
    pub(in crate::store) async fn sweep_limits(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        transact!(self, |tx| {
            if !lock::try_take(&tx, lock::LIMITS).await? {
                return Ok(0);
            }
            let statement = tx
                .prepare_cached(
                    "DELETE FROM latchkey_limits WHERE (bucket, key) IN (
                         SELECT bucket, key FROM latchkey_limits WHERE tat_ms < $1
                         LIMIT $2 FOR UPDATE SKIP LOCKED)",
                )
                .await?;
            let n = tx.execute(&statement, &[&int(now_ms), &limit]).await?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }
}
