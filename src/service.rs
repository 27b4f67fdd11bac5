//! The [`Latchkey`] service: each RPC method, its role check and its log line.

use std::future::Future;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use latchkey_client::{
    ApiError, CallerRole, Health, Latchkey, NewUser, PasswordChanged, User, UserId, UserStatus,
};
use tarpc::context::Context;

use crate::config::Config;
use crate::passwords::Passwords;
use crate::store::{NewUserRecord, Store, StoreError};
use crate::validate;

/// Everything the methods share; lives as long as the daemon.
pub struct State {
    /// The store.
    pub store: Store,
    /// Policy and hashing.
    pub passwords: Passwords,
    /// The configuration the daemon started with.
    pub config: Config,
    /// When the daemon started, for uptime.
    pub started: Instant,
}

/// Who is on the other end of a connection, from the kernel's peer credentials.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    /// The peer's uid.
    pub uid: u32,
    /// The peer's primary gid.
    pub gid: u32,
    /// The peer's pid, when the kernel reports it.
    pub pid: Option<i32>,
    /// The role the connection was given.
    pub role: CallerRole,
}

/// One connection's view of the service: shared state plus the peer. Cloned per request.
#[derive(Clone)]
pub struct Service {
    /// Shared state.
    pub state: Arc<State>,
    /// The connection's peer.
    pub peer: Peer,
}

/// Which role a method needs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Needs {
    /// Apps and admins.
    App,
    /// Admins only.
    Admin,
}

/// Now, in Unix seconds.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Service {
    /// Runs one call: refuses it if the role does not allow it, then logs one line with the
    /// method, the caller and the outcome. Arguments are never logged: they hold secrets.
    async fn call<T>(
        &self,
        method: &'static str,
        needs: Needs,
        body: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let started = Instant::now();
        let result = if needs == Needs::Admin && self.peer.role != CallerRole::Admin {
            Err(ApiError::Forbidden)
        } else {
            body.await
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code(),
        };
        tracing::info!(
            method,
            uid = self.peer.uid,
            pid = self.peer.pid,
            outcome,
            micros = started.elapsed().as_micros() as u64,
            "call"
        );
        result
    }

    /// The user with this id, or `NotFound`.
    fn user_record(&self, id: UserId) -> Result<crate::store::UserRecord, ApiError> {
        self.state.store.user(id)?.ok_or(ApiError::NotFound)
    }
}

impl Latchkey for Service {
    async fn health(self, _: Context) -> Result<Health, ApiError> {
        self.call("health", Needs::App, async {
            Ok(Health {
                status: "ok".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                uptime_secs: self.state.started.elapsed().as_secs(),
                caller_role: self.peer.role,
            })
        })
        .await
    }

    async fn create_user(self, _: Context, user: NewUser) -> Result<User, ApiError> {
        self.call("create_user", Needs::App, async {
            let email = validate::email(&user.email)?;
            let name = validate::name(&user.name)?;
            let role = validate::role(user.role.as_deref())?;
            let locale = validate::locale(user.locale.as_deref())?;
            let normalised = self
                .state
                .passwords
                .check_policy(&user.password, Some(&email))?;
            // Refuse a taken address before paying for a hash; the insert checks again
            // inside its transaction, which is what makes the index unique.
            if self.state.store.user_by_email(&email)?.is_some() {
                return Err(ApiError::EmailTaken);
            }
            let password_hash = self.state.passwords.hash(normalised).await?;
            let record = self
                .state
                .store
                .insert_user(NewUserRecord {
                    email,
                    name,
                    role,
                    status: UserStatus::Active,
                    password_hash,
                    locale,
                    created_at: now(),
                })
                .await?;
            Ok(record.to_api())
        })
        .await
    }

    async fn get_user(self, _: Context, id: UserId) -> Result<User, ApiError> {
        self.call("get_user", Needs::App, async {
            Ok(self.user_record(id)?.to_api())
        })
        .await
    }

    async fn find_user(self, _: Context, email: String) -> Result<User, ApiError> {
        self.call("find_user", Needs::App, async {
            let email = validate::email(&email)?;
            let record = self.state.store.user_by_email(&email)?;
            Ok(record.ok_or(ApiError::NotFound)?.to_api())
        })
        .await
    }

    async fn verify_password(
        self,
        _: Context,
        email: String,
        password: String,
        client_ip: Option<String>,
    ) -> Result<User, ApiError> {
        self.call("verify_password", Needs::App, async {
            validate::client_ip(client_ip.as_deref())?;
            // An implausible address cannot have an account; it gets the same dummy work and
            // the same answer as an unknown one.
            let record = match validate::email(&email) {
                Ok(email) => self.state.store.user_by_email(&email)?,
                Err(_) => None,
            };
            let hash = record.as_ref().map(|r| r.password_hash.as_str());
            let matched = self.state.passwords.verify(&password, hash).await?;
            match record {
                Some(r) if matched && r.status == UserStatus::Active => Ok(r.to_api()),
                _ => Err(ApiError::InvalidCredentials),
            }
        })
        .await
    }

    async fn change_password(
        self,
        _: Context,
        id: UserId,
        current_password: String,
        new_password: String,
    ) -> Result<PasswordChanged, ApiError> {
        self.call("change_password", Needs::App, async {
            let record = self.user_record(id)?;
            let normalised = self
                .state
                .passwords
                .check_policy(&new_password, Some(&record.email))?;
            let matched = self
                .state
                .passwords
                .verify(&current_password, Some(&record.password_hash))
                .await?;
            if !matched || record.status != UserStatus::Active {
                return Err(ApiError::InvalidCredentials);
            }
            let hash = self.state.passwords.hash(normalised).await?;
            let epoch = record.credential_epoch;
            let updated = self
                .state
                .store
                .set_password(id, epoch, hash, now())
                .await
                .map_err(|e| match e {
                    // Someone else changed the password while we hashed: the current password
                    // we checked is no longer current.
                    StoreError::Stale => ApiError::InvalidCredentials,
                    e => e.into(),
                })?;
            Ok(PasswordChanged {
                user_id: id,
                credential_epoch: updated.credential_epoch,
            })
        })
        .await
    }

    async fn set_status(
        self,
        _: Context,
        id: UserId,
        status: UserStatus,
    ) -> Result<User, ApiError> {
        self.call("set_status", Needs::Admin, async {
            let now = now();
            let record = self
                .state
                .store
                .update_user(id, |r| {
                    if r.status != status {
                        r.status = status;
                        r.updated_at = now;
                    }
                    Ok(())
                })
                .await?;
            Ok(record.to_api())
        })
        .await
    }

    async fn delete_user(self, _: Context, id: UserId) -> Result<(), ApiError> {
        self.call("delete_user", Needs::Admin, async {
            self.state.store.delete_user(id).await?;
            Ok(())
        })
        .await
    }
}
