//! The forgot-password flow: a reset is requested (`request_password_reset`, the same work
//! and answer for every address) or a link made by an admin (`admin_reset_link`); the token
//! minted there is checked (`check_reset_token`) and consumed with the new password
//! (`complete_password_reset`). The `[reset]` settings live here too.

use latchkey_client::{
    ApiError, EventKind, PasswordChanged, ResetLink, TokenCheck, TokenState, UserRef, UserStatus,
};
use serde::{Deserialize, Serialize};

use super::Service;
use crate::clock::now;
use crate::mail::{MailJob, MailKind};
use crate::setting::BadSetting;
use crate::store::{self, IssuedToken, NewEvent, SharedLimit, StoreError, TokenRecord, UserRecord};
use crate::tokens::RawToken;
use crate::validate;

/// How long after a reset request the mail sender is woken.
const MAIL_WAKE_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

/// Reset tokens and links.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResetConfig {
    /// How long a mailed reset link stays valid; at most 86400 (24 hours).
    pub token_lifetime_secs: u64,
    /// Live tokens per user; issuing another revokes the oldest.
    pub max_live_tokens: usize,
    /// The link sent to users; `{token}` is replaced by the token. Never built from anything a
    /// caller sends.
    pub link_template: String,
    /// How long a used or expired token is remembered, so a second click is told "used" or
    /// "expired" instead of "invalid".
    pub remember_secs: u64,
    /// How often expired tokens are swept.
    pub sweep_interval_secs: u64,
    /// `request_password_reset` answers no sooner than this many milliseconds after it
    /// started, for known and unknown addresses alike: the floor hides what differences in
    /// work remain between the two. Keep it above the call's usual duration.
    pub reply_floor_ms: u64,
}

impl Default for ResetConfig {
    fn default() -> Self {
        ResetConfig {
            token_lifetime_secs: 1800,
            max_live_tokens: 3,
            link_template: "http://localhost:3000/reset-password?token={token}".into(),
            remember_secs: 86400,
            sweep_interval_secs: 60,
            reply_floor_ms: 10,
        }
    }
}

/// The longest a reset token may live.
pub const MAX_TOKEN_LIFETIME_SECS: u64 = 86400;

