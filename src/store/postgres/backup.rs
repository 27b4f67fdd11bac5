//! Online backup of the shared store: one REPEATABLE READ, READ ONLY transaction on a
//! connection of its own, so every page is read from one snapshot while every host goes on
//! writing (PostgreSQL's MVCC: nothing waits for the backup, and it waits for nothing). The
//! connection is closed at the end, never returned to the pool mid-transaction.

use deadpool_postgres::Object;

use super::super::dump::{self, DumpMail, DumpToken, Item};
use super::events::{event_from, EVENT_COLUMNS};
use super::outbox::{record_from, COLUMNS as OUTBOX_COLUMNS};
use super::tokens::{token_from, TOKEN_COLUMNS};
use super::users::{user_from, USER_COLUMNS};
use super::{int, sql, uint, PgStore};
use crate::store::StoreError;

/// Rows read per query.
const PAGE_ROWS: i64 = 500;

/// What the reader walks, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Users,
    Tokens,
    Outbox,
    /// Numbered events, by number.
    Events,
    /// Events committed but not yet numbered when the snapshot was taken, by row id: they get
    /// the numbers after the last one, in the order the numbering would give them.
    Unnumbered,
    Done,
}

/// A backup being read from one snapshot. Dropping it closes its connection.
pub(in crate::store) struct PgBackup {
    /// The connection holding the snapshot; taken out of the pool for good.
    conn: Option<Object>,
    stage: Stage,
    /// The last key read in this stage (an id, a sequence number, or a selector).
    after: i64,
    after_selector: Vec<u8>,
    /// The number the next unnumbered event gets.
    next_seq: u64,
    /// Every id in the snapshot is below this.
    pub(in crate::store) next_id: u64,
    /// The outbox key check value in the snapshot.
    pub(in crate::store) key_check: Option<Vec<u8>>,
}

impl Drop for PgBackup {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Detached from the pool: dropping the client closes the connection, which ends
            // the transaction on the server.
            drop(Object::take(conn));
        }
    }
}

impl PgStore {
    /// Opens the snapshot a backup reads.
    pub(in crate::store) async fn begin_backup(&self) -> Result<PgBackup, StoreError> {
        let conn = self.client().await?;
        // The service abandons a backup idle for 60 s; the server must not end the
        // transaction before that (the pool's connections allow twice a statement's time).
        conn.batch_execute(
            "SET idle_in_transaction_session_timeout = '90s';
             BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        )
        .await
        .map_err(sql)?;
        let mut backup = PgBackup {
            conn: Some(conn),
            stage: Stage::Users,
            after: 0,
            after_selector: Vec::new(),
            next_seq: 0,
            next_id: 0,
            key_check: None,
        };
        // The first statement takes the snapshot.
        let row = backup
            .conn()?
            .query_one(
                "SELECT (SELECT last_value FROM latchkey_ids),
                        (SELECT last FROM latchkey_event_seq),
                        (SELECT count(*) FROM latchkey_events WHERE seq IS NULL),
                        (SELECT value FROM latchkey_meta WHERE name = 'outbox_key_check')",
                &[],
            )
            .await
            .map_err(sql)?;
        let ids = uint("latchkey_ids", row.get(0))?;
        let last_seq = uint("latchkey_event_seq", row.get(1))?;
        let unnumbered = uint("latchkey_events", row.get(2))?;
        backup.next_seq = last_seq + 1;
        backup.next_id = ids.max(last_seq + unnumbered) + 1;
        backup.key_check = row.get(3);
        Ok(backup)
    }
}

impl PgBackup {
    fn conn(&self) -> Result<&Object, StoreError> {
        self.conn
            .as_ref()
            .ok_or_else(|| StoreError::Backup("the backup's connection is closed".into()))
    }

