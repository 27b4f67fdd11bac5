//! Reset tokens: one row per selector holding only the SHA-256 of the verifier; a user's
//! tokens are found through the `(user_id, n)` index, expired ones through `purge_at`.

use latchkey_client::UserStatus;
use tokio_postgres::Row;

use super::super::records::{IssuedToken, NewEvent, TokenRecord, TokenState, UserGate, UserRecord};
use super::users::{lock_user, status_from};
use super::{int, lock, sql, uint, PgStore, TxError};
use crate::store::StoreError;

/// The number of decoy rows; a request for an unknown address locks one at random, as a real
/// request locks its user's row, without every such request queueing on one row.
const DECOY_SLOTS: u32 = 64;

/// The columns of a token, in the order [`token_from`] reads them.
pub(super) const TOKEN_COLUMNS: &str =
    "user_id, verifier_hash, credential_epoch, issued_at, expires_at, used_at, purge_at";

/// A token from a row of [`TOKEN_COLUMNS`] starting at column `at`.
pub(super) fn token_from(row: &Row, at: usize) -> Result<TokenRecord, StoreError> {
    let n = |i: usize| uint("latchkey_tokens", row.get(at + i));
    let hash: &[u8] = row.get(at + 1);
    let verifier_hash = <[u8; 32]>::try_from(hash).map_err(|_| StoreError::Corrupt {
        tree: "latchkey_tokens",
        reason: "the verifier hash is not 32 bytes".into(),
    })?;
    Ok(TokenRecord {
        user_id: n(0)?,
        verifier_hash,
        credential_epoch: n(2)?,
        issued_at: n(3)?,
        expires_at: n(4)?,
        used_at: row
            .get::<_, Option<i64>>(at + 5)
            .map(|v| uint("latchkey_tokens", v))
            .transpose()?,
        purge_at: n(6)?,
    })
}

impl PgStore {
    /// See [`crate::store::Store::issue_token`].
    pub(in crate::store) async fn issue_token(
        &self,
        token: &IssuedToken,
        max_live: usize,
        mail: Option<&[u8]>,
        event: NewEvent,
    ) -> Result<(), StoreError> {
        let record = &token.record;
        transact!(self, |tx| {
            match lock_user(&tx, record.user_id).await? {
                Some(u)
                    if u.credential_epoch == record.credential_epoch
                        && u.status == UserStatus::Active => {}
                _ => return Err(StoreError::Stale.into()),
            }
            // Keep only tokens that can still be used, then make room for the new one.
            let statement = tx
                .prepare_cached(
                    "SELECT selector, used_at, expires_at FROM latchkey_tokens
                     WHERE user_id = $1 ORDER BY n",
                )
                .await?;
            let mut live: Vec<Vec<u8>> = Vec::new();
            for row in tx.query(&statement, &[&int(record.user_id)]).await? {
                let used: Option<i64> = row.get(1);
                let expires: i64 = row.get(2);
                if used.is_none() && expires > int(record.issued_at) {
                    live.push(row.get(0));
                }
            }
            let excess = (live.len() + 1).saturating_sub(max_live.max(1));
            if excess > 0 {
                let statement = tx
                    .prepare_cached("DELETE FROM latchkey_tokens WHERE selector = ANY($1)")
                    .await?;
                tx.execute(&statement, &[&&live[..excess]]).await?;
            }
            let statement = tx
                .prepare_cached(&format!(
                    "INSERT INTO latchkey_tokens (selector, {TOKEN_COLUMNS})
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                ))
                .await?;
            tx.execute(
                &statement,
                &[
                    &token.selector.as_slice(),
                    &int(record.user_id),
                    &record.verifier_hash.as_slice(),
                    &int(record.credential_epoch),
                    &int(record.issued_at),
                    &int(record.expires_at),
                    &record.used_at.map(int),
                    &int(record.purge_at),
                ],
            )
            .await?;
            if let Some(mail) = mail {
                self.enqueue(&tx, mail, record.issued_at).await?;
            }
            super::events::append(&tx, &event).await?;
            Ok(())
        })
    }

