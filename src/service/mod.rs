//! The [`Latchkey`] service: who may call each RPC method, how each call is logged, and the
//! flows behind them, one file each.
//!
//! - `accounts`: creating, reading, listing, disabling, deleting and importing accounts, and
//!   an admin setting a password.
//! - `login`: checking a password (`verify_password`) and changing it with the old one.
//! - `signup`: sign-up from an application's form, at once or concealing taken addresses.
//! - `reset`: the forgot-password flow. A token is minted in `request_password_reset` (or
//!   `admin_reset_link`), checked in `check_reset_token`, and consumed with the new password
//!   in `complete_password_reset`; its format is in `crate::tokens`, its record in
//!   `crate::store`.
//! - `outbox`: the mail the service queues (reset mails are queued by `reset`, "your password
//!   was changed" notices here) and the admin's view of the queue. Mail is sent by
//!   `crate::mail`'s sender, never on a call's path.
//! - `events`: the event log applications read to revoke their own sessions.
//! - `status`: health and metrics.
//!
//! The rate limits each flow applies live in `crate::limits`; the input checks in
//! `crate::validate`.

mod accounts;
mod backup;
mod events;
mod login;
mod outbox;
mod reset;
mod signup;
mod status;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use latchkey_client::{
    ApiError, BackupChunk, CallerRole, CredentialChanges, Event, ExportedUser, Health,
    ImportOutcome, ImportUser, Latchkey, NewUser, OutboxMessage, PasswordChanged, ResetLink,
    SignUp, SignUpOutcome, TokenCheck, TokenState, User, UserId, UserRef, UserStatus,
};
use tarpc::context::Context;

use crate::limits::LiveLimits;
use crate::metrics::Metrics;
use crate::passwords::Passwords;
use crate::store::{SharedLimit, Store};

pub use reset::ResetConfig;
pub use signup::SignUpConfig;
pub(crate) use status::render_metrics;

/// Most items one list call returns.
pub(crate) const MAX_PAGE: u32 = 1000;

/// Room in a reply frame for the envelope around a list (request id, result wrappers).
const ENVELOPE_BYTES: usize = 512;

/// A page size: at least 1, at most [`MAX_PAGE`].
fn page(limit: u32) -> usize {
    limit.clamp(1, MAX_PAGE) as usize
}

/// Everything the methods share; lives as long as the daemon.
pub(crate) struct State {
    /// The store.
    pub(crate) store: Store,
    /// Policy and hashing.
    pub(crate) passwords: Passwords,
    /// Token lifetimes, the per-user cap, the link template: SIGHUP may replace them.
    pub(crate) reset: ArcSwap<ResetConfig>,
    /// The sign-up settings: SIGHUP may replace them.
    pub(crate) signup: ArcSwap<SignUpConfig>,
    /// The rate limiters in force: SIGHUP may replace them.
    pub(crate) limits: LiveLimits,
    /// Wakes the mail sender when a message is queued or retried.
    pub(crate) mail_wake: Arc<tokio::sync::Notify>,
    /// Call counts and latencies; levels are read when scraped.
    pub(crate) metrics: Metrics,
    /// `server.max_frame_bytes`: lists are cut to fit one reply frame.
    pub(crate) max_frame_bytes: usize,
    /// When the daemon started, for uptime.
    pub(crate) started: Instant,
    /// The store monitor's latest probe, for `health`.
    pub(crate) store_probe: Arc<crate::store::ProbeCell>,
    /// The online backup being read, if any.
    pub(crate) backups: backup::Backups,
}

impl Service {
    /// The flow a hash for this call belongs to, for the fair hashing queue: the peer
    /// process, and the client the application says the call is for (by the per-IP limits'
    /// bucket), so a flood from one peer or one client address waits behind itself. Keyed
    /// under a per-process random key, so nobody can aim a flow at another's.
    pub(super) fn flow(&self, ip: Option<std::net::IpAddr>) -> crate::passwords::Flow {
        static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
            std::sync::OnceLock::new();
        let key = KEY.get_or_init(Default::default);
        let ip = ip.map(crate::limits::ip_bucket);
        crate::passwords::Flow(std::hash::BuildHasher::hash_one(
            key,
            (self.peer.uid, self.peer.pid, ip),
        ))
    }
}