    /// The next records, in order; empty when the backup is complete.
    pub(in crate::store) async fn next_page(&mut self) -> Result<Vec<Item>, StoreError> {
        loop {
            let items = match self.stage {
                Stage::Done => return Ok(Vec::new()),
                Stage::Users => self.users().await?,
                Stage::Tokens => self.tokens().await?,
                Stage::Outbox => self.outbox().await?,
                Stage::Events => self.events().await?,
                Stage::Unnumbered => self.unnumbered().await?,
            };
            if !items.is_empty() {
                return Ok(items);
            }
            self.stage = match self.stage {
                Stage::Users => Stage::Tokens,
                Stage::Tokens => Stage::Outbox,
                Stage::Outbox => Stage::Events,
                Stage::Events => Stage::Unnumbered,
                Stage::Unnumbered | Stage::Done => Stage::Done,
            };
            self.after = 0;
        }
    }

    async fn rows(&self, query: &str, after: i64) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let conn = self.conn()?;
        let statement = conn.prepare_cached(query).await.map_err(sql)?;
        conn.query(&statement, &[&after, &PAGE_ROWS])
            .await
            .map_err(sql)
    }

    async fn users(&mut self) -> Result<Vec<Item>, StoreError> {
        let rows = self
            .rows(
                &format!(
                    "SELECT {USER_COLUMNS} FROM latchkey_users WHERE id > $1 ORDER BY id LIMIT $2"
                ),
                self.after,
            )
            .await?;
        let users = rows.iter().map(user_from).collect::<Result<Vec<_>, _>>()?;
        if let Some(last) = users.last() {
            self.after = int(last.id);
        }
        Ok(users.into_iter().map(Item::User).collect())
    }

    async fn tokens(&mut self) -> Result<Vec<Item>, StoreError> {
        let conn = self.conn()?;
        let statement = conn
            .prepare_cached(&format!(
                "SELECT selector, {TOKEN_COLUMNS} FROM latchkey_tokens
                 WHERE selector > $1 ORDER BY selector LIMIT $2"
            ))
            .await
            .map_err(sql)?;
        let rows = conn
            .query(&statement, &[&self.after_selector, &PAGE_ROWS])
            .await
            .map_err(sql)?;
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            let selector: Vec<u8> = row.get(0);
            items.push(Item::Token(DumpToken {
                selector: dump::hex(&selector),
                record: token_from(row, 1)?,
            }));
            self.after_selector = selector;
        }
        Ok(items)
    }

    async fn outbox(&mut self) -> Result<Vec<Item>, StoreError> {
        let rows = self
            .rows(
                &format!(
                    "SELECT {OUTBOX_COLUMNS} FROM latchkey_outbox WHERE id > $1 ORDER BY id LIMIT $2"
                ),
                self.after,
            )
            .await?;
        let mail = rows
            .iter()
            .map(record_from)
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(last) = mail.last() {
            self.after = int(last.id);
        }
        Ok(mail
            .iter()
            .map(|m| Item::Mail(DumpMail::from_record(m)))
            .collect())
    }

    async fn events(&mut self) -> Result<Vec<Item>, StoreError> {
        let rows = self
            .rows(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM latchkey_events
                     WHERE seq > $1 ORDER BY seq LIMIT $2"
                ),
                self.after,
            )
            .await?;
        let events = rows.iter().map(event_from).collect::<Result<Vec<_>, _>>()?;
        if let Some(last) = events.last() {
            self.after = int(last.seq);
        }
        Ok(events.into_iter().map(Item::Event).collect())
    }

    async fn unnumbered(&mut self) -> Result<Vec<Item>, StoreError> {
        let rows = self
            .rows(
                "SELECT coalesce(seq, 0), at, kind, user_id, client_ip, id FROM latchkey_events
                 WHERE seq IS NULL AND id > $1 ORDER BY id LIMIT $2",
                self.after,
            )
            .await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut event = event_from(row)?;
            event.seq = self.next_seq;
            self.next_seq += 1;
            self.after = row.get(5);
            items.push(Item::Event(event));
        }
        Ok(items)
    }
}
