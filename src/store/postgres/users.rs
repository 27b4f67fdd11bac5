//! Users, and the helpers every transaction that changes one shares.

use latchkey_client::{EventKind, UserStatus};
use tokio_postgres::Row;

use super::super::records::{NewEvent, NewUserRecord, UserRecord};
use super::{duplicate, int, sql, uint, PgStore, TxError};
use crate::store::StoreError;

/// The columns of a user, in the order [`user_from`] reads them.
pub(super) const USER_COLUMNS: &str = "id, email, name, role, status, password_hash, locale, \
     created_at, updated_at, password_changed_at, credential_epoch";

/// The name a status is stored under.
pub(super) fn status_name(status: UserStatus) -> &'static str {
    match status {
        UserStatus::Active => "active",
        UserStatus::Disabled => "disabled",
    }
}

/// The status stored under `name`.
pub(super) fn status_from(name: &str) -> Result<UserStatus, StoreError> {
    match name {
        "active" => Ok(UserStatus::Active),
        "disabled" => Ok(UserStatus::Disabled),
        other => Err(StoreError::Corrupt {
            tree: "latchkey_users",
            reason: format!("unknown status {other:?}"),
        }),
    }
}

/// A user from a row of [`USER_COLUMNS`].
pub(super) fn user_from(row: &Row) -> Result<UserRecord, StoreError> {
    let n = |i: usize| uint("latchkey_users", row.get(i));
    Ok(UserRecord {
        id: n(0)?,
        email: row.get(1),
        name: row.get(2),
        role: row.get(3),
        status: status_from(row.get(4))?,
        password_hash: row.get(5),
        locale: row.get(6),
        created_at: n(7)?,
        updated_at: n(8)?,
        password_changed_at: n(9)?,
        credential_epoch: n(10)?,
    })
}

/// Inserts a user row with the given id inside a transaction; false (and nothing written) if
/// the address has an account already.
pub(super) async fn insert_row(
    tx: &deadpool_postgres::Transaction<'_>,
    record: &UserRecord,
) -> Result<bool, TxError> {
    let statement = tx
        .prepare_cached(&format!(
            "INSERT INTO latchkey_users ({USER_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (email) DO NOTHING"
        ))
        .await?;
    let inserted = tx
        .execute(
            &statement,
            &[
                &int(record.id),
                &record.email,
                &record.name,
                &record.role,
                &status_name(record.status),
                &record.password_hash,
                &record.locale,
                &int(record.created_at),
                &int(record.updated_at),
                &int(record.password_changed_at),
                &int(record.credential_epoch),
            ],
        )
        .await?;
    Ok(inserted > 0)
}

/// Locks and reads the user `id` inside a transaction.
pub(super) async fn lock_user(
    tx: &deadpool_postgres::Transaction<'_>,
    id: u64,
) -> Result<Option<UserRecord>, TxError> {
    let statement = tx
        .prepare_cached(&format!(
            "SELECT {USER_COLUMNS} FROM latchkey_users WHERE id = $1 FOR UPDATE"
        ))
        .await?;
    match tx.query_opt(&statement, &[&int(id)]).await? {
        Some(row) => Ok(Some(user_from(&row)?)),
        None => Ok(None),
    }
}

/// Writes every field of `user` but its id.
pub(super) async fn put_user(
    tx: &deadpool_postgres::Transaction<'_>,
    user: &UserRecord,
) -> Result<(), TxError> {
    let statement = tx
        .prepare_cached(
            "UPDATE latchkey_users SET email = $2, name = $3, role = $4, status = $5,
                 password_hash = $6, locale = $7, updated_at = $8, password_changed_at = $9,
                 credential_epoch = $10
             WHERE id = $1",
        )
        .await?;
    let written = tx
        .execute(
            &statement,
            &[
                &int(user.id),
                &user.email,
                &user.name,
                &user.role,
                &status_name(user.status),
                &user.password_hash,
                &user.locale,
                &int(user.updated_at),
                &int(user.password_changed_at),
                &int(user.credential_epoch),
            ],
        )
        .await;
    match written {
        Err(e) if duplicate(&e) => Err(StoreError::EmailTaken.into()),
        Err(e) => Err(e.into()),
        Ok(0) => Err(StoreError::NotFound.into()),
        Ok(_) => Ok(()),
    }
}

/// Deletes every token of user `id` but `keep`.
pub(super) async fn revoke_tokens(
    tx: &deadpool_postgres::Transaction<'_>,
    id: u64,
    keep: Option<&[u8; 16]>,
) -> Result<(), TxError> {
    let statement = tx
        .prepare_cached(
            "DELETE FROM latchkey_tokens WHERE user_id = $1
                 AND ($2::bytea IS NULL OR selector <> $2)",
        )
        .await?;
    let keep = keep.map(|k| k.as_slice());
    tx.execute(&statement, &[&int(id), &keep]).await?;
    Ok(())
}

impl PgStore {
    /// See [`crate::store::Store::insert_users`]: one transaction per user on one connection.
    pub(in crate::store) async fn insert_users(
        &self,
        users: Vec<NewUserRecord>,
    ) -> Result<Vec<Result<UserRecord, StoreError>>, StoreError> {
        let mut results = Vec::with_capacity(users.len());
        for new in users {
            let outcome = transact!(self, |tx| {
                let statement = tx.prepare_cached("SELECT nextval('latchkey_ids')").await?;
                let id = uint("latchkey_ids", tx.query_one(&statement, &[]).await?.get(0))?;
                let record = UserRecord::new(id, new.clone());
                if !insert_row(&tx, &record).await? {
                    return Err(StoreError::EmailTaken.into());
                }
                super::events::append(
                    &tx,
                    &NewEvent::user(EventKind::UserCreated, record.id, None),
                )
                .await?;
                Ok(record)
            });
            match outcome {
                Err(e @ (StoreError::Unreachable(_) | StoreError::Sql(_))) => return Err(e),
                other => results.push(other),
            }
        }
        Ok(results)
    }

