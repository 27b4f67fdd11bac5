//! User records and the email index.

use latchkey_client::{User, UserStatus};
use serde::{Deserialize, Serialize};
use sled::Transactional;

use super::{abort, decode, encode, keys, tx_result, Store, StoreError};

const USERS: &str = "userid_user";

/// A user as stored: the API's [`User`] plus the password hash.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserRecord {
    /// The user's id.
    pub id: u64,
    /// The normalised email.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Application role label.
    pub role: String,
    /// Active or disabled.
    pub status: UserStatus,
    /// The password hash as a PHC string.
    pub password_hash: String,
    /// Preferred locale for mail.
    pub locale: Option<String>,
    /// Creation time (Unix seconds).
    pub created_at: u64,
    /// Last change of any field.
    pub updated_at: u64,
    /// Last password change.
    pub password_changed_at: u64,
    /// Bumped on every password change.
    pub credential_epoch: u64,
}

impl UserRecord {
    /// The record as the API shows it, without the hash.
    pub fn to_api(&self) -> User {
        User {
            id: self.id,
            email: self.email.clone(),
            name: self.name.clone(),
            role: self.role.clone(),
            status: self.status,
            locale: self.locale.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            password_changed_at: self.password_changed_at,
            credential_epoch: self.credential_epoch,
        }
    }
}

/// What the service hands over to create a user (already validated and hashed).
#[derive(Clone, Debug)]
pub struct NewUserRecord {
    /// Normalised email.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Role label.
    pub role: String,
    /// Initial status.
    pub status: UserStatus,
    /// PHC string of the password.
    pub password_hash: String,
    /// Preferred locale.
    pub locale: Option<String>,
    /// Creation time to record.
    pub created_at: u64,
}

impl Store {
    /// Adds a user and its email index entry in one transaction; `EmailTaken` if the address
    /// is in use. Durable on return.
    pub async fn insert_user(&self, new: NewUserRecord) -> Result<UserRecord, StoreError> {
        let id = self.next_id()?;
        let record = UserRecord {
            id,
            email: new.email,
            name: new.name,
            role: new.role,
            status: new.status,
            password_hash: new.password_hash,
            locale: new.locale,
            created_at: new.created_at,
            updated_at: new.created_at,
            password_changed_at: new.created_at,
            credential_epoch: 0,
        };
        let bytes = encode(USERS, &record)?;
        let i = &self.inner;
        tx_result((&i.users, &i.emails).transaction(|(users, emails)| {
            if emails.get(keys::email(&record.email))?.is_some() {
                return abort(StoreError::EmailTaken);
            }
            emails.insert(keys::email(&record.email), &keys::user(id))?;
            users.insert(&keys::user(id), bytes.as_slice())?;
            Ok(())
        }))?;
        self.durable().await?;
        Ok(record)
    }

    /// The user with this id.
    pub fn user(&self, id: u64) -> Result<Option<UserRecord>, StoreError> {
        match self.inner.users.get(keys::user(id))? {
            Some(bytes) => Ok(Some(decode(USERS, &bytes)?)),
            None => Ok(None),
        }
    }

    /// The user with this normalised email.
    pub fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        match self.inner.emails.get(keys::email(email))? {
            Some(id) => match keys::read_u64(&id) {
                Some(id) => self.user(id),
                None => Err(StoreError::Corrupt {
                    tree: "email_userid",
                    reason: "id is not 8 bytes".into(),
                }),
            },
            None => Ok(None),
        }
    }

    /// Users in id order, starting after `after`, at most `limit`.
    pub fn users_after(&self, after: u64, limit: usize) -> Result<Vec<UserRecord>, StoreError> {
        let start = keys::user(after.saturating_add(1));
        self.inner
            .users
            .range(start..)
            .take(limit)
            .map(|kv| decode(USERS, &kv?.1))
            .collect()
    }

    /// How many users there are.
    pub fn user_count(&self) -> usize {
        self.inner.users.len()
    }

    /// Applies `change` to a user atomically; `NotFound` if there is none. Durable on return.
    pub async fn update_user(
        &self,
        id: u64,
        change: impl Fn(&mut UserRecord) -> Result<(), StoreError>,
    ) -> Result<UserRecord, StoreError> {
        let key = keys::user(id);
        let record = tx_result(self.inner.users.transaction(|users| {
            let Some(bytes) = users.get(key)? else {
                return abort(StoreError::NotFound);
            };
            let mut record: UserRecord = match decode(USERS, &bytes) {
                Ok(r) => r,
                Err(e) => return abort(e),
            };
            if let Err(e) = change(&mut record) {
                return abort(e);
            }
            match encode(USERS, &record) {
                Ok(bytes) => users.insert(&key, bytes)?,
                Err(e) => return abort(e),
            };
            Ok(record)
        }))?;
        self.durable().await?;
        Ok(record)
    }

    /// Removes a user and its email index entry; `NotFound` if there is none. Durable on
    /// return.
    pub async fn delete_user(&self, id: u64) -> Result<UserRecord, StoreError> {
        let key = keys::user(id);
        let i = &self.inner;
        let record = tx_result((&i.users, &i.emails).transaction(|(users, emails)| {
            let Some(bytes) = users.remove(&key)? else {
                return abort(StoreError::NotFound);
            };
            let record: UserRecord = match decode(USERS, &bytes) {
                Ok(r) => r,
                Err(e) => return abort(e),
            };
            emails.remove(keys::email(&record.email))?;
            Ok(record)
        }))?;
        self.durable().await?;
        Ok(record)
    }
}

impl Store {
    /// Replaces the password hash if the user's credential epoch is still `expected_epoch`
    /// (`Stale` otherwise), bumps the epoch and stamps the change time. Durable on return.
    pub async fn set_password(
        &self,
        id: u64,
        expected_epoch: u64,
        password_hash: String,
        now: u64,
    ) -> Result<UserRecord, StoreError> {
        self.update_user(id, |r| {
            if r.credential_epoch != expected_epoch {
                return Err(StoreError::Stale);
            }
            r.password_hash.clone_from(&password_hash);
            r.credential_epoch += 1;
            r.password_changed_at = now;
            r.updated_at = now;
            Ok(())
        })
        .await
    }
}
