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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CallerRole {
    /// An application: user and reset calls.
    App,
    /// An operator: everything an app may do plus the admin-only methods.
    Admin,
    /// A monitoring agent (`auth.monitor_uids`, `auth.monitor_gids`): `health` and `metrics`
    /// only, so a scraper holds no connection that can read or change accounts.
    Monitor,
}

/// A user as the daemon reports it. The password hash never leaves the daemon.
///
/// ```
/// let json = r#"{"id":1,"email":"ada@example.com","name":"Ada","role":"user",
///   "status":"active","locale":null,"created_at":1,"updated_at":1,
///   "password_changed_at":1,"credential_epoch":0}"#;
/// let user: latchkey_client::User = serde_json::from_str(json).unwrap();
/// assert_eq!(user.status, latchkey_client::UserStatus::Active);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
    /// Bumped on every password change and when the account is disabled; sessions issued
    /// under an older epoch should be dropped.
    pub credential_epoch: u64,
}

/// What `create_user` needs.
///
/// ```
/// let new = latchkey_client::NewUser {
///     email: "ada@example.com".into(),
///     name: "Ada".into(),
///     password: "correct horse battery staple".into(),
///     role: None,
///     locale: Some("en".into()),
/// };
/// assert_eq!(serde_json::to_value(&new).unwrap()["email"], "ada@example.com");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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

/// What `sign_up` needs: an account as a person asks for it on an application's sign-up
/// form. Unlike [`NewUser`] it has no role: every account a sign-up makes gets `"user"`.
///
/// ```
/// let form = latchkey_client::SignUp {
///     email: "ada@example.com".into(),
///     name: "Ada".into(),
///     password: "correct horse battery staple".into(),
///     locale: None,
/// };
/// assert_eq!(serde_json::to_value(&form).unwrap()["email"], "ada@example.com");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SignUp {
    /// Email address; normalised and unique.
    pub email: String,
    /// Display name (may be empty).
    #[serde(default)]
    pub name: String,
    /// The password, checked against the password policy.
    pub password: String,
    /// Preferred locale for mail.
    #[serde(default)]
    pub locale: Option<String>,
}

/// How a sign-up went, as the daemon's `[signup]` settings make it go.
///
/// ```
/// use latchkey_client::SignUpOutcome;
/// assert_eq!(
///     serde_json::to_string(&SignUpOutcome::ConfirmationSent).unwrap(),
///     r#"{"outcome":"confirmation_sent"}"#
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SignUpOutcome {
    /// The account exists now (`signup.conceal_taken_addresses = false`, the default); a
    /// taken address is refused with [`ApiError::EmailTaken`] instead.
    Created {
        /// The new account.
        user: User,
    },
    /// A mail went to the address (`signup.conceal_taken_addresses = true`): a link to
    /// finish the sign-up if the address had no account, a notice to its owner if it had.
    /// The reply is the same either way; the account exists once the link is used, with
    /// the password, through `confirm_sign_up`. Tell the person to check their mail.
    ConfirmationSent,
}

/// The result of a password change: drop the user's sessions from older epochs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PasswordChanged {
    /// Whose password changed.
    pub user_id: UserId,
    /// The user's new credential epoch.
    pub credential_epoch: u64,
}

/// The daemon's answer to `health`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Health {
    /// Always `"ok"` when the daemon answers.
    pub status: String,
    /// The daemon's version.
    pub version: String,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// The role this connection was given.
    pub caller_role: CallerRole,
    /// How the store answered the daemon's latest probe (every 2 s, or at half the systemd
    /// watchdog interval): `"ok"`, `"unreachable"` (the database refuses connections or is
    /// restarting; calls that need it answer `Unavailable` until it is back) or `"stalled"`
    /// (it did not answer in time). Empty from an older daemon, which does not send it.
    #[serde(default)]
    pub store: String,
    /// The protocol version the daemon speaks ([`PROTOCOL_VERSION`]); 1 from a daemon older
    /// than the field, which does not send it.
    #[serde(default = "protocol_one")]
    pub protocol: u32,
    /// Every method the daemon has, by its wire name (`"CreateUser"`, …; see [`METHODS`]).
    /// Empty from a daemon older than protocol 2. A method missing here is answered with an
    /// "unknown method" server error: the daemon is too old for it.
    #[serde(default)]
    pub methods: Vec<String>,
}

