//! Loading backup records into PostgreSQL (`latchkeyd copy-store`), with every daemon stopped.
//! Each record is written under its own key (id, selector, sequence number) and replaces a
//! row with that key, so a copy run again gives the same database.

use super::super::dump::{self, Counts, Item};
use super::super::records::OutboxState;
use super::users::{status_name, USER_COLUMNS};
use super::{int, sql, PgStore, TxError};
use crate::store::StoreError;

impl PgStore {
    /// Writes a batch of records (not tokens: see [`PgStore::load_tokens`]) in one
    /// transaction.
    pub(in crate::store) async fn load(&self, items: &[Item]) -> Result<(), StoreError> {
        transact!(self, |tx| {
            for item in items {
                match item {
                    Item::User(u) => {
                        let statement = tx
                            .prepare_cached(&format!(
                                "INSERT INTO latchkey_users ({USER_COLUMNS})
                                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                                 ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email,
                                   name = EXCLUDED.name, role = EXCLUDED.role,
                                   status = EXCLUDED.status,
                                   password_hash = EXCLUDED.password_hash,
                                   locale = EXCLUDED.locale, created_at = EXCLUDED.created_at,
                                   updated_at = EXCLUDED.updated_at,
                                   password_changed_at = EXCLUDED.password_changed_at,
                                   credential_epoch = EXCLUDED.credential_epoch"
                            ))
                            .await?;
                        tx.execute(
                            &statement,
                            &[
                                &int(u.id),
                                &u.email,
                                &u.name,
                                &u.role,
                                &status_name(u.status),
                                &u.password_hash,
                                &u.locale,
                                &int(u.created_at),
                                &int(u.updated_at),
                                &int(u.password_changed_at),
                                &int(u.credential_epoch),
                            ],
                        )
                        .await?;
                    }
                    Item::Mail(m) => {
                        let record = m.to_record().ok_or_else(|| {
                            StoreError::Backup(format!("message {} is not base64", m.id))
                        })?;
                        let state = match record.state {
                            OutboxState::Queued => "queued",
                            OutboxState::Dead => "dead",
                        };
                        let statement = tx
                            .prepare_cached(
                                "INSERT INTO latchkey_outbox (id, created_at, attempts,
                                   next_attempt_ms, state, last_error, payload)
                                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                                 ON CONFLICT (id) DO UPDATE SET created_at = EXCLUDED.created_at,
                                   attempts = EXCLUDED.attempts,
                                   next_attempt_ms = EXCLUDED.next_attempt_ms,
                                   state = EXCLUDED.state, last_error = EXCLUDED.last_error,
                                   payload = EXCLUDED.payload, lease_until_ms = 0,
                                   lease_owner = NULL",
                            )
                            .await?;
                        tx.execute(
                            &statement,
                            &[
                                &int(record.id),
                                &int(record.created_at),
                                &i32::try_from(record.attempts).unwrap_or(i32::MAX),
                                &int(record.next_attempt_ms),
                                &state,
                                &record.last_error,
                                &record.payload,
                            ],
                        )
                        .await?;
                    }
                    Item::Event(e) => {
                        let kind = super::events::kind_name(e.kind)?;
                        let statement = tx
                            .prepare_cached(
                                "INSERT INTO latchkey_events (seq, at, kind, user_id, client_ip)
                                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (seq) DO NOTHING",
                            )
                            .await?;
                        tx.execute(
                            &statement,
                            &[
                                &int(e.seq),
                                &int(e.at),
                                &kind,
                                &e.user_id.map(int),
                                &e.client_ip,
                            ],
                        )
                        .await?;
                    }
                    Item::Token(_) | Item::End(_) => {}
                }
            }
            Ok::<_, TxError>(())
        })
    }

    /// Writes the tokens, oldest first (their issue order decides which a user's cap revokes),
    /// in one transaction.
    pub(in crate::store) async fn load_tokens(
        &self,
        tokens: &[dump::DumpToken],
    ) -> Result<(), StoreError> {
        let mut ordered: Vec<&dump::DumpToken> = tokens.iter().collect();
        ordered.sort_by_key(|t| (t.record.issued_at, t.selector.clone()));
        transact!(self, |tx| {
            let statement = tx
                .prepare_cached(
                    "INSERT INTO latchkey_tokens (selector, user_id, verifier_hash,
                       credential_epoch, issued_at, expires_at, used_at, purge_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (selector) DO UPDATE SET user_id = EXCLUDED.user_id,
                       verifier_hash = EXCLUDED.verifier_hash,
                       credential_epoch = EXCLUDED.credential_epoch,
                       issued_at = EXCLUDED.issued_at, expires_at = EXCLUDED.expires_at,
                       used_at = EXCLUDED.used_at, purge_at = EXCLUDED.purge_at",
                )
                .await?;
            for token in &ordered {
                let selector = dump::selector(&token.selector)
                    .ok_or_else(|| StoreError::Backup("a token selector is not hex".into()))?;
                let r = &token.record;
                tx.execute(
                    &statement,
                    &[
                        &selector.as_slice(),
                        &int(r.user_id),
                        &r.verifier_hash.as_slice(),
                        &int(r.credential_epoch),
                        &int(r.issued_at),
                        &int(r.expires_at),
                        &r.used_at.map(int),
                        &int(r.purge_at),
                    ],
                )
                .await?;
            }
            Ok::<_, TxError>(())
        })
    }

    /// Moves the id counter and the event numbering past the copied records, and records
    /// the outbox key check of the copied mail.
    pub(in crate::store) async fn finish_load(
        &self,
        next_id: u64,
        key_check: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        transact!(self, |tx| {
            tx.execute(
                "SELECT setval('latchkey_ids', GREATEST($1, (SELECT last_value FROM latchkey_ids)))",
                &[&int(next_id.saturating_sub(1).max(1))],
            )
            .await?;
            tx.execute(
                "UPDATE latchkey_event_seq
                 SET last = GREATEST(last, (SELECT coalesce(max(seq), 0) FROM latchkey_events))",
                &[],
            )
            .await?;
            if let Some(check) = key_check {
                tx.execute(
                    "INSERT INTO latchkey_meta (name, value) VALUES ('outbox_key_check', $1)
                     ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                    &[&check],
                )
                .await?;
            }
            Ok::<_, TxError>(())
        })
    }

    /// How many records of each kind the database holds.
    pub(in crate::store) async fn load_counts(&self) -> Result<Counts, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "SELECT (SELECT count(*) FROM latchkey_users), (SELECT count(*) FROM latchkey_tokens),
                        (SELECT count(*) FROM latchkey_outbox), (SELECT count(*) FROM latchkey_events)",
                &[],
            )
            .await
            .map_err(sql)?;
        let n = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
        Ok(Counts {
            users: n(0),
            tokens: n(1),
            mail: n(2),
            events: n(3),
        })
    }
}