impl ResetConfig {
    /// Checks values that parse but make no sense.
    pub(crate) fn validate(&self) -> Result<(), BadSetting> {
        if self.token_lifetime_secs == 0 || self.token_lifetime_secs > MAX_TOKEN_LIFETIME_SECS {
            return Err(BadSetting::new(
                "reset.token_lifetime_secs",
                "must be between 1 and 86400 (24 hours)",
            ));
        }
        if self.max_live_tokens == 0 {
            return Err(BadSetting::new(
                "reset.max_live_tokens",
                "must be at least 1",
            ));
        }
        if self.link_template.matches("{token}").count() != 1 {
            return Err(BadSetting::new(
                "reset.link_template",
                "must contain {token} exactly once",
            ));
        }
        if self.reply_floor_ms > 10_000 {
            return Err(BadSetting::new(
                "reset.reply_floor_ms",
                "must be at most 10000",
            ));
        }
        if self.sweep_interval_secs == 0 {
            return Err(BadSetting::new(
                "reset.sweep_interval_secs",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// A fresh token for `user` (or a decoy for nobody), valid for `lifetime` seconds.
    pub(super) fn new_token(
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
                purge_at: expires_at + self.remember_secs,
            },
        };
        (raw, issued)
    }

    /// The link for a token, from the configured template only.
    pub(super) fn link(&self, token: &RawToken) -> String {
        self.link_template.replace("{token}", &token.encode())
    }
}

/// Mints a token and queues the reset mail for an active account; for any other address
/// does the same work against the decoy tree. Every caller gets the same answer, no sooner
/// than the reply floor.
pub(super) async fn request_password_reset(
    service: &Service,
    email: String,
    client_ip: Option<String>,
    locale: Option<String>,
) -> Result<(), ApiError> {
    let email = validate::email(&email)?;
    let ip = validate::client_ip(client_ip.as_deref())?;
    let locale = validate::locale(locale.as_deref())?;
    // The floor runs from here, so that it covers the shared limit's round trip as well.
    let reset = service.state.reset();
    let floor =
        tokio::time::Instant::now() + std::time::Duration::from_millis(reset.reply_floor_ms);
    service.state.limits().reset_request(ip, &email)?;
    service
        .state
        .take_shared(SharedLimit::ResetPerEmail, &email)
        .await?;
    // From here on a known and an unknown address do the same work: one lookup, one
    // token, one sealed mail, one transaction of the same shape, one durable flush.
    let user = service.state.store.user_by_email(&email).await?;
    let active = user.as_ref().filter(|u| u.status == UserStatus::Active);
    let now = now();
    let (raw, issued) = reset.new_token(active, reset.token_lifetime_secs, now);
    let job = MailJob {
        kind: MailKind::PasswordReset,
        to: email,
        locale: active.and_then(|u| u.locale.clone()).or(locale),
        link: Some(reset.link(&raw)),
        expires_at: Some(issued.record.expires_at),
        client_ip: ip.map(|i| i.to_string()),
        at: now,
    };
    let mail = job.to_bytes();
    match active {
        Some(user) => {
            let event = NewEvent::user(EventKind::ResetRequested, user.id, job.client_ip.clone());
            let max_live = reset.max_live_tokens;
            match service
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
        None => service.state.store.issue_decoy(&issued, &mail).await?,
    }
    // The mail sender is woken a moment after the reply, and alike for every address:
    // woken at once, it would compose and write the mail while this reply is still on
    // its way, on the same cores, and a known address would answer measurably slower.
    let wake = service.state.mail_wake.clone();
    tokio::spawn(async move {
        tokio::time::sleep(MAIL_WAKE_DELAY).await;
        wake.notify_one();
    });
    // The store work of the two kinds is alike but not identical (the known one
    // touches several trees, the decoy one); the floor covers the difference.
    tokio::time::sleep_until(floor).await;
    Ok(())
}

/// Checks a token without using it: valid (with its expiry), expired, used or invalid.
pub(super) async fn check_reset_token(
    service: &Service,
    token: String,
    client_ip: Option<String>,
) -> Result<TokenCheck, ApiError> {
    let ip = validate::client_ip(client_ip.as_deref())?;
    service.state.limits().token_use(ip)?;
    let (_, state) = service.judge_token(&token).await?;
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
}

/// Consumes a token with the new password: checked before hashing and again in the one
/// transaction that sets the hash, marks the token used, revokes the others and queues
/// the notice.
pub(super) async fn complete_password_reset(
    service: &Service,
    token: String,
    new_password: String,
    confirm_password: Option<String>,
    client_ip: Option<String>,
) -> Result<PasswordChanged, ApiError> {
    let ip = validate::client_ip(client_ip.as_deref())?;
    service.state.limits().token_use(ip)?;
    // Check the token before paying for a hash, and again inside the transaction that
    // uses it.
    let (raw, state) = service.judge_token(&token).await?;
    let (Some(raw), store::TokenState::Valid { user_id, .. }) = (raw, state) else {
        return Err(ApiError::InvalidToken);
    };
    if confirm_password.is_some_and(|c| c != new_password) {
        return Err(ApiError::PasswordMismatch);
    }
    let user = service
        .state
        .store
        .user(user_id)
        .await?
        .ok_or(ApiError::InvalidToken)?;
    let normalised = service
        .state
        .passwords
        .check_policy(&new_password, Some(&user.email))?;
    let hash = service
        .state
        .passwords
        .hash(normalised, service.flow(ip))
        .await?;
    let now = now();
    let client_ip = ip.map(|i| i.to_string());
    let notice = service.changed_notice(&user, client_ip.as_deref(), now);
    let event = NewEvent::user(EventKind::ResetCompleted, user_id, client_ip);
    let updated = service
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
    service.after_new_password(&updated).await;
    Ok(updated.password_changed())
}

/// Mints a token for support staff to hand over, without mail; up to 24 hours.
pub(super) async fn admin_reset_link(
    service: &Service,
    user: UserRef,
    lifetime_secs: Option<u64>,
) -> Result<ResetLink, ApiError> {
    let record = match user {
        UserRef::Id(id) => service.user_record(id).await?,
        UserRef::Email(email) => {
            let email = validate::email(&email)?;
            service
                .state
                .store
                .user_by_email(&email)
                .await?
                .ok_or(ApiError::NotFound)?
        }
    };
    if record.status != UserStatus::Active {
        return Err(ApiError::InvalidInput {
            field: "user".into(),
            reason: "the account is disabled; enable it first".into(),
        });
    }
    let reset = service.state.reset();
    let lifetime = lifetime_secs.unwrap_or(reset.token_lifetime_secs);
    if lifetime == 0 || lifetime > MAX_TOKEN_LIFETIME_SECS {
        return Err(ApiError::InvalidInput {
            field: "lifetime_secs".into(),
            reason: format!("must be between 1 and {MAX_TOKEN_LIFETIME_SECS}"),
        });
    }
    let now = now();
    let (raw, issued) = reset.new_token(Some(&record), lifetime, now);
    let event = NewEvent::user(EventKind::ResetRequested, record.id, None);
    let max_live = reset.max_live_tokens;
    service
        .state
        .store
        .issue_token(&issued, max_live, None, event)
        .await
        .map_err(|e| match e {
            StoreError::Stale => ApiError::Unavailable,
            e => e.into(),
        })?;
    Ok(ResetLink {
        user_id: record.id,
        link: reset.link(&raw),
        expires_at: issued.record.expires_at,
    })
}

impl Service {
    /// Judges a presented token text.
    pub(super) async fn judge_token(
        &self,
        token: &str,
    ) -> Result<(Option<RawToken>, store::TokenState), ApiError> {
        let Some(raw) = RawToken::parse(token.trim()) else {
            return Ok((None, store::TokenState::Invalid));
        };
        let state = self
            .state
            .store
            .check_token(&raw.selector, &raw.verifier_hash(), now())
            .await?;
        Ok((Some(raw), state))
    }
}