/// The protocol version of daemons that predate [`Health::protocol`].
fn protocol_one() -> u32 {
    1
}

/// The protocol version this crate speaks, as `health` reports it.
///
/// - 1: the first release.
/// - 2: a request that cannot run is answered with a server error for its id instead of
///   closing the connection; `health` reports `protocol` and `methods`; the monitor role;
///   `credential_changes` for apps.
///
/// A version goes up when a method or a field is added; nothing is ever removed or renamed
/// within the wire format (see `docs/PROTOCOL.md`).
pub const PROTOCOL_VERSION: u32 = 2;

/// Every method of the service by its wire name (the variant of the request enum, the key of
/// a request's `message`), in the order the trait declares them. The daemon reports its own
/// list in [`Health::methods`].
///
/// ```
/// assert!(latchkey_client::METHODS.contains(&"RequestPasswordReset"));
/// ```
pub const METHODS: &[&str] = &[
    "Health",
    "CreateUser",
    "SignUp",
    "ConfirmSignUp",
    "GetUser",
    "FindUser",
    "VerifyPassword",
    "ChangePassword",
    "SetStatus",
    "DeleteUser",
    "ListUsers",
    "SetPassword",
    "RequestPasswordReset",
    "CheckResetToken",
    "CompletePasswordReset",
    "AdminResetLink",
    "Events",
    "CredentialChanges",
    "OutboxList",
    "OutboxRetry",
    "OutboxDrop",
    "Metrics",
    "ImportUsers",
    "ExportUsers",
    "BackupRead",
    "BackupCancel",
];

/// What a presented reset token amounts to.
///
/// ```
/// use latchkey_client::TokenState;
/// let message = |state| match state {
///     TokenState::Valid => "choose a new password",
///     TokenState::Expired => "this link has expired; ask for a new one",
///     TokenState::Used => "this link was used already",
///     // A newer daemon may add states: treat one like an invalid link.
///     _ => "this link is not valid",
/// };
/// assert_eq!(message(TokenState::Used), "this link was used already");
/// assert_eq!(serde_json::to_string(&TokenState::Valid).unwrap(), r#""valid""#);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TokenState {
    /// Usable now; show the new-password form.
    Valid,
    /// Genuine but past its expiry; offer to send a new link.
    Expired,
    /// Genuine but used already; the password was reset with it.
    Used,
    /// Unknown, malformed, tampered with, revoked, or issued before a later password change.
    Invalid,
}

/// The answer to `check_reset_token`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TokenCheck {
    /// What the token amounts to.
    pub state: TokenState,
    /// When it expires (only for a valid token).
    pub expires_at: Option<UnixTime>,
}

/// A reset link made by an admin for support staff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ResetLink {
    /// The account it resets.
    pub user_id: UserId,
    /// The link, from the configured template.
    pub link: String,
    /// When it expires.
    pub expires_at: UnixTime,
}

/// Names an account by id or by email.
///
/// ```
/// use latchkey_client::UserRef;
/// assert_eq!(serde_json::to_string(&UserRef::Id(3)).unwrap(), r#"{"id":3}"#);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum UserRef {
    /// By id: `{"id": 3}`.
    Id(UserId),
    /// By email: `{"email": "ada@example.com"}`.
    Email(String),
}

/// Where a queued message stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MessageState {
    /// Waiting for its next delivery attempt.
    Queued,
    /// Delivery gave up (permanent rejection or too many attempts); retry or drop it.
    Dead,
}

