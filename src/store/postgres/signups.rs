//! Pending sign-ups of the concealing sign-up mode: one row per selector holding only the
//! SHA-256 of the verifier; due ones found through `purge_at`.

use latchkey_client::EventKind;
use tokio_postgres::Row;

use super::super::records::{IssuedSignUp, NewEvent, PendingSignUp, SignUpState, UserRecord};
use super::{int, uint, PgStore, TxError};
use crate::store::StoreError;

/// The columns of a pending sign-up, in the order [`sign_up_from`] reads them.
const COLUMNS: &str = "verifier_hash, email, name, locale, password_hash, issued_at, \
     expires_at, used_at, purge_at, failures";

/// A pending sign-up from a row of [`COLUMNS`].
fn sign_up_from(row: &Row) -> Result<PendingSignUp, StoreError> {
    let n = |i: usize| uint("latchkey_signups", row.get(i));
    let hash: &[u8] = row.get(0);
    let verifier_hash = <[u8; 32]>::try_from(hash).map_err(|_| StoreError::Corrupt {
        tree: "latchkey_signups",
        reason: "the verifier hash is not 32 bytes".into(),
    })?;
    let failures: i32 = row.get(9);
    Ok(PendingSignUp {
        verifier_hash,
        email: row.get(1),
        name: row.get(2),
        locale: row.get(3),
        password_hash: row.get(4),
        issued_at: n(5)?,
        expires_at: n(6)?,
        used_at: row
            .get::<_, Option<i64>>(7)
            .map(|v| uint("latchkey_signups", v))
            .transpose()?,
        purge_at: n(8)?,
        failures: u32::try_from(failures).unwrap_or(0),
    })
}

impl PgStore {
    /// See [`crate::store::Store::begin_sign_up`]. Nothing is locked for the address: a
    /// pending sign-up reserves nothing, and confirming checks the address again.
    pub(in crate::store) async fn begin_sign_up(
        &self,
        pending: &IssuedSignUp,
        confirm_mail: &[u8],
        existing_mail: &[u8],
    ) -> Result<bool, StoreError> {
        let r = &pending.record;
        transact!(self, |tx| {
            let statement = tx
                .prepare_cached("SELECT id FROM latchkey_users WHERE email = $1")
                .await?;
            let taken = tx.query_opt(&statement, &[&r.email]).await?.is_some();
            if taken {
                self.enqueue(&tx, existing_mail, r.issued_at).await?;
            } else {
                let statement = tx
                    .prepare_cached(&format!(
                        "INSERT INTO latchkey_signups (selector, {COLUMNS})
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                    ))
                    .await?;
                tx.execute(
                    &statement,
                    &[
                        &pending.selector.as_slice(),
                        &r.verifier_hash.as_slice(),
                        &r.email,
                        &r.name,
                        &r.locale,
                        &r.password_hash,
                        &int(r.issued_at),
                        &int(r.expires_at),
                        &r.used_at.map(int),
                        &int(r.purge_at),
                        &i32::try_from(r.failures).unwrap_or(i32::MAX),
                    ],
                )
                .await?;
                self.enqueue(&tx, confirm_mail, r.issued_at).await?;
            }
            Ok::<_, TxError>(taken)
        })
    }

    /// See [`crate::store::Store::pending_sign_up`].
    pub(in crate::store) async fn pending_sign_up(
        &self,
        selector: &[u8; 16],
    ) -> Result<Option<PendingSignUp>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM latchkey_signups WHERE selector = $1"
            ))
            .await
            .map_err(super::sql)?;
        let row = client
            .query_opt(&statement, &[&selector.as_slice()])
            .await
            .map_err(super::sql)?;
        row.as_ref().map(sign_up_from).transpose()
    }

    /// See [`crate::store::Store::sign_up_failed`].
    pub(in crate::store) async fn sign_up_failed(
        &self,
        selector: &[u8; 16],
        max_failures: u32,
    ) -> Result<(), StoreError> {
        let max = i32::try_from(max_failures).unwrap_or(i32::MAX);
        transact!(self, |tx| {
            let statement = tx
                .prepare_cached(
                    "UPDATE latchkey_signups SET failures = failures + 1
                     WHERE selector = $1 RETURNING failures",
                )
                .await?;
            let Some(row) = tx.query_opt(&statement, &[&selector.as_slice()]).await? else {
                return Ok(());
            };
            let failures: i32 = row.get(0);
            if failures >= max {
                let statement = tx
                    .prepare_cached("DELETE FROM latchkey_signups WHERE selector = $1")
                    .await?;
                tx.execute(&statement, &[&selector.as_slice()]).await?;
            }
            Ok::<_, TxError>(())
        })
    }

    /// See [`crate::store::Store::complete_sign_up`]. The row lock makes a second racing
    /// call, on any host, wait and then find the sign-up used; the unique email index makes
    /// an account made meanwhile by other means win.
    pub(in crate::store) async fn complete_sign_up(
        &self,
        selector: &[u8; 16],
        verifier_hash: &[u8; 32],
        now: u64,
    ) -> Result<UserRecord, StoreError> {
        let outcome = transact!(self, |tx| {
            let statement = tx
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM latchkey_signups WHERE selector = $1 FOR UPDATE"
                ))
                .await?;
            let Some(row) = tx.query_opt(&statement, &[&selector.as_slice()]).await? else {
                return Err(StoreError::TokenRejected.into());
            };
            let pending = sign_up_from(&row)?;
            if pending.state(verifier_hash, now) != SignUpState::Valid {
                return Err(StoreError::TokenRejected.into());
            }
            let statement = tx
                .prepare_cached("UPDATE latchkey_signups SET used_at = $2 WHERE selector = $1")
                .await?;
            tx.execute(&statement, &[&selector.as_slice(), &int(now)])
                .await?;
            let statement = tx.prepare_cached("SELECT nextval('latchkey_ids')").await?;
            let id = uint("latchkey_ids", tx.query_one(&statement, &[]).await?.get(0))?;
            let record = UserRecord::new(id, pending.to_new_user(now));
            if !super::users::insert_row(&tx, &record).await? {
                // Used up all the same: the link did its one job, which is now moot.
                return Ok(Err(StoreError::EmailTaken));
            }
            super::events::append(&tx, &NewEvent::user(EventKind::UserCreated, id, None)).await?;
            Ok::<_, TxError>(Ok(record))
        })?;
        outcome
    }

    /// Deletes up to `limit` pending sign-ups past their purge time, inside the sweep's
    /// transaction (which holds the sweep lock).
    pub(super) async fn sweep_sign_ups(
        tx: &deadpool_postgres::Transaction<'_>,
        now: u64,
        limit: i64,
    ) -> Result<usize, TxError> {
        let statement = tx
            .prepare_cached(
                "DELETE FROM latchkey_signups WHERE selector IN (
                     SELECT selector FROM latchkey_signups WHERE purge_at <= $1
                     ORDER BY purge_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
            )
            .await?;
        let n = tx.execute(&statement, &[&int(now), &limit]).await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}
