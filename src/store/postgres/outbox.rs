//! The outbox on PostgreSQL: claimed by leases, so that of the senders on every host exactly
//! one delivers a message at a time, and a host that dies mid-delivery leaves its messages to
//! the others once their leases end.

use std::time::Duration;

use tokio_postgres::Row;

use super::super::records::{Claimed, OutboxMessage, OutboxRecord, OutboxState};
use super::{int, sql, uint, PgStore, TxError};
use crate::store::StoreError;

/// The columns of a message, in the order [`record_from`] reads them.
pub(super) const COLUMNS: &str =
    "id, created_at, attempts, next_attempt_ms, state, last_error, payload";

/// How far past the first due messages a claim looks for the next wake-up time, past messages
/// leased by other hosts.
const LOOKAHEAD: i64 = 1000;

/// A message record from a row of [`COLUMNS`].
pub(super) fn record_from(row: &Row) -> Result<OutboxRecord, StoreError> {
    let n = |i: usize| uint("latchkey_outbox", row.get(i));
    let state: &str = row.get(4);
    Ok(OutboxRecord {
        id: n(0)?,
        created_at: n(1)?,
        attempts: u32::try_from(row.get::<_, i32>(2)).unwrap_or(0),
        next_attempt_ms: n(3)?,
        state: OutboxState::from_name(state).ok_or_else(|| StoreError::Corrupt {
            tree: "latchkey_outbox",
            reason: format!("unknown state {state:?}"),
        })?,
        last_error: row.get(5),
        payload: row.get(6),
    })
}

impl PgStore {
    /// Numbers, seals and queues a payload inside a transaction.
    pub(super) async fn enqueue(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        payload: &[u8],
        now: u64,
    ) -> Result<(), TxError> {
        let statement = tx.prepare_cached("SELECT nextval('latchkey_ids')").await?;
        let id = uint("latchkey_ids", tx.query_one(&statement, &[]).await?.get(0))?;
        let sealed = self.inner.seal.seal(id, payload)?;
        let statement = tx
            .prepare_cached(&format!(
                "INSERT INTO latchkey_outbox ({COLUMNS}) VALUES ($1, $2, 0, $3, 'queued', NULL, $4)"
            ))
            .await?;
        tx.execute(
            &statement,
            &[&int(id), &int(now), &int(now.saturating_mul(1000)), &sealed],
        )
        .await?;
        Ok(())
    }