/// A message in the outbox, as admins see it. The body (which may hold a reset link) is
/// never shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct OutboxMessage {
    /// The message id.
    pub id: u64,
    /// `"password_reset"` or `"password_changed"`.
    pub kind: String,
    /// The recipient address.
    pub to: String,
    /// Queued or dead.
    pub state: MessageState,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// When it was queued.
    pub created_at: UnixTime,
    /// When the next attempt is due (queued messages).
    pub next_attempt_at: Option<UnixTime>,
    /// The last delivery error (an SMTP reply or I/O error).
    pub last_error: Option<String>,
}

/// An account brought in from another system by `import_users`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ImportUser {
    /// Email address; normalised and unique.
    pub email: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Role label; `"user"` when absent.
    #[serde(default)]
    pub role: Option<String>,
    /// Active unless given.
    #[serde(default)]
    pub status: Option<UserStatus>,
    /// The existing hash: bcrypt (`$2a$`, `$2b$`, `$2y$`) or an argon2 PHC string. It is
    /// replaced by an argon2id hash with the configured parameters at the first successful
    /// login.
    pub password_hash: String,
    /// Preferred locale for mail.
    #[serde(default)]
    pub locale: Option<String>,
    /// When the account was created in the old system (Unix seconds); now when absent.
    #[serde(default)]
    pub created_at: Option<UnixTime>,
}

/// One account as `export_users` gives it: exactly what `import_users` takes, password hash
/// included, with the id it has in this store (which an import ignores).
///
/// ```
/// use latchkey_client::{ExportedUser, ImportUser, UserStatus};
/// let line = r#"{"id":7,"email":"ada@example.com","name":"Ada","role":"user","status":"active","password_hash":"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA","locale":null,"created_at":1700000000}"#;
/// let exported: ExportedUser = serde_json::from_str(line).unwrap();
/// assert_eq!(exported.id, 7);
/// assert_eq!(exported.account.status, Some(UserStatus::Active));
/// // Without the id, the same line is an ImportUser.
/// let account: ImportUser = serde_json::from_str(line).unwrap();
/// assert_eq!(account, exported.account);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ExportedUser {
    /// The account's id in the store it was exported from.
    pub id: UserId,
    /// The account, in the form `import_users` takes.
    #[serde(flatten)]
    pub account: ImportUser,
}

/// One piece of a backup file, as `backup_read` gives it. Written one after the other, the
/// pieces of one session are the file (see the README's "Backups").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BackupChunk {
    /// The backup's session: pass it to the next `backup_read`.
    pub session: u64,
    /// The next bytes of the file, base64 (standard alphabet, padded).
    pub data: String,
    /// Whether this is the last piece: the file is complete and the session is over.
    pub last: bool,
}

/// One imported account's outcome: its new id, or why it was skipped.
pub type ImportOutcome = Result<UserId, ApiError>;

/// What happened, in the event log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// An account was created.
    UserCreated,
    /// A reset was requested for an existing, active account (requests for unknown or
    /// disabled accounts leave no event).
    ResetRequested,
    /// A reset token was used to set a new password.
    ResetCompleted,
    /// The user changed their password with the current one.
    PasswordChanged,
    /// An admin set the password.
    PasswordSet,
    /// A login failed for an existing account.
    LoginFailed,
    /// The account was disabled.
    UserDisabled,
    /// The account was enabled.
    UserEnabled,
    /// The account was deleted.
    UserDeleted,
}

/// One entry of the append-only event log. Holds no secret.
///
/// ```no_run
/// # async fn demo(client: latchkey_client::Client, mut cursor: u64) -> Result<(), latchkey_client::Error> {
/// use latchkey_client::EventKind;
/// for event in client.events(cursor, 100).await? {
///     cursor = event.seq;
///     if matches!(event.kind, EventKind::ResetCompleted | EventKind::PasswordChanged) {
///         // drop the sessions of event.user_id
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Event {
    /// Position in the log; pass the last one seen as the cursor of the next `events` call.
    pub seq: u64,
    /// When it happened.
    pub at: UnixTime,
    /// What happened.
    pub kind: EventKind,
    /// The account concerned.
    pub user_id: Option<UserId>,
    /// The client IP the application passed with the call, if any.
    pub client_ip: Option<String>,
}

