//! Accounts: creating, reading, listing, enabling and disabling, deleting, importing, and an
//! admin setting a password.

use latchkey_client::{
    ApiError, EventKind, ExportedUser, ImportOutcome, ImportUser, NewUser, PasswordChanged, User,
    UserId, UserStatus,
};

use super::{page, Service, MAX_PAGE};
use crate::clock::now;
use crate::store::{NewEvent, NewUserRecord, StoreError, UserRecord};
use crate::validate;

/// Creates an account: every field checked, the password against the policy, a taken
/// address refused before paying for a hash.
pub(super) async fn create_user(
    service: &Service,
    user: NewUser,
    client_ip: Option<String>,
) -> Result<User, ApiError> {
    let ip = validate::client_ip(client_ip.as_deref())?;
    let email = validate::email(&user.email)?;
    let name = validate::name(&user.name)?;
    let role = validate::role(user.role.as_deref())?;
    let locale = validate::locale(user.locale.as_deref())?;
    let normalised = service
        .state
        .passwords
        .check_policy(&user.password, Some(&email))?;
    // After every field passed: a refused sign-up takes no cell.
    service.state.limits().signup(ip)?;
    let account = Account {
        email,
        name,
        role,
        locale,
    };
    Ok(insert_account(service, account, normalised, ip)
        .await?
        .to_api())
}

/// The fields of an account to create, checked.
pub(super) struct Account {
    /// Normalised email.
    pub(super) email: String,
    /// Display name.
    pub(super) name: String,
    /// Role label.
    pub(super) role: String,
    /// Preferred locale.
    pub(super) locale: Option<String>,
}

/// Creates a checked account with the password `normalised` (policy passed): a taken address
/// is refused before paying for a hash; the insert checks again inside its transaction,
/// which is what makes the index unique.
pub(super) async fn insert_account(
    service: &Service,
    account: Account,
    normalised: String,
    ip: Option<std::net::IpAddr>,
) -> Result<UserRecord, ApiError> {
    if service
        .state
        .store
        .user_by_email(&account.email)
        .await?
        .is_some()
    {
        return Err(ApiError::EmailTaken);
    }
    let password_hash = service
        .state
        .passwords
        .hash(normalised, service.flow(ip))
        .await?;
    let record = service
        .state
        .store
        .insert_user(NewUserRecord {
            email: account.email,
            name: account.name,
            role: account.role,
            status: UserStatus::Active,
            password_hash,
            locale: account.locale,
            created_at: now(),
        })
        .await?;
    Ok(record)
}

/// The account with this id.
pub(super) async fn get_user(service: &Service, id: UserId) -> Result<User, ApiError> {
    Ok(service.user_record(id).await?.to_api())
}

/// The account with this (normalised) address.
pub(super) async fn find_user(service: &Service, email: String) -> Result<User, ApiError> {
    let email = validate::email(&email)?;
    let record = service.state.store.user_by_email(&email).await?;
    Ok(record.ok_or(ApiError::NotFound)?.to_api())
}

/// Enables or disables an account, with its event. Disabling bumps the credential epoch:
/// the app drops the account's sessions, and every reset token of it is dead for good, so
/// enabling the account again does not bring back a link mailed or handed out before
/// (issue 19, item 6).
pub(super) async fn set_status(
    service: &Service,
    id: UserId,
    status: UserStatus,
) -> Result<User, ApiError> {
    let now = now();
    let kind = match status {
        UserStatus::Active => EventKind::UserEnabled,
        UserStatus::Disabled => EventKind::UserDisabled,
    };
    let record = service
        .state
        .store
        .update_user(id, Some(NewEvent::user(kind, id, None)), |r| {
            if r.status != status {
                r.status = status;
                r.updated_at = now;
                if status == UserStatus::Disabled {
                    r.credential_epoch += 1;
                }
            }
            Ok(())
        })
        .await?;
    Ok(record.to_api())
}

/// Deletes an account with its email index entry and its tokens.
pub(super) async fn delete_user(service: &Service, id: UserId) -> Result<(), ApiError> {
    service.state.store.delete_user(id).await?;
    Ok(())
}

/// Accounts in id order after `after`, as many as fit one reply frame.
pub(super) async fn list_users(
    service: &Service,
    after: UserId,
    limit: u32,
) -> Result<Vec<User>, ApiError> {
    let users = service.state.store.users_after(after, page(limit)).await?;
    Ok(service.fit_frame(users.iter().map(UserRecord::to_api).collect()))
}

/// Accounts in id order after `after` with their hashes, in the form an import takes, as
/// many as fit one reply frame.
pub(super) async fn export_users(
    service: &Service,
    after: UserId,
    limit: u32,
) -> Result<Vec<ExportedUser>, ApiError> {
    let users = service.state.store.users_after(after, page(limit)).await?;
    let exported: Vec<ExportedUser> = users
        .into_iter()
        .map(|u| ExportedUser {
            id: u.id,
            account: ImportUser {
                email: u.email,
                name: u.name,
                role: Some(u.role),
                status: Some(u.status),
                password_hash: u.password_hash,
                locale: u.locale,
                created_at: Some(u.created_at),
            },
        })
        .collect();
    let exported = service.fit_frame(exported);
    tracing::info!(accounts = exported.len(), "password hashes exported");
    Ok(exported)
}

