//! The event log on PostgreSQL, with one order across hosts.
//!
//! A plain `bigserial` is not enough: host A takes number 11, host B takes 12 and commits
//! first, a reader sees 12 and moves its cursor past 11, and when A commits, 11 is never read.
//! So rows are written unnumbered, and numbered by the first reader that finds some, under an
//! advisory lock: every transaction that appends an event holds it shared from its insert to
//! its end, and numbering takes it exclusive. Numbering therefore starts only when no
//! transaction that could still add an event is running, and every row it finds has
//! committed; rows that commit later get later numbers. The numbers readers see never gain a
//! gap behind them, and a reader sees its own committed writes at once. Writers never wait
//! for each other, only (for the length of one UPDATE) for a numbering in progress; a
//! numbering waits at most for the event-writing transactions running when it began.

use latchkey_client::{Event, EventKind};

use super::super::records::{EventRecord, NewEvent};
use super::{int, lock, sql, uint, PgStore, TxError};
use crate::store::StoreError;

/// The columns of an event, in the order [`event_from`] reads them.
pub(super) const EVENT_COLUMNS: &str = "seq, at, kind, user_id, client_ip";

/// An event from a row of [`EVENT_COLUMNS`] (its `seq` set).
pub(super) fn event_from(row: &tokio_postgres::Row) -> Result<EventRecord, StoreError> {
    let kind: &str = row.get(2);
    Ok(Event {
        seq: uint("latchkey_events", row.get(0))?,
        at: uint("latchkey_events", row.get(1))?,
        kind: serde_json::from_value(serde_json::Value::String(kind.to_owned())).map_err(|_| {
            StoreError::Corrupt {
                tree: "latchkey_events",
                reason: format!("unknown event kind {kind:?}"),
            }
        })?,
        user_id: row
            .get::<_, Option<i64>>(3)
            .map(|v| uint("latchkey_events", v))
            .transpose()?,
        client_ip: row.get(4),
    })
}

/// The name an event kind is stored under (its name in the API).
pub(super) fn kind_name(kind: EventKind) -> Result<String, StoreError> {
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::String(name)) => Ok(name),
        _ => Err(StoreError::Corrupt {
            tree: "latchkey_events",
            reason: format!("event kind {kind:?} has no name"),
        }),
    }
}

/// Appends an unnumbered event, inside a transaction or on its own, taking the events lock
/// shared (in the same statement) until the transaction ends.
pub(super) async fn append(
    tx: &impl deadpool_postgres::GenericClient,
    event: &NewEvent,
) -> Result<(), TxError> {
    let statement = tx
        .prepare_cached(
            "INSERT INTO latchkey_events (at, kind, user_id, client_ip)
             SELECT $1, $2, $3, $4 FROM (SELECT pg_advisory_xact_lock_shared($5)) AS writing",
        )
        .await?;
    tx.execute(
        &statement,
        &[
            &int(crate::clock::now()),
            &kind_name(event.kind)?,
            &event.user_id.map(int),
            &event.client_ip,
            &lock::EVENTS,
        ],
    )
    .await?;
    Ok(())
}

impl PgStore {
    /// See [`crate::store::Store::record_event`].
    pub(in crate::store) async fn record_event(&self, event: NewEvent) -> Result<(), StoreError> {
        transact!(self, |tx| {
            // Committed without waiting for the WAL flush, which the WAL writer does within a
            // fraction of a second (wal_writer_delay): durable soon, and the caller's reply
            // is not held up by it, as on sled.
            tx.batch_execute("SET LOCAL synchronous_commit = off")
                .await?;
            append(&tx, &event).await
        })
    }

    /// Numbers the events whose transactions have all ended; see the module's comment.
    async fn number_events(&self) -> Result<(), StoreError> {
        {
            let c = self.client().await?;
            let statement = c
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM latchkey_events WHERE seq IS NULL)")
                .await
                .map_err(sql)?;
            let waiting: bool = c.query_one(&statement, &[]).await.map_err(sql)?.get(0);
            if !waiting {
                return Ok(());
            }
        }
        transact!(self, |tx| {
            let statement = tx
                .prepare_cached("SELECT pg_advisory_xact_lock($1)")
                .await?;
            tx.execute(&statement, &[&lock::EVENTS]).await?;
            let statement = tx
                .prepare_cached("SELECT last FROM latchkey_event_seq FOR UPDATE")
                .await?;
            let last: i64 = tx.query_one(&statement, &[]).await?.get(0);
            let statement = tx
                .prepare_cached(
                    "WITH ready AS (
                         SELECT id, row_number() OVER (ORDER BY id) AS rn
                         FROM latchkey_events WHERE seq IS NULL)
                     UPDATE latchkey_events e SET seq = $1 + ready.rn
                     FROM ready WHERE e.id = ready.id",
                )
                .await?;
            let numbered = tx.execute(&statement, &[&last]).await?;
            if numbered > 0 {
                let statement = tx
                    .prepare_cached("UPDATE latchkey_event_seq SET last = $1")
                    .await?;
                let numbered = i64::try_from(numbered).unwrap_or(i64::MAX);
                tx.execute(&statement, &[&last.saturating_add(numbered)])
                    .await?;
            }
            Ok(())
        })
    }

    /// See [`crate::store::Store::events_after`].
    pub(in crate::store) async fn events_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.number_events().await?;
        let c = self.client().await?;
        let statement = c
            .prepare_cached(
                "SELECT seq, at, kind, user_id, client_ip FROM latchkey_events
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .await
            .map_err(sql)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = c
            .query(&statement, &[&int(after), &limit])
            .await
            .map_err(sql)?;
        rows.iter().map(event_from).collect()
    }

    /// See [`crate::store::Store::trim_events`]: walks the oldest numbered events in order and
    /// stops at the first one that stays, so it reads only what it removes (plus one batch).
    pub(in crate::store) async fn trim_events(
        &self,
        max_count: usize,
        min_at: u64,
    ) -> Result<usize, StoreError> {
        const BATCH: i64 = 10_000;
        let mut removed = 0usize;
        loop {
            let went = transact!(self, |tx| {
                if !lock::try_take(&tx, lock::TRIM).await? {
                    return Ok(0usize);
                }
                let last: i64 = tx
                    .query_one("SELECT last FROM latchkey_event_seq", &[])
                    .await?
                    .get(0);
                let keep_from = last.saturating_sub(i64::try_from(max_count).unwrap_or(i64::MAX));
                let statement = tx
                    .prepare_cached(
                        "SELECT seq, at FROM latchkey_events WHERE seq IS NOT NULL
                         ORDER BY seq LIMIT $1",
                    )
                    .await?;
                let mut doomed: Vec<i64> = Vec::new();
                for row in tx.query(&statement, &[&BATCH]).await? {
                    let (seq, at): (i64, i64) = (row.get(0), row.get(1));
                    if seq > keep_from && at >= int(min_at) {
                        break;
                    }
                    doomed.push(seq);
                }
                let statement = tx
                    .prepare_cached("DELETE FROM latchkey_events WHERE seq = ANY($1)")
                    .await?;
                let n = tx.execute(&statement, &[&doomed]).await?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            })?;
            removed += went;
            if i64::try_from(went).unwrap_or(i64::MAX) < BATCH {
                return Ok(removed);
            }
        }
    }
}