    /// See [`crate::store::Store::issue_decoy`]: the statements of [`PgStore::issue_token`],
    /// in the same order and with values of the same sizes, on a decoy row.
    pub(in crate::store) async fn issue_decoy(
        &self,
        token: &IssuedToken,
        mail: &[u8],
    ) -> Result<(), StoreError> {
        let slot = i32::try_from(u32::from_be_bytes(crate::random::bytes::<4>()) % DECOY_SLOTS)
            .unwrap_or(0);
        let record = serde_json::to_vec(&token.record).map_err(|e| StoreError::Corrupt {
            tree: "latchkey_decoy",
            reason: e.to_string(),
        })?;
        let sealed = self.inner.seal.seal(u64::MAX, mail)?;
        transact!(self, |tx| {
            let statement = tx
                .prepare_cached("SELECT slot FROM latchkey_decoy WHERE slot = $1 FOR UPDATE")
                .await?;
            tx.query_opt(&statement, &[&slot]).await?;
            let statement = tx
                .prepare_cached(
                    "SELECT selector, used_at, expires_at FROM latchkey_tokens
                     WHERE user_id = $1 ORDER BY n",
                )
                .await?;
            // No user has id 0: the same index lookup, finding nothing.
            tx.query(&statement, &[&0i64]).await?;
            let statement = tx
                .prepare_cached("UPDATE latchkey_decoy_tokens SET token = $2 WHERE slot = $1")
                .await?;
            tx.execute(&statement, &[&slot, &record]).await?;
            // The id a queued message takes (ids are never reused, so a gap costs nothing).
            let statement = tx.prepare_cached("SELECT nextval('latchkey_ids')").await?;
            tx.query_one(&statement, &[]).await?;
            let statement = tx
                .prepare_cached("UPDATE latchkey_decoy_mail SET mail = $2 WHERE slot = $1")
                .await?;
            tx.execute(&statement, &[&slot, &sealed]).await?;
            let statement = tx
                .prepare_cached("UPDATE latchkey_decoy_events SET event = $2 WHERE slot = $1")
                .await?;
            tx.execute(&statement, &[&slot, &"reset_requested"]).await?;
            Ok(())
        })
    }

    /// See [`crate::store::Store::check_token`]: one statement reads the token and its owner.
    pub(in crate::store) async fn check_token(
        &self,
        selector: &[u8; 16],
        verifier_hash: &[u8; 32],
        now: u64,
    ) -> Result<TokenState, StoreError> {
        let c = self.reader().await?;
        let statement = c
            .prepare_cached(
                "SELECT t.user_id, t.verifier_hash, t.credential_epoch, t.issued_at,
                        t.expires_at, t.used_at, t.purge_at, u.status, u.credential_epoch
                 FROM latchkey_tokens t LEFT JOIN latchkey_users u ON u.id = t.user_id
                 WHERE t.selector = $1",
            )
            .await
            .map_err(sql)?;
        let Some(row) = c
            .query_opt(&statement, &[&selector.as_slice()])
            .await
            .map_err(sql)?
        else {
            return Ok(TokenState::Invalid);
        };
        let record = token_from(&row, 0)?;
        let user = match row.get::<_, Option<&str>>(7) {
            Some(status) => Some(UserGate {
                status: status_from(status)?,
                credential_epoch: uint("latchkey_users", row.get(8))?,
            }),
            None => None,
        };
        Ok(record.state(verifier_hash, user, now))
    }

    /// See [`crate::store::Store::consume_token`]. The owner's row is locked before the
    /// token's, the order every change to a user's tokens takes.
    pub(in crate::store) async fn consume_token(
        &self,
        selector: &[u8; 16],
        verifier_hash: &[u8; 32],
        password_hash: &str,
        now: u64,
        event: NewEvent,
        notice: Option<&[u8]>,
    ) -> Result<UserRecord, StoreError> {
        transact!(self, |tx| {
            let statement = tx
                .prepare_cached("SELECT user_id FROM latchkey_tokens WHERE selector = $1")
                .await?;
            let Some(owner) = tx.query_opt(&statement, &[&selector.as_slice()]).await? else {
                return Err(StoreError::TokenRejected.into());
            };
            let owner = uint("latchkey_tokens", owner.get(0))?;
            let Some(mut user) = lock_user(&tx, owner).await? else {
                return Err(StoreError::TokenRejected.into());
            };
            let statement = tx
                .prepare_cached(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM latchkey_tokens WHERE selector = $1 FOR UPDATE"
                ))
                .await?;
            let Some(row) = tx.query_opt(&statement, &[&selector.as_slice()]).await? else {
                return Err(StoreError::TokenRejected.into());
            };
            let token = token_from(&row, 0)?;
            if token.user_id != user.id
                || !matches!(
                    token.state(verifier_hash, Some(UserGate::from(&user)), now),
                    TokenState::Valid { .. }
                )
            {
                return Err(StoreError::TokenRejected.into());
            }
            let statement = tx
                .prepare_cached("UPDATE latchkey_tokens SET used_at = $2 WHERE selector = $1")
                .await?;
            tx.execute(&statement, &[&selector.as_slice(), &int(now)])
                .await?;
            self.change_password(
                &tx,
                &mut user,
                password_hash,
                now,
                &event,
                notice,
                Some(selector),
            )
            .await?;
            Ok::<_, TxError>(user)
        })
    }

    /// See [`crate::store::Store::sweep_tokens`]. One host sweeps at a time; the others find
    /// the lock taken and skip this round.
    pub(in crate::store) async fn sweep_tokens(
        &self,
        now: u64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        transact!(self, |tx| {
            if !lock::try_take(&tx, lock::SWEEP).await? {
                return Ok(0);
            }
            let statement = tx
                .prepare_cached(
                    "DELETE FROM latchkey_tokens WHERE selector IN (
                         SELECT selector FROM latchkey_tokens WHERE purge_at <= $1
                         ORDER BY purge_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
                )
                .await?;
            let n = tx.execute(&statement, &[&int(now), &limit]).await?;
            let sign_ups = PgStore::sweep_sign_ups(&tx, now, limit).await?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX) + sign_ups)
        })
    }
}