/// An admin sets a password: the policy applies, every reset token is revoked, the owner
/// is told by mail.
pub(super) async fn set_password(
    service: &Service,
    id: UserId,
    new_password: String,
) -> Result<PasswordChanged, ApiError> {
    let record = service.user_record(id).await?;
    let normalised = service
        .state
        .passwords
        .check_policy(&new_password, Some(&record.email))?;
    service
        .store_new_password(&record, normalised, EventKind::PasswordSet, None)
        .await
        .map_err(|e| match e {
            ApiError::InvalidCredentials => ApiError::Unavailable,
            e => e,
        })
}

/// Imports up to [`MAX_PAGE`] accounts with hashes from another system; each is checked on
/// its own and gets its own outcome.
pub(super) async fn import_users(
    service: &Service,
    users: Vec<ImportUser>,
) -> Result<Vec<ImportOutcome>, ApiError> {
    if users.len() > MAX_PAGE as usize {
        return Err(ApiError::InvalidInput {
            field: "users".into(),
            reason: format!("at most {MAX_PAGE} accounts per call"),
        });
    }
    let now = now();
    let checked: Vec<Result<NewUserRecord, ApiError>> = users
        .into_iter()
        .map(|u| service.import_record(u, now))
        .collect();
    let valid: Vec<NewUserRecord> = checked
        .iter()
        .filter_map(|c| c.as_ref().ok().cloned())
        .collect();
    let mut inserted = service.state.store.insert_users(valid).await?.into_iter();
    Ok(checked
        .into_iter()
        .map(|c| match c {
            Err(e) => Err(e),
            Ok(_) => match inserted.next() {
                Some(Ok(record)) => Ok(record.id),
                Some(Err(e)) => Err(e.into()),
                None => Err(ApiError::Unavailable),
            },
        })
        .collect())
}

impl Service {
    /// The user with this id, or `NotFound`.
    pub(super) async fn user_record(&self, id: UserId) -> Result<UserRecord, ApiError> {
        self.state.store.user(id).await?.ok_or(ApiError::NotFound)
    }

    /// Sets a new password (already checked against the policy) on `record`, with its event
    /// and notice; `InvalidCredentials` if the password changed meanwhile.
    pub(super) async fn store_new_password(
        &self,
        record: &UserRecord,
        normalised: String,
        kind: EventKind,
        client_ip: Option<&str>,
    ) -> Result<PasswordChanged, ApiError> {
        let ip = client_ip.and_then(|ip| ip.parse().ok());
        let hash = self.state.passwords.hash(normalised, self.flow(ip)).await?;
        let now = now();
        let notice = self.changed_notice(record, client_ip, now);
        let updated = self
            .state
            .store
            .set_password(
                record.id,
                record.credential_epoch,
                &hash,
                now,
                NewEvent::user(kind, record.id, client_ip.map(str::to_owned)),
                Some(&notice),
            )
            .await
            .map_err(|e| match e {
                // Someone else changed the password while we hashed: what we checked against
                // is no longer current.
                StoreError::Stale => ApiError::InvalidCredentials,
                e => e.into(),
            })?;
        self.after_new_password(record).await;
        Ok(updated.password_changed())
    }

    /// What follows a stored new password: the notice mail is sent, and whatever guessing
    /// went on ends, its login failures forgotten. A failure to forget costs the change
    /// nothing (the count is forgotten in time anyway), so it is logged only.
    pub(super) async fn after_new_password(&self, record: &UserRecord) {
        self.state.mail_wake.notify_one();
        if let Err(e) = self.state.store.forget_login_failures(&record.email).await {
            tracing::warn!(user_id = record.id, error = %e, "could not forget login failures");
        }
    }

    /// Checks one imported account and turns it into a record to insert.
    pub(super) fn import_record(
        &self,
        user: ImportUser,
        now: u64,
    ) -> Result<NewUserRecord, ApiError> {
        let email = validate::email(&user.email)?;
        crate::passwords::check_stored_hash(&user.password_hash).map_err(|reason| {
            ApiError::InvalidInput {
                field: "password_hash".into(),
                reason,
            }
        })?;
        let created_at = user.created_at.unwrap_or(now);
        if created_at > now + 86400 {
            return Err(ApiError::InvalidInput {
                field: "created_at".into(),
                reason: "lies in the future".into(),
            });
        }
        Ok(NewUserRecord {
            email,
            name: validate::name(&user.name)?,
            role: validate::role(user.role.as_deref())?,
            status: user.status.unwrap_or(UserStatus::Active),
            password_hash: user.password_hash,
            locale: validate::locale(user.locale.as_deref())?,
            created_at,
        })
    }
}