impl State {
    /// The rate limiters in force.
    fn limits(&self) -> Arc<crate::limits::Limits> {
        self.limits.load_full()
    }

    /// The reset settings in force.
    fn reset(&self) -> Arc<ResetConfig> {
        self.reset.load_full()
    }

    /// The sign-up settings in force.
    fn signup(&self) -> Arc<SignUpConfig> {
        self.signup.load_full()
    }

    /// Takes one call from the limit `limit` for `key` across every host sharing the store
    /// (after the in-process buckets, which count this host's calls only).
    async fn take_shared(&self, limit: SharedLimit, key: &str) -> Result<(), ApiError> {
        let limits = self.limits();
        let rate = match limit {
            SharedLimit::ResetPerEmail => limits.config().reset_per_email,
            SharedLimit::SignUpPerEmail => limits.config().signup_per_email,
        };
        let now_ms = crate::clock::now_ms();
        match self
            .store
            .take_shared(limit, key, rate.burst, rate.per_secs, now_ms)
            .await?
        {
            None => Ok(()),
            Some(retry_after_secs) => Err(ApiError::RateLimited { retry_after_secs }),
        }
    }
}

/// Who is on the other end of a connection, from the kernel's peer credentials.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer {
    /// The peer's uid.
    pub(crate) uid: u32,
    /// The peer's pid, when the kernel reports it.
    pub(crate) pid: Option<i32>,
    /// The role the connection was given.
    pub(crate) role: CallerRole,
}

/// One connection's view of the service: shared state plus the peer. Cloned per request.
#[derive(Clone)]
pub(crate) struct Service {
    /// Shared state.
    pub(crate) state: Arc<State>,
    /// The connection's peer.
    pub(crate) peer: Peer,
}

/// Which role a method needs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Needs {
    /// Every role, monitors included: health and metrics.
    Monitor,
    /// Apps and admins.
    App,
    /// Admins only.
    Admin,
}