/// One change to an account's credentials, as `credential_changes` reports it to apps: the
/// account's sessions from before it should end. No client IP and no secret.
///
/// ```
/// let json = r#"{"seq":9,"at":1795319591,"kind":"reset_completed","user_id":1}"#;
/// let change: latchkey_client::CredentialChange = serde_json::from_str(json).unwrap();
/// assert_eq!(change.user_id, 1);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CredentialChange {
    /// Its position in the event log.
    pub seq: u64,
    /// When it happened.
    pub at: UnixTime,
    /// What happened: `reset_completed`, `password_changed`, `password_set`, `user_disabled`
    /// or `user_deleted` (a later daemon may add kinds: treat any kind as "end the sessions").
    pub kind: EventKind,
    /// Whose credentials changed.
    pub user_id: UserId,
}

/// A page of [`CredentialChange`]s: read on with `next` as the cursor.
///
/// ```no_run
/// # async fn demo(client: latchkey_client::Client, mut cursor: u64) -> Result<(), latchkey_client::Error> {
/// loop {
///     let page = client.credential_changes(cursor, 100).await?;
///     for change in &page.changes {
///         // end the sessions of change.user_id issued before change.at
///     }
///     cursor = page.next;
///     if page.caught_up {
///         break; // wait a while, then poll again from `cursor`
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CredentialChanges {
    /// The changes after the cursor, oldest first.
    pub changes: Vec<CredentialChange>,
    /// The cursor for the next call: past every event this call looked at, which may be
    /// beyond the last change (the other events of the log are skipped, not returned).
    pub next: u64,
    /// Whether this call reached the end of the log: poll again later from `next`.
    pub caught_up: bool,
}