    /// See [`crate::store::Store::claim_mail`].
    pub(in crate::store) async fn claim_mail(
        &self,
        now_ms: u64,
        limit: usize,
        lease: Duration,
    ) -> Result<Claimed, StoreError> {
        let until = now_ms.saturating_add(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX));
        let c = self.client().await?;
        let statement = c
            .prepare_cached(&format!(
                "UPDATE latchkey_outbox SET lease_until_ms = $2, lease_owner = $3
                 WHERE id IN (
                     SELECT id FROM latchkey_outbox
                     WHERE state = 'queued' AND next_attempt_ms <= $1 AND lease_until_ms <= $1
                     ORDER BY next_attempt_ms, id LIMIT $4 FOR UPDATE SKIP LOCKED)
                 RETURNING {COLUMNS}"
            ))
            .await
            .map_err(sql)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = c
            .query(
                &statement,
                &[&int(now_ms), &int(until), &self.inner.owner, &limit],
            )
            .await
            .map_err(sql)?;
        let mut claimed = Claimed::default();
        for row in rows {
            let record = record_from(&row)?;
            match self.inner.seal.open(record.id, &record.payload) {
                Ok(payload) => claimed.due.push(OutboxMessage { record, payload }),
                // One message that cannot be read (a damaged payload, another key) must not
                // hold back the others: it can never be sent, so it is set aside as dead,
                // where an operator sees it.
                Err(e) => {
                    tracing::error!(id = record.id, error = %e, "outbox message cannot be read; marked dead");
                    self.mail_failed(record.id, &format!("cannot be read: {e}"), None)
                        .await?;
                }
            }
        }
        claimed
            .due
            .sort_by_key(|m| (m.record.next_attempt_ms, m.record.id));
        // The next wake-up: the earliest queued message this daemon does not hold, due when
        // both its attempt time and any other host's lease have passed.
        let statement = c
            .prepare_cached(
                "SELECT greatest(next_attempt_ms, lease_until_ms) AS at FROM (
                     SELECT next_attempt_ms, lease_until_ms, lease_owner FROM latchkey_outbox
                     WHERE state = 'queued' ORDER BY next_attempt_ms, id LIMIT $3) t
                 WHERE lease_until_ms <= $1 OR lease_owner IS DISTINCT FROM $2
                 ORDER BY at LIMIT 1",
            )
            .await
            .map_err(sql)?;
        if let Some(row) = c
            .query_opt(&statement, &[&int(now_ms), &self.inner.owner, &LOOKAHEAD])
            .await
            .map_err(sql)?
        {
            claimed.next_due_ms = Some(uint("latchkey_outbox", row.get(0))?);
        }
        Ok(claimed)
    }

    /// Ends this daemon's leases at shutdown, so its unfinished messages go to another host
    /// (or to its own next start) at once.
    pub(super) async fn release_leases(&self) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "UPDATE latchkey_outbox SET lease_until_ms = 0, lease_owner = NULL
             WHERE lease_owner = $1",
            &[&self.inner.owner],
        )
        .await
        .map_err(sql)?;
        Ok(())
    }

    /// See [`crate::store::Store::mail_after`].
    pub(in crate::store) async fn mail_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        let c = self.client().await?;
        let statement = c
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM latchkey_outbox WHERE id > $1 ORDER BY id LIMIT $2"
            ))
            .await
            .map_err(sql)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut out = Vec::new();
        for row in c
            .query(&statement, &[&int(after), &limit])
            .await
            .map_err(sql)?
        {
            let record = record_from(&row)?;
            // A payload that does not open is listed empty: admins still see the message
            // (dead, with its error) and can drop it.
            let payload = self
                .inner
                .seal
                .open(record.id, &record.payload)
                .unwrap_or_default();
            out.push(OutboxMessage { record, payload });
        }
        Ok(out)
    }

    /// Runs one statement about message `id`; `NotFound` when it touches nothing and
    /// `missing_is_error`.
    async fn about_message(
        &self,
        statement: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        missing_is_error: bool,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        let statement = c.prepare_cached(statement).await.map_err(sql)?;
        let n = c.execute(&statement, params).await.map_err(sql)?;
        if n == 0 && missing_is_error {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// See [`crate::store::Store::mail_sent`].
    pub(in crate::store) async fn mail_sent(&self, id: u64) -> Result<(), StoreError> {
        self.about_message(
            "DELETE FROM latchkey_outbox WHERE id = $1",
            &[&int(id)],
            false,
        )
        .await
    }

    /// See [`crate::store::Store::mail_failed`].
    pub(in crate::store) async fn mail_failed(
        &self,
        id: u64,
        error: &str,
        retry_at_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        self.about_message(
            "UPDATE latchkey_outbox SET attempts = attempts + 1, last_error = $2,
                 state = CASE WHEN $3::bigint IS NULL THEN 'dead' ELSE 'queued' END,
                 next_attempt_ms = coalesce($3, next_attempt_ms),
                 lease_until_ms = 0, lease_owner = NULL
             WHERE id = $1",
            &[&int(id), &error, &retry_at_ms.map(int)],
            true,
        )
        .await
    }

    /// See [`crate::store::Store::mail_retry`].
    pub(in crate::store) async fn mail_retry(
        &self,
        id: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.about_message(
            "UPDATE latchkey_outbox SET attempts = 0, state = 'queued', next_attempt_ms = $2,
                 lease_until_ms = 0, lease_owner = NULL
             WHERE id = $1",
            &[&int(id), &int(now_ms)],
            true,
        )
        .await
    }

    /// See [`crate::store::Store::mail_drop`].
    pub(in crate::store) async fn mail_drop(&self, id: u64) -> Result<(), StoreError> {
        self.about_message(
            "DELETE FROM latchkey_outbox WHERE id = $1",
            &[&int(id)],
            true,
        )
        .await
    }
}
