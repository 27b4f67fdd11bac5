//! The [`Latchkey`] service: each RPC method, its role check and its log line.

use std::future::Future;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use latchkey_client::{
    ApiError, CallerRole, Event, EventKind, Health, ImportOutcome, ImportUser, Latchkey,
    MessageState, NewUser, OutboxMessage, PasswordChanged, ResetLink, TokenCheck, TokenState, User,
    UserId, UserRef, UserStatus,
};
use tarpc::context::Context;

use arc_swap::ArcSwap;

use crate::config::{Config, EventsConfig, ResetConfig, MAX_TOKEN_LIFETIME_SECS};
use crate::limits::Limits;
use crate::mail::{MailJob, MailKind};
use crate::metrics::Metrics;
use crate::passwords::Passwords;
use crate::store::{
    self, IssuedToken, NewEvent, NewUserRecord, Store, StoreError, TokenRecord, UserRecord,
};
use crate::tokens::RawToken;
use crate::validate;

/// How long after a reset request the mail sender is woken.
const MAIL_WAKE_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

/// Most items one list call returns.
pub const MAX_PAGE: u32 = 1000;

/// Everything the methods share; lives as long as the daemon.
pub struct State {
    /// The store.
    pub store: Store,
    /// Policy and hashing.
    pub passwords: Passwords,
    /// The settings that SIGHUP can change while the daemon runs.
    pub live: ArcSwap<Live>,
    /// Wakes the mail sender when a message is queued or retried.
    pub mail_wake: Arc<tokio::sync::Notify>,
    /// Re-reads the mail templates on reload.
    pub mail_templates: crate::mail::Templates,
    /// Call counts, latencies and levels.
    pub metrics: Metrics,
    /// The configuration the daemon started with (the live parts may have changed since:
    /// read those through [`State::live`]).
    pub config: Config,
    /// When the daemon started, for uptime.
    pub started: Instant,
}

/// The settings that can change without a restart.
pub struct Live {
    /// Token lifetimes, the per-user cap, the link template.
    pub reset: ResetConfig,
    /// Event log retention.
    pub events: EventsConfig,
    /// The rate limiters, rebuilt when their settings change.
    pub limits: Arc<Limits>,
    /// The whole configuration last loaded (at start or by a reload): its live settings are
    /// in force, the others wait for a restart.
    pub applied: Config,
}

impl Live {
    /// The live part of `config`.
    pub fn from_config(config: &Config) -> Live {
        Live {
            reset: config.reset.clone(),
            events: config.events.clone(),
            limits: Arc::new(Limits::new(&config.limits)),
            applied: config.clone(),
        }
    }
}

impl State {
    /// The rate limiters in force.
    pub fn limits(&self) -> Arc<Limits> {
        self.live.load().limits.clone()
    }

