//! The service definition and every type that crosses the socket.
//!
//! These types are the wire format: each is serialised as JSON by serde with the field names
//! written here, so renaming a field or a variant is a breaking protocol change.

use serde::{Deserialize, Serialize};

/// A user's numeric id. Ids are assigned by the daemon, never reused, and stay below 2^53 so
/// JavaScript callers can hold them in a `number`.
pub type UserId = u64;

/// Seconds since the Unix epoch (UTC).
pub type UnixTime = u64;

/// Whether an account may log in and reset its password.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    /// The account can log in and request resets.
    Active,
    /// The account is refused at login (with the same error as a wrong password) and gets no
    /// reset mail.
    Disabled,
}

/// The role a connection was given from its peer credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallerRole {
    /// An application: user and reset calls.
    App,
    /// An operator: everything an app may do plus the admin-only methods.
    Admin,
}

/// A user as the daemon reports it. The password hash never leaves the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The user's id.
    pub id: UserId,
    /// The normalised email address (trimmed, lowercased).
    pub email: String,
    /// A display name; may be empty.
    pub name: String,
    /// A free-form role label for the application (default `"user"`).
    pub role: String,
    /// Whether the account is active.
    pub status: UserStatus,
    /// Preferred locale for mail, such as `"de"` or `"pt-BR"`.
    pub locale: Option<String>,
    /// When the account was created.
    pub created_at: UnixTime,
    /// When any field of the account last changed.
    pub updated_at: UnixTime,
    /// When the password was last set.
    pub password_changed_at: UnixTime,
    /// Bumped on every password change; sessions issued under an older epoch should be dropped.
    pub credential_epoch: u64,
}

/// What `create_user` needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewUser {
    /// Email address; normalised (trimmed, lowercased) and unique.
    pub email: String,
    /// Display name (may be empty).
    #[serde(default)]
    pub name: String,
    /// The initial password, checked against the password policy.
    pub password: String,
    /// Role label; `"user"` when absent.
    #[serde(default)]
    pub role: Option<String>,
    /// Preferred locale for mail.
    #[serde(default)]
    pub locale: Option<String>,
}

/// The result of a password change: drop the user's sessions from older epochs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordChanged {
    /// Whose password changed.
    pub user_id: UserId,
    /// The user's new credential epoch.
    pub credential_epoch: u64,
}

/// The daemon's answer to `health`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `"ok"` when the daemon answers.
    pub status: String,
    /// The daemon's version.
    pub version: String,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// The role this connection was given.
    pub caller_role: CallerRole,
}

/// Errors every method may return. Stable and documented: match on the variant, show the
/// message. Internal failures are reported only as [`ApiError::Unavailable`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApiError {
    /// The email address is not a plausible address (see the protocol docs for the rules).
    #[error("invalid email address")]
    InvalidEmail,
    /// A field other than email or password is malformed; `field` names it.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The argument at fault.
        field: String,
        /// Why it was refused.
        reason: String,
    },
    /// The new password breaks the password policy.
    #[error("password refused: {reason}")]
    WeakPassword {
        /// Which rule it broke, for showing to the user.
        reason: String,
    },
    /// The password and its confirmation differ.
    #[error("the passwords do not match")]
    PasswordMismatch,
    /// An account with that email exists already.
    #[error("an account with that email exists already")]
    EmailTaken,
    /// Wrong password, unknown email or disabled account: deliberately indistinguishable.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The reset token is unknown, tampered with, expired, used or revoked.
    #[error("the reset token is invalid or expired")]
    InvalidToken,
    /// No such user (only from id-based and admin methods; email-based public methods never
    /// say whether an account exists).
    #[error("not found")]
    NotFound,
    /// The caller's role may not call this method.
    #[error("forbidden: this method needs the admin role")]
    Forbidden,
    /// Too many attempts; try again after `retry_after_secs`.
    #[error("rate limited; retry after {retry_after_secs} s")]
    RateLimited {
        /// Seconds until a retry can succeed.
        retry_after_secs: u64,
    },
    /// The daemon could not complete the call (storage failure, shutting down). Safe to retry.
    #[error("service unavailable; retry later")]
    Unavailable,
}

/// The latchkey service. Rust callers use [`crate::Client`]; other languages send the JSON
/// frames described in `docs/PROTOCOL.md`.
#[tarpc::service]
pub trait Latchkey {
    /// Liveness and the caller's role.
    async fn health() -> Result<Health, ApiError>;
    /// Creates an account.
    async fn create_user(user: NewUser) -> Result<User, ApiError>;
    /// Looks an account up by id.
    async fn get_user(id: UserId) -> Result<User, ApiError>;
    /// Looks an account up by email (normalised before the lookup).
    async fn find_user(email: String) -> Result<User, ApiError>;
    /// Checks a login. Returns the user on success; every failure is `InvalidCredentials`.
    async fn verify_password(
        email: String,
        password: String,
        client_ip: Option<String>,
    ) -> Result<User, ApiError>;
    /// Changes a password after checking the current one; revokes the user's reset tokens.
    async fn change_password(
        id: UserId,
        current_password: String,
        new_password: String,
    ) -> Result<PasswordChanged, ApiError>;
    /// Enables or disables an account (admin).
    async fn set_status(id: UserId, status: UserStatus) -> Result<User, ApiError>;
    /// Deletes an account and everything attached to it (admin).
    async fn delete_user(id: UserId) -> Result<(), ApiError>;
}

impl ApiError {
    /// The variant's name as it appears on the wire (`"InvalidCredentials"`, …), for logs,
    /// metrics and callers that switch on a string.
    ///
    /// ```
    /// assert_eq!(latchkey_client::ApiError::NotFound.code(), "NotFound");
    /// ```
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidEmail => "InvalidEmail",
            ApiError::InvalidInput { .. } => "InvalidInput",
            ApiError::WeakPassword { .. } => "WeakPassword",
            ApiError::PasswordMismatch => "PasswordMismatch",
            ApiError::EmailTaken => "EmailTaken",
            ApiError::InvalidCredentials => "InvalidCredentials",
            ApiError::InvalidToken => "InvalidToken",
            ApiError::NotFound => "NotFound",
            ApiError::Forbidden => "Forbidden",
            ApiError::RateLimited { .. } => "RateLimited",
            ApiError::Unavailable => "Unavailable",
        }
    }
}
