//! Logins: checking a password (the same argon2 work for unknown addresses), upgrading an
//! imported or weaker hash after a match, and changing a password with the current one.

use std::net::IpAddr;

use latchkey_client::{ApiError, EventKind, PasswordChanged, User, UserId, UserStatus};

use super::Service;
use crate::passwords::{Flow, Passwords};
use crate::store::{NewEvent, UserRecord};
use crate::validate;

/// A login: the same limits, the same argon2 work and the same answer for an unknown
/// address, a wrong password and a disabled account. Throttled by consecutive failures per
/// account, the rule in [`crate::limits::LoginFailuresConfig`].
pub(super) async fn verify_password(
    service: &Service,
    email: String,
    password: String,
    client_ip: Option<String>,
) -> Result<User, ApiError> {
    let ip = validate::client_ip(client_ip.as_deref())?;
    // Nothing of an over-long argument is held while the call waits for a hash.
    let mut password = password;
    service.state.passwords.cut(&mut password);
    // An implausible address cannot have an account; it gets the same limits, the same
    // dummy work and the same answer as an unknown one.
    let valid = validate::email(&email).ok();
    let key = valid.clone().unwrap_or_else(|| failure_key(&email));
    drop(email);
    service.state.limits().login(ip)?;
    let gate = service.login_gate(&key, ip).await?;
    let record = match valid {
        Some(email) => service.state.store.user_by_email(&email).await?,
        None => None,
    };
    let hash = record.as_ref().map(|r| r.password_hash.as_str());
    let flow = service.flow(ip);
    let verdict = service
        .state
        .passwords
        .verify(&password, hash, flow)
        .await?;
    match record {
        Some(r) if verdict.matched && r.status == UserStatus::Active => {
            gate.succeeded(service).await?;
            if verdict.rehash {
                service.upgrade_hash(&r, &password, flow).await;
            }
            Ok(r.to_api())
        }
        Some(r) => {
            gate.failed(service).await?;
            let event = NewEvent::user(EventKind::LoginFailed, r.id, ip.map(|i| i.to_string()));
            service.state.store.record_event(event).await?;
            Err(ApiError::InvalidCredentials)
        }
        None => {
            gate.failed(service).await?;
            Err(ApiError::InvalidCredentials)
        }
    }
}

/// A password change with the current password, throttled like a login from no known
/// address.
pub(super) async fn change_password(
    service: &Service,
    id: UserId,
    current_password: String,
    new_password: String,
) -> Result<PasswordChanged, ApiError> {
    let mut current_password = current_password;
    service.state.passwords.cut(&mut current_password);
    let record = service.user_record(id).await?;
    let gate = service.login_gate(&record.email, None).await?;
    let normalised = service
        .state
        .passwords
        .check_policy(&new_password, Some(&record.email))?;
    let verdict = service
        .state
        .passwords
        .verify(
            &current_password,
            Some(&record.password_hash),
            service.flow(None),
        )
        .await?;
    if !verdict.matched || record.status != UserStatus::Active {
        gate.failed(service).await?;
        return Err(ApiError::InvalidCredentials);
    }
    // The new password forgets the failures (store_new_password).
    service
        .store_new_password(&record, normalised, EventKind::PasswordChanged, None)
        .await
}

/// What the failures of an implausible address are counted under: the address trimmed and
/// lowercased, cut to the longest a real one can be (the store keeps only a hash of it, and
/// the call need not hold a frame's worth of text while it waits for a hash).
fn failure_key(email: &str) -> String {
    let mut key = email.trim().to_lowercase();
    let mut end = key.len().min(validate::MAX_EMAIL_BYTES);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    key.truncate(end);
    key
}

/// A login attempt let through the failure throttle, to be told how it ended.
pub(super) struct LoginGate {
    /// The normalised address the failures are counted for.
    account: String,
    /// The client address, as the per-IP limits key it.
    ip: Option<IpAddr>,
    /// Whether the account has failures to forget on a success.
    has_failures: bool,
}

impl LoginGate {
    /// A correct password: the account's count starts again from 0.
    async fn succeeded(self, service: &Service) -> Result<(), ApiError> {
        if self.has_failures {
            service
                .state
                .store
                .forget_login_failures(&self.account)
                .await?;
        }
        Ok(())
    }

    /// A wrong password (or an unknown address, or a disabled account): one more in a row.
    async fn failed(self, service: &Service) -> Result<(), ApiError> {
        let rule = service.state.limits().config().login_failures;
        let now_ms = crate::clock::now_ms();
        service
            .state
            .store
            .login_failed(
                &self.account,
                self.ip,
                now_ms,
                rule.forget_before_ms(now_ms),
            )
            .await?;
        Ok(())
    }
}

impl Service {
    /// Lets a login attempt on `account` from `ip` through to the password check, or answers
    /// `RateLimited` without one while the account's failures say to wait.
    pub(super) async fn login_gate(
        &self,
        account: &str,
        ip: Option<IpAddr>,
    ) -> Result<LoginGate, ApiError> {
        let rule = self.state.limits().config().login_failures;
        let ip = ip.map(crate::limits::ip_bucket);
        let seen = self.state.store.failed_logins(account, ip).await?;
        let now_ms = crate::clock::now_ms();
        let clean = rule.is_clean(ip.map(|_| seen.ip_last_ms), now_ms);
        rule.judge(seen.account_failures, seen.account_last_ms, clean, now_ms)
            .map_err(|retry_after_secs| ApiError::RateLimited { retry_after_secs })?;
        Ok(LoginGate {
            account: account.to_owned(),
            ip,
            has_failures: seen.account_failures > 0,
        })
    }

    /// Replaces a bcrypt or weaker argon2 hash with one at the configured parameters, after
    /// `password` matched it. A failure is logged and costs the login nothing: the old hash
    /// still works and the upgrade is tried again at the next login.
    pub(super) async fn upgrade_hash(&self, record: &UserRecord, password: &str, flow: Flow) {
        let upgraded = async {
            let hash = self
                .state
                .passwords
                .hash(Passwords::normalise(password), flow)
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