impl Needs {
    /// Whether `role` may make a call that needs this.
    fn allows(self, role: CallerRole) -> bool {
        match self {
            Needs::Monitor => true,
            Needs::App => matches!(role, CallerRole::App | CallerRole::Admin),
            Needs::Admin => role == CallerRole::Admin,
        }
    }
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
        let result = if !needs.allows(self.peer.role) {
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

    /// Keeps the leading items of a page that fit in one reply frame; callers page on with the
    /// last item they got, so a shorter page loses nothing. At least one item is kept if any
    /// fits at all.
    fn fit_frame<T: serde::Serialize>(&self, mut items: Vec<T>) -> Vec<T> {
        let budget = self.state.max_frame_bytes.saturating_sub(ENVELOPE_BYTES);
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

/// The dispatch table: each method, the role it needs, and whether a success is logged at
/// info (`call`: it changes something, or is a login) or at debug (`read`).
impl Latchkey for Service {
    async fn health(self, _: Context) -> Result<Health, ApiError> {
        self.read("health", Needs::Monitor, status::health(&self), |_| true)
            .await
    }

    async fn create_user(
        self,
        _: Context,
        user: NewUser,
        client_ip: Option<String>,
    ) -> Result<User, ApiError> {
        self.call(
            "create_user",
            Needs::App,
            accounts::create_user(&self, user, client_ip),
        )
        .await
    }

    async fn sign_up(
        self,
        _: Context,
        user: SignUp,
        client_ip: Option<String>,
    ) -> Result<SignUpOutcome, ApiError> {
        self.call(
            "sign_up",
            Needs::App,
            signup::sign_up(&self, user, client_ip),
        )
        .await
    }

    async fn confirm_sign_up(
        self,
        _: Context,
        token: String,
        password: String,
        client_ip: Option<String>,
    ) -> Result<User, ApiError> {
        self.call(
            "confirm_sign_up",
            Needs::App,
            signup::confirm_sign_up(&self, token, password, client_ip),
        )
        .await
    }

    async fn get_user(self, _: Context, id: UserId) -> Result<User, ApiError> {
        self.read(
            "get_user",
            Needs::App,
            accounts::get_user(&self, id),
            |_| true,
        )
        .await
    }

    async fn find_user(self, _: Context, email: String) -> Result<User, ApiError> {
        self.read(
            "find_user",
            Needs::App,
            accounts::find_user(&self, email),
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
        self.call(
            "verify_password",
            Needs::App,
            login::verify_password(&self, email, password, client_ip),
        )
        .await
    }

    async fn change_password(
        self,
        _: Context,
        id: UserId,
        current_password: String,
        new_password: String,
    ) -> Result<PasswordChanged, ApiError> {
        self.call(
            "change_password",
            Needs::App,
            login::change_password(&self, id, current_password, new_password),
        )
        .await
    }

    async fn set_status(
        self,
        _: Context,
        id: UserId,
        status: UserStatus,
    ) -> Result<User, ApiError> {
        self.call(
            "set_status",
            Needs::Admin,
            accounts::set_status(&self, id, status),
        )
        .await
    }

    async fn delete_user(self, _: Context, id: UserId) -> Result<(), ApiError> {
        self.call(
            "delete_user",
            Needs::Admin,
            accounts::delete_user(&self, id),
        )
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
            accounts::list_users(&self, after, limit),
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
        self.call(
            "set_password",
            Needs::Admin,
            accounts::set_password(&self, id, new_password),
        )
        .await
    }

    async fn request_password_reset(
        self,
        _: Context,
        email: String,
        client_ip: Option<String>,
        locale: Option<String>,
    ) -> Result<(), ApiError> {
        self.call(
            "request_password_reset",
            Needs::App,
            reset::request_password_reset(&self, email, client_ip, locale),
        )
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
            reset::check_reset_token(&self, token, client_ip),
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
        self.call(
            "complete_password_reset",
            Needs::App,
            reset::complete_password_reset(&self, token, new_password, confirm_password, client_ip),
        )
        .await
    }

    async fn admin_reset_link(
        self,
        _: Context,
        user: UserRef,
        lifetime_secs: Option<u64>,
    ) -> Result<ResetLink, ApiError> {
        self.call(
            "admin_reset_link",
            Needs::Admin,
            reset::admin_reset_link(&self, user, lifetime_secs),
        )
        .await
    }

    async fn events(self, _: Context, after: u64, limit: u32) -> Result<Vec<Event>, ApiError> {
        self.read(
            "events",
            Needs::Admin,
            events::events(&self, after, limit),
            |_| true,
        )
        .await
    }

    async fn credential_changes(
        self,
        _: Context,
        after: u64,
        limit: u32,
    ) -> Result<CredentialChanges, ApiError> {
        self.read(
            "credential_changes",
            Needs::App,
            events::credential_changes(&self, after, limit),
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
            outbox::outbox_list(&self, after, limit),
            |_| true,
        )
        .await
    }

    async fn outbox_retry(self, _: Context, id: u64) -> Result<(), ApiError> {
        self.call(
            "outbox_retry",
            Needs::Admin,
            outbox::outbox_retry(&self, id),
        )
        .await
    }

    async fn metrics(self, _: Context) -> Result<String, ApiError> {
        self.read("metrics", Needs::Monitor, status::metrics(&self), |_| true)
            .await
    }

    async fn import_users(
        self,
        _: Context,
        users: Vec<ImportUser>,
    ) -> Result<Vec<ImportOutcome>, ApiError> {
        self.call(
            "import_users",
            Needs::Admin,
            accounts::import_users(&self, users),
        )
        .await
    }

    async fn export_users(
        self,
        _: Context,
        after: UserId,
        limit: u32,
    ) -> Result<Vec<ExportedUser>, ApiError> {
        // At info, like a write: it hands out password hashes.
        self.call(
            "export_users",
            Needs::Admin,
            accounts::export_users(&self, after, limit),
        )
        .await
    }

    async fn backup_read(self, _: Context, session: Option<u64>) -> Result<BackupChunk, ApiError> {
        // At debug when it goes on: a backup is thousands of calls, and its start and end are
        // logged at info on their own.
        self.read(
            "backup_read",
            Needs::Admin,
            backup::backup_read(&self, session),
            |_| session.is_some(),
        )
        .await
    }

    async fn backup_cancel(self, _: Context, session: u64) -> Result<(), ApiError> {
        self.call(
            "backup_cancel",
            Needs::Admin,
            backup::backup_cancel(&self, session),
        )
        .await
    }

    async fn outbox_drop(self, _: Context, id: u64) -> Result<(), ApiError> {
        self.call("outbox_drop", Needs::Admin, outbox::outbox_drop(&self, id))
            .await
    }
}