    /// See [`crate::store::Store::rehash`].
    pub(in crate::store) async fn rehash(
        &self,
        id: u64,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let statement = c
            .prepare_cached(
                "UPDATE latchkey_users SET password_hash = $3 WHERE id = $1 AND password_hash = $2",
            )
            .await
            .map_err(sql)?;
        let n = c
            .execute(&statement, &[&int(id), &old_hash, &new_hash])
            .await
            .map_err(sql)?;
        Ok(n == 1)
    }

    /// See [`crate::store::Store::user`].
    pub(in crate::store) async fn user(&self, id: u64) -> Result<Option<UserRecord>, StoreError> {
        let c = self.reader().await?;
        let statement = c
            .prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM latchkey_users WHERE id = $1"
            ))
            .await
            .map_err(sql)?;
        match c.query_opt(&statement, &[&int(id)]).await.map_err(sql)? {
            Some(row) => Ok(Some(user_from(&row)?)),
            None => Ok(None),
        }
    }

    /// See [`crate::store::Store::user_by_email`].
    pub(in crate::store) async fn user_by_email(
        &self,
        email: &str,
    ) -> Result<Option<UserRecord>, StoreError> {
        let c = self.reader().await?;
        let statement = c
            .prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM latchkey_users WHERE email = $1"
            ))
            .await
            .map_err(sql)?;
        match c.query_opt(&statement, &[&email]).await.map_err(sql)? {
            Some(row) => Ok(Some(user_from(&row)?)),
            None => Ok(None),
        }
    }

    /// See [`crate::store::Store::users_after`].
    pub(in crate::store) async fn users_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<UserRecord>, StoreError> {
        let c = self.client().await?;
        let statement = c
            .prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM latchkey_users WHERE id > $1 ORDER BY id LIMIT $2"
            ))
            .await
            .map_err(sql)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        c.query(&statement, &[&int(after), &limit])
            .await
            .map_err(sql)?
            .iter()
            .map(user_from)
            .collect()
    }

    /// See [`crate::store::Store::update_user`].
    pub(in crate::store) async fn update_user(
        &self,
        id: u64,
        event: Option<NewEvent>,
        change: impl Fn(&mut UserRecord) -> Result<(), StoreError> + Send + Sync,
    ) -> Result<UserRecord, StoreError> {
        transact!(self, |tx| {
            let Some(mut record) = lock_user(&tx, id).await? else {
                return Err(StoreError::NotFound.into());
            };
            change(&mut record)?;
            put_user(&tx, &record).await?;
            if let Some(event) = &event {
                super::events::append(&tx, event).await?;
            }
            Ok(record)
        })
    }

    /// See [`crate::store::Store::set_password`].
    pub(in crate::store) async fn set_password(
        &self,
        id: u64,
        expected_epoch: u64,
        password_hash: &str,
        now: u64,
        event: NewEvent,
        notice: Option<&[u8]>,
    ) -> Result<UserRecord, StoreError> {
        transact!(self, |tx| {
            let Some(mut record) = lock_user(&tx, id).await? else {
                return Err(StoreError::NotFound.into());
            };
            if record.credential_epoch != expected_epoch {
                return Err(StoreError::Stale.into());
            }
            self.change_password(&tx, &mut record, password_hash, now, &event, notice, None)
                .await?;
            Ok(record)
        })
    }

    /// Every password change, whatever caused it: the new hash, a bumped epoch and change
    /// time, every reset token of the user revoked but `keep`, the event and the notice.
    #[allow(clippy::too_many_arguments)] // one transaction's parts, each named at the call
    pub(super) async fn change_password(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        record: &mut UserRecord,
        password_hash: &str,
        now: u64,
        event: &NewEvent,
        notice: Option<&[u8]>,
        keep: Option<&[u8; 16]>,
    ) -> Result<(), TxError> {
        record.change_password(password_hash, now);
        put_user(tx, record).await?;
        revoke_tokens(tx, record.id, keep).await?;
        let mut event = event.clone();
        event.user_id = Some(record.id);
        super::events::append(tx, &event).await?;
        if let Some(notice) = notice {
            self.enqueue(tx, notice, now).await?;
        }
        Ok(())
    }

    /// See [`crate::store::Store::delete_user`].
    pub(in crate::store) async fn delete_user(&self, id: u64) -> Result<UserRecord, StoreError> {
        transact!(self, |tx| {
            let statement = tx
                .prepare_cached(&format!(
                    "DELETE FROM latchkey_users WHERE id = $1 RETURNING {USER_COLUMNS}"
                ))
                .await?;
            let Some(row) = tx.query_opt(&statement, &[&int(id)]).await? else {
                return Err(StoreError::NotFound.into());
            };
            let record = user_from(&row)?;
            revoke_tokens(&tx, id, None).await?;
            super::events::append(&tx, &NewEvent::user(EventKind::UserDeleted, id, None)).await?;
            Ok(record)
        })
    }
}