/// Errors every method may return. Stable and documented: match on the variant, show the
/// message. Internal failures are reported only as [`ApiError::Unavailable`].
///
/// ```
/// use latchkey_client::ApiError;
/// let e = ApiError::RateLimited { retry_after_secs: 60 };
/// assert_eq!(e.to_string(), "rate limited; retry after 60 s");
/// // On the wire: {"RateLimited":{"retry_after_secs":60}}; unit variants are plain strings.
/// assert_eq!(serde_json::to_string(&e).unwrap(), r#"{"RateLimited":{"retry_after_secs":60}}"#);
/// assert_eq!(serde_json::to_string(&ApiError::NotFound).unwrap(), r#""NotFound""#);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
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
    /// The caller's role may not call this method (an app calling an admin method, a
    /// monitor anything but `health` and `metrics`).
    #[error("forbidden: this connection's role may not call this method")]
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
#[cfg_attr(not(feature = "schema"), tarpc::service)]
#[cfg_attr(
    feature = "schema",
    tarpc::service(derive = [serde::Serialize, serde::Deserialize, schemars::JsonSchema])
)]
pub trait Latchkey {
    /// Liveness and the caller's role.
    async fn health() -> Result<Health, ApiError>;
    /// Creates an account; `client_ip` (optional, absent from older clients) is the address
    /// the sign-up came from, for the per-IP sign-up limit.
    async fn create_user(user: NewUser, client_ip: Option<String>) -> Result<User, ApiError>;
    /// Signs a person up from an application's form: per `[signup]`, creates the account at
    /// once, or (concealing taken addresses) mails a link to finish and answers the same for
    /// every address. Rate-limited per client IP and per address.
    async fn sign_up(user: SignUp, client_ip: Option<String>) -> Result<SignUpOutcome, ApiError>;
    /// Finishes a concealed sign-up: the token from the mailed link and the password chosen
    /// at sign-up create the account. `InvalidToken` for a link that is not (or no longer)
    /// valid, `InvalidCredentials` for a wrong password (5 of them kill the link).
    async fn confirm_sign_up(
        token: String,
        password: String,
        client_ip: Option<String>,
    ) -> Result<User, ApiError>;
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
    /// Lists accounts in id order after `after` (0 for the start), at most `limit` (admin).
    /// A page holds at most 1000 items and only as many as fit in one frame: page on with the
    /// last id received until a page comes back empty.
    async fn list_users(after: UserId, limit: u32) -> Result<Vec<User>, ApiError>;
    /// Sets a password without the current one (admin); revokes reset tokens, bumps the epoch.
    async fn set_password(id: UserId, new_password: String) -> Result<PasswordChanged, ApiError>;
    /// Starts a reset. Always `Ok(())` for a valid address, whether or not it has an account;
    /// an active account gets a mail with a link.
    async fn request_password_reset(
        email: String,
        client_ip: Option<String>,
        locale: Option<String>,
    ) -> Result<(), ApiError>;
    /// Says whether a token is usable, without using it.
    async fn check_reset_token(
        token: String,
        client_ip: Option<String>,
    ) -> Result<TokenCheck, ApiError>;
    /// Uses a token to set a new password; revokes every other token of the user.
    async fn complete_password_reset(
        token: String,
        new_password: String,
        confirm_password: Option<String>,
        client_ip: Option<String>,
    ) -> Result<PasswordChanged, ApiError>;
    /// Makes a reset link for support staff (admin). `lifetime_secs` defaults to the
    /// configured token lifetime and is capped at 24 hours.
    async fn admin_reset_link(
        user: UserRef,
        lifetime_secs: Option<u64>,
    ) -> Result<ResetLink, ApiError>;
    /// Events after the cursor `after` (0 for the start), oldest first, at most `limit` (admin);
    /// pages like `list_users`.
    async fn events(after: u64, limit: u32) -> Result<Vec<Event>, ApiError>;
    /// The credential changes (password reset, changed or set; account disabled or deleted)
    /// after the cursor `after`, at most `limit`, for an application to end the sessions they
    /// outdate (app role: unlike `events`, no login failures and no client IPs). Page on with
    /// the reply's `next` until it is `caught_up`.
    async fn credential_changes(after: u64, limit: u32) -> Result<CredentialChanges, ApiError>;
    /// Outbox messages with ids above `after`, at most `limit` (admin); pages like
    /// `list_users`.
    async fn outbox_list(after: u64, limit: u32) -> Result<Vec<OutboxMessage>, ApiError>;
    /// Puts a message back in the queue, due now, attempts reset (admin).
    async fn outbox_retry(id: u64) -> Result<(), ApiError>;
    /// Deletes a message unsent (admin).
    async fn outbox_drop(id: u64) -> Result<(), ApiError>;
    /// Metrics in the Prometheus text format (every role: admin, app and monitor).
    async fn metrics() -> Result<String, ApiError>;
    /// Imports accounts with existing password hashes (admin); at most 1000 per call. Each
    /// account succeeds or fails on its own; the outcomes come back in order.
    async fn import_users(users: Vec<ImportUser>) -> Result<Vec<ImportOutcome>, ApiError>;
    /// Accounts in id order after `after` (0 for the start), at most `limit`, with their
    /// password hashes, in the form `import_users` takes (admin); pages like `list_users`.
    /// Each call is logged at info with the number of accounts it gave out.
    async fn export_users(after: UserId, limit: u32) -> Result<Vec<ExportedUser>, ApiError>;
    /// Reads an online backup of the store (admin): `None` starts one at this instant, then
    /// pass the chunk's `session` until a chunk is `last`. One backup runs at a time; one left
    /// without a call for 60 s is abandoned. Logged at info when it starts and ends.
    async fn backup_read(session: Option<u64>) -> Result<BackupChunk, ApiError>;
    /// Abandons a backup before its last chunk (admin), so another may start.
    async fn backup_cancel(session: u64) -> Result<(), ApiError>;
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
