//! Logins: checking a password (the same argon2 work for unknown addresses), upgrading an
//! imported or weaker hash after a match, and changing a password with the current one.

use latchkey_client::{ApiError, EventKind, PasswordChanged, User, UserId, UserStatus};

use super::Service;
use crate::passwords::Passwords;
use crate::store::{NewEvent, SharedLimit, UserRecord};
use crate::validate;

/// A login: the same buckets, the same argon2 work and the same answer for an unknown
/// address, a wrong password and a disabled account.
pub(super) async fn verify_password(
    service: &Service,
    email: String,
    password: String,
    client_ip: Option<String>,
) -> Result<User, ApiError> {
    let ip = validate::client_ip(client_ip.as_deref())?;
    // An implausible address cannot have an account; it gets the same buckets, the
    // same dummy work and the same answer as an unknown one.
    let key = email.trim().to_lowercase();
    service.state.limits().login(ip, &key)?;
    service
        .state
        .take_shared(SharedLimit::LoginPerAccount, &key)
        .await?;
    let record = match validate::email(&email) {
        Ok(email) => service.state.store.user_by_email(&email).await?,
        Err(_) => None,
    };
    let hash = record.as_ref().map(|r| r.password_hash.as_str());
    let verdict = service.state.passwords.verify(&password, hash).await?;
    match record {
        Some(r) if verdict.matched && r.status == UserStatus::Active => {
            if verdict.rehash {
                service.upgrade_hash(&r, &password).await;
            }
            Ok(r.to_api())
        }
        Some(r) => {
            let event = NewEvent::user(EventKind::LoginFailed, r.id, ip.map(|i| i.to_string()));
            service.state.store.record_event(event).await?;
            Err(ApiError::InvalidCredentials)
        }
        None => Err(ApiError::InvalidCredentials),
    }
}

/// A password change with the current password, counted against the login buckets.
pub(super) async fn change_password(
    service: &Service,
    id: UserId,
    current_password: String,
    new_password: String,
) -> Result<PasswordChanged, ApiError> {
    let record = service.user_record(id).await?;
    service.state.limits().login(None, &record.email)?;
    service
        .state
        .take_shared(SharedLimit::LoginPerAccount, &record.email)
        .await?;
    let normalised = service
        .state
        .passwords
        .check_policy(&new_password, Some(&record.email))?;
    let verdict = service
        .state
        .passwords
        .verify(&current_password, Some(&record.password_hash))
        .await?;
    if !verdict.matched || record.status != UserStatus::Active {
        return Err(ApiError::InvalidCredentials);
    }
    service
        .store_new_password(&record, normalised, EventKind::PasswordChanged, None)
        .await
}

impl Service {
    /// Replaces a bcrypt or weaker argon2 hash with one at the configured parameters, after
    /// `password` matched it. A failure is logged and costs the login nothing: the old hash
    /// still works and the upgrade is tried again at the next login.
    pub(super) async fn upgrade_hash(&self, record: &UserRecord, password: &str) {
        let upgraded = async {
            let hash = self
                .state
                .passwords
                .hash(Passwords::normalise(password))
                .await?;
            self.state
                .store
                .rehash(record.id, &record.password_hash, &hash)
                .await
                .map_err(ApiError::from)
        };
        match upgraded.await {
            Ok(true) => tracing::info!(user_id = record.id, "password hash upgraded to argon2id"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(user_id = record.id, error = %e, "password hash upgrade failed")
            }
        }
    }
}