    /// The reset settings in force.
    pub fn reset(&self) -> ResetConfig {
        self.live.load().reset.clone()
    }
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
    now_ms() / 1000
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Service {
    /// Runs one call: refuses it if the role does not allow it, then logs one line at info
    /// with the method, the caller and the outcome. Arguments are never logged: they hold
    /// secrets.
    async fn call<T>(
        &self,
        method: &'static str,
        needs: Needs,
        body: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        self.read(method, needs, body, |_| false).await
    }

    /// Runs a call like [`Service::call`], but logs its line at debug when it succeeds with a
    /// reply that `quiet` accepts: for calls that change nothing. A line per health check or
    /// valid token check is noise to an operator and cost a fifth of such a call's throughput
    /// (BENCHMARKS.md); refusals, errors and replies `quiet` rejects (a token that is not
    /// valid) stay at info, and metrics count every call.
    async fn read<T>(
        &self,
        method: &'static str,
        needs: Needs,
        body: impl Future<Output = Result<T, ApiError>>,
        quiet: impl FnOnce(&T) -> bool,
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
        let took = started.elapsed();
        self.state.metrics.call(method, outcome, took);
        let micros = took.as_micros() as u64;
        let (uid, pid) = (self.peer.uid, self.peer.pid);
        if result.as_ref().is_ok_and(quiet) {
            tracing::debug!(method, uid, pid, outcome, micros, "call");
        } else {
            tracing::info!(method, uid, pid, outcome, micros, "call");
        }
        result
    }

    /// The user with this id, or `NotFound`.
    fn user_record(&self, id: UserId) -> Result<UserRecord, ApiError> {
        self.state.store.user(id)?.ok_or(ApiError::NotFound)
    }

    /// The "your password was changed" notice for `user`, as outbox payload.
    fn changed_notice(&self, user: &UserRecord, client_ip: Option<&str>, now: u64) -> Vec<u8> {
        MailJob {
            kind: MailKind::PasswordChanged,
            to: user.email.clone(),
            name: user.name.clone(),
            locale: user.locale.clone(),
            link: None,
            expires_at: None,
            client_ip: client_ip.map(str::to_owned),
            at: now,
        }
        .to_bytes()
    }

    /// A fresh token for `user` (or a decoy for nobody), valid for `lifetime` seconds.
    fn new_token(
        &self,
        user: Option<&UserRecord>,
        lifetime: u64,
        now: u64,
    ) -> (RawToken, IssuedToken) {
        let raw = RawToken::generate();
        let expires_at = now + lifetime;
        let issued = IssuedToken {
            selector: raw.selector,
            record: TokenRecord {
                user_id: user.map_or(0, |u| u.id),
                verifier_hash: raw.verifier_hash(),
                credential_epoch: user.map_or(0, |u| u.credential_epoch),
                issued_at: now,
                expires_at,
                used_at: None,
                purge_at: expires_at + self.state.reset().remember_secs,
            },
        };
        (raw, issued)
    }

    /// The link for a token, from the configured template only.
    fn link(&self, token: &RawToken) -> String {
        self.state
            .reset()
            .link_template
            .replace("{token}", &token.encode())
    }

    /// Sets a new password (already checked against the policy) on `record`, with its event
    /// and notice; `InvalidCredentials` if the password changed meanwhile.
    async fn store_new_password(
        &self,
        record: &UserRecord,
        normalised: String,
        kind: EventKind,
        client_ip: Option<&str>,
    ) -> Result<PasswordChanged, ApiError> {
        let hash = self.state.passwords.hash(normalised).await?;
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
        self.state.mail_wake.notify_one();
        Ok(updated.password_changed())
    }

    /// Replaces a bcrypt or weaker argon2 hash with one at the configured parameters, after
    /// `password` matched it. A failure is logged and costs the login nothing: the old hash
    /// still works and the upgrade is tried again at the next login.
    async fn upgrade_hash(&self, record: &UserRecord, password: &str) {
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

    /// Checks one imported account and turns it into a record to insert.
    fn import_record(&self, user: ImportUser, now: u64) -> Result<NewUserRecord, ApiError> {
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

    /// Judges a presented token text.
    fn judge_token(&self, token: &str) -> Result<(Option<RawToken>, store::TokenState), ApiError> {
        let Some(raw) = RawToken::parse(token.trim()) else {
            return Ok((None, store::TokenState::Invalid));
        };
        let state = self
            .state
            .store
            .check_token(&raw.selector, &raw.verifier_hash(), now())?;
        Ok((Some(raw), state))
    }
}

/// A page size: at least 1, at most [`MAX_PAGE`].
fn page(limit: u32) -> usize {
    limit.clamp(1, MAX_PAGE) as usize
}

/// Room in a reply frame for the envelope around a list (request id, result wrappers).
const ENVELOPE_BYTES: usize = 512;

impl Service {
    /// Keeps the leading items of a page that fit in one reply frame; callers page on with the
    /// last item they got, so a shorter page loses nothing. At least one item is kept if any
    /// fits at all.
    fn fit_frame<T: serde::Serialize>(&self, mut items: Vec<T>) -> Vec<T> {
        let budget = self
            .state
            .config
            .server
            .max_frame_bytes
            .saturating_sub(ENVELOPE_BYTES);
        let mut used = 2; // the brackets
        let mut keep = 0;
        for item in &items {
            let size = serde_json::to_vec(item).map_or(usize::MAX, |v| v.len() + 1);
            if used + size > budget {
                break;
            }
            used += size;
            keep += 1;
        }
        items.truncate(keep);
        items
    }
}

impl Latchkey for Service {
    async fn health(self, _: Context) -> Result<Health, ApiError> {
        self.read(
            "health",
            Needs::App,
            async {
                Ok(Health {
                    status: "ok".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    uptime_secs: self.state.started.elapsed().as_secs(),
                    caller_role: self.peer.role,
                })
            },
            |_| true,
        )
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
        self.read(
            "get_user",
            Needs::App,
            async { Ok(self.user_record(id)?.to_api()) },
            |_| true,
        )
        .await
    }

    async fn find_user(self, _: Context, email: String) -> Result<User, ApiError> {
        self.read(
            "find_user",
            Needs::App,
            async {
                let email = validate::email(&email)?;
                let record = self.state.store.user_by_email(&email)?;
                Ok(record.ok_or(ApiError::NotFound)?.to_api())
            },
            |_| true,
        )
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
            let ip = validate::client_ip(client_ip.as_deref())?;
            // An implausible address cannot have an account; it gets the same buckets, the
            // same dummy work and the same answer as an unknown one.
            let key = email.trim().to_lowercase();
            self.state.limits().login(ip, &key)?;
            let record = match validate::email(&email) {
                Ok(email) => self.state.store.user_by_email(&email)?,
                Err(_) => None,
            };
            let hash = record.as_ref().map(|r| r.password_hash.as_str());
            let verdict = self.state.passwords.verify(&password, hash).await?;
            match record {
                Some(r) if verdict.matched && r.status == UserStatus::Active => {
                    if verdict.rehash {
                        self.upgrade_hash(&r, &password).await;
                    }
                    Ok(r.to_api())
                }
                Some(r) => {
                    let event =
                        NewEvent::user(EventKind::LoginFailed, r.id, ip.map(|i| i.to_string()));
                    self.state.store.record_event(event)?;
                    Err(ApiError::InvalidCredentials)
                }
                None => Err(ApiError::InvalidCredentials),
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
            self.state.limits().login(None, &record.email)?;
            let normalised = self
                .state
                .passwords
                .check_policy(&new_password, Some(&record.email))?;
            let verdict = self
                .state
                .passwords
                .verify(&current_password, Some(&record.password_hash))
                .await?;
            if !verdict.matched || record.status != UserStatus::Active {
                return Err(ApiError::InvalidCredentials);
            }
            self.store_new_password(&record, normalised, EventKind::PasswordChanged, None)
                .await
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
            let kind = match status {
                UserStatus::Active => EventKind::UserEnabled,
                UserStatus::Disabled => EventKind::UserDisabled,
            };
            let record = self
                .state
                .store
                .update_user(id, Some(NewEvent::user(kind, id, None)), |r| {
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

    async fn list_users(
        self,
        _: Context,
        after: UserId,
        limit: u32,
    ) -> Result<Vec<User>, ApiError> {
        self.read(
            "list_users",
            Needs::Admin,
            async {
                let users = self.state.store.users_after(after, page(limit))?;
                Ok(self.fit_frame(users.iter().map(UserRecord::to_api).collect()))
            },
            |_| true,
        )
        .await
    }

    async fn set_password(
        self,
        _: Context,
        id: UserId,
        new_password: String,
    ) -> Result<PasswordChanged, ApiError> {
        self.call("set_password", Needs::Admin, async {
            let record = self.user_record(id)?;
            let normalised = self
                .state
                .passwords
                .check_policy(&new_password, Some(&record.email))?;
            self.store_new_password(&record, normalised, EventKind::PasswordSet, None)
                .await
                .map_err(|e| match e {
                    ApiError::InvalidCredentials => ApiError::Unavailable,
                    e => e,
                })
        })
        .await
    }

    async fn request_password_reset(
        self,
        _: Context,
        email: String,
        client_ip: Option<String>,
        locale: Option<String>,
    ) -> Result<(), ApiError> {
        self.call("request_password_reset", Needs::App, async {
            let email = validate::email(&email)?;
            let ip = validate::client_ip(client_ip.as_deref())?;
            let locale = validate::locale(locale.as_deref())?;
            self.state.limits().reset_request(ip, &email)?;
            let floor = tokio::time::Instant::now()
                + std::time::Duration::from_millis(self.state.reset().reply_floor_ms);
            // From here on a known and an unknown address do the same work: one lookup, one
            // token, one sealed mail, one transaction of the same shape, one durable flush.
            let user = self.state.store.user_by_email(&email)?;
            let active = user.as_ref().filter(|u| u.status == UserStatus::Active);
            let now = now();
            let lifetime = self.state.reset().token_lifetime_secs;
            let (raw, issued) = self.new_token(active, lifetime, now);
            let job = MailJob {
                kind: MailKind::PasswordReset,
                to: email,
                name: active.map(|u| u.name.clone()).unwrap_or_default(),
                locale: active.and_then(|u| u.locale.clone()).or(locale),
                link: Some(self.link(&raw)),
                expires_at: Some(issued.record.expires_at),
                client_ip: ip.map(|i| i.to_string()),
                at: now,
            };
            let mail = job.to_bytes();
            match active {
                Some(user) => {
                    let event =
                        NewEvent::user(EventKind::ResetRequested, user.id, job.client_ip.clone());
                    let max_live = self.state.reset().max_live_tokens;
                    match self
                        .state
                        .store
                        .issue_token(&issued, max_live, Some(&mail), event)
                        .await
                    {
                        // The account changed while we worked (password changed, disabled):
                        // the caller still gets the generic answer and may ask again.
                        Ok(()) | Err(StoreError::Stale) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                None => self.state.store.issue_decoy(&issued, &mail).await?,
            }
            // The mail sender is woken a moment after the reply, and alike for every address:
            // woken at once, it would compose and write the mail while this reply is still on
            // its way, on the same cores, and a known address would answer measurably slower.
            let wake = self.state.mail_wake.clone();
            tokio::spawn(async move {
                tokio::time::sleep(MAIL_WAKE_DELAY).await;
                wake.notify_one();
            });
            // The store work of the two kinds is alike but not identical (the known one
            // touches several trees, the decoy one); the floor covers the difference.
            tokio::time::sleep_until(floor).await;
            Ok(())
        })
        .await
    }

    async fn check_reset_token(
        self,
        _: Context,
        token: String,
        client_ip: Option<String>,
    ) -> Result<TokenCheck, ApiError> {
        self.read(
            "check_reset_token",
            Needs::App,
            async {
                let ip = validate::client_ip(client_ip.as_deref())?;
                self.state.limits().token_use(ip)?;
                let (_, state) = self.judge_token(&token)?;
                Ok(match state {
                    store::TokenState::Valid { expires_at, .. } => TokenCheck {
                        state: TokenState::Valid,
                        expires_at: Some(expires_at),
                    },
                    store::TokenState::Expired => TokenCheck {
                        state: TokenState::Expired,
                        expires_at: None,
                    },
                    store::TokenState::Used => TokenCheck {
                        state: TokenState::Used,
                        expires_at: None,
                    },
                    store::TokenState::Invalid => TokenCheck {
                        state: TokenState::Invalid,
                        expires_at: None,
                    },
                })
            },
            |check| check.state == TokenState::Valid,
        )
        .await
    }

    async fn complete_password_reset(
        self,
        _: Context,
        token: String,
        new_password: String,
        confirm_password: Option<String>,
        client_ip: Option<String>,
    ) -> Result<PasswordChanged, ApiError> {
        self.call("complete_password_reset", Needs::App, async {
            let ip = validate::client_ip(client_ip.as_deref())?;
            self.state.limits().token_use(ip)?;
            // Check the token before paying for a hash, and again inside the transaction that
            // uses it.
            let (raw, state) = self.judge_token(&token)?;
            let (Some(raw), store::TokenState::Valid { user_id, .. }) = (raw, state) else {
                return Err(ApiError::InvalidToken);
            };
            if confirm_password.is_some_and(|c| c != new_password) {
                return Err(ApiError::PasswordMismatch);
            }
            let user = self
                .state
                .store
                .user(user_id)?
                .ok_or(ApiError::InvalidToken)?;
            let normalised = self
                .state
                .passwords
                .check_policy(&new_password, Some(&user.email))?;
            let hash = self.state.passwords.hash(normalised).await?;
            let now = now();
            let client_ip = ip.map(|i| i.to_string());
            let notice = self.changed_notice(&user, client_ip.as_deref(), now);
            let event = NewEvent::user(EventKind::ResetCompleted, user_id, client_ip);
            let updated = self
                .state
                .store
                .consume_token(
                    &raw.selector,
                    &raw.verifier_hash(),
                    &hash,
                    now,
                    event,
                    Some(&notice),
                )
                .await
                .map_err(|e| match e {
                    StoreError::TokenRejected => ApiError::InvalidToken,
                    e => e.into(),
                })?;
            self.state.mail_wake.notify_one();
            Ok(updated.password_changed())
        })
        .await
    }

    async fn admin_reset_link(
        self,
        _: Context,
        user: UserRef,
        lifetime_secs: Option<u64>,
    ) -> Result<ResetLink, ApiError> {
        self.call("admin_reset_link", Needs::Admin, async {
            let record = match user {
                UserRef::Id(id) => self.user_record(id)?,
                UserRef::Email(email) => {
                    let email = validate::email(&email)?;
                    self.state
                        .store
                        .user_by_email(&email)?
                        .ok_or(ApiError::NotFound)?
                }
            };
            if record.status != UserStatus::Active {
                return Err(ApiError::InvalidInput {
                    field: "user".into(),
                    reason: "the account is disabled; enable it first".into(),
                });
            }
            let lifetime = lifetime_secs.unwrap_or(self.state.reset().token_lifetime_secs);
            if lifetime == 0 || lifetime > MAX_TOKEN_LIFETIME_SECS {
                return Err(ApiError::InvalidInput {
                    field: "lifetime_secs".into(),
                    reason: format!("must be between 1 and {MAX_TOKEN_LIFETIME_SECS}"),
                });
            }
            let now = now();
            let (raw, issued) = self.new_token(Some(&record), lifetime, now);
            let event = NewEvent::user(EventKind::ResetRequested, record.id, None);
            let max_live = self.state.reset().max_live_tokens;
            self.state
                .store
                .issue_token(&issued, max_live, None, event)
                .await
                .map_err(|e| match e {
                    StoreError::Stale => ApiError::Unavailable,
                    e => e.into(),
                })?;
            Ok(ResetLink {
                user_id: record.id,
                link: self.link(&raw),
                expires_at: issued.record.expires_at,
            })
        })
        .await
    }

    async fn events(self, _: Context, after: u64, limit: u32) -> Result<Vec<Event>, ApiError> {
        self.read(
            "events",
            Needs::Admin,
            async { Ok(self.fit_frame(self.state.store.events_after(after, page(limit))?)) },
            |_| true,
        )
        .await
    }

    async fn outbox_list(
        self,
        _: Context,
        after: u64,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>, ApiError> {
        self.read(
            "outbox_list",
            Needs::Admin,
            async {
                let messages = self.state.store.mail_after(after, page(limit))?;
                Ok(self.fit_frame(messages.iter().map(outbox_view).collect()))
            },
            |_| true,
        )
        .await
    }

    async fn outbox_retry(self, _: Context, id: u64) -> Result<(), ApiError> {
        self.call("outbox_retry", Needs::Admin, async {
            self.state.store.mail_retry(id, now_ms()).await?;
            self.state.mail_wake.notify_one();
            Ok(())
        })
        .await
    }

    async fn metrics(self, _: Context) -> Result<String, ApiError> {
        self.read(
            "metrics",
            Needs::Admin,
            async {
                let state = self.state.clone();
                // Reading the outbox levels walks a tree; keep it off the async threads.
                tokio::task::spawn_blocking(move || state.metrics.render(&state))
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %e, "metrics task failed");
                        ApiError::Unavailable
                    })
            },
            |_| true,
        )
        .await
    }

    async fn import_users(
        self,
        _: Context,
        users: Vec<ImportUser>,
    ) -> Result<Vec<ImportOutcome>, ApiError> {
        self.call("import_users", Needs::Admin, async {
            if users.len() > MAX_PAGE as usize {
                return Err(ApiError::InvalidInput {
                    field: "users".into(),
                    reason: format!("at most {MAX_PAGE} accounts per call"),
                });
            }
            let now = now();
            let checked: Vec<Result<NewUserRecord, ApiError>> = users
                .into_iter()
                .map(|u| self.import_record(u, now))
                .collect();
            let valid: Vec<NewUserRecord> = checked
                .iter()
                .filter_map(|c| c.as_ref().ok().cloned())
                .collect();
            let mut inserted = self.state.store.insert_users(valid).await?.into_iter();
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
        })
        .await
    }

    async fn outbox_drop(self, _: Context, id: u64) -> Result<(), ApiError> {
        self.call("outbox_drop", Needs::Admin, async {
            self.state.store.mail_drop(id).await?;
            Ok(())
        })
        .await
    }
}

/// An outbox message as admins see it: the body stays sealed.
fn outbox_view(m: &store::OutboxMessage) -> OutboxMessage {
    let job = MailJob::from_bytes(&m.payload).ok();
    let (kind, to) = match &job {
        Some(job) => (
            match job.kind {
                MailKind::PasswordReset => "password_reset",
                MailKind::PasswordChanged => "password_changed",
            },
            job.to.clone(),
        ),
        None => ("unreadable", String::new()),
    };
    let r = &m.record;
    OutboxMessage {
        id: r.id,
        kind: kind.into(),
        to,
        state: match r.state {
            store::OutboxState::Queued => MessageState::Queued,
            store::OutboxState::Dead => MessageState::Dead,
        },
        attempts: r.attempts,
        created_at: r.created_at,
        next_attempt_at: (r.state == store::OutboxState::Queued)
            .then(|| r.next_attempt_ms.div_ceil(1000)),
        last_error: r.last_error.clone(),
    }
}
