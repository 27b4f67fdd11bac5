//! Sign-up from an application's form (`sign_up`), and the `[signup]` settings.
//!
//! By default a sign-up creates the account at once and refuses a taken address with
//! `EmailTaken`, which tells whoever fills in the form that the address has an account. With
//! `signup.conceal_taken_addresses` it tells nobody (OWASP Authentication Cheat Sheet,
//! "account creation"; issue 19, item 11): every address gets the same reply after the same
//! work (the checks, one index read, one argon2 hash, one store transaction with one sealed
//! message, one durable commit, then a floor), and the difference goes only to the mailbox:
//! an address without an account is mailed a link to finish, one with an account a notice
//! to its owner. The account exists only once the link is used with the password chosen at
//! sign-up (`confirm_sign_up`), so
//! - trying to sign in afterwards tells an attacker nothing either (no account was made for
//!   the address they typed), and
//! - nobody can pre-register somebody else's address: the link goes to its mailbox, and
//!   without the password it creates nothing.

use latchkey_client::{ApiError, SignUp, SignUpOutcome, User};
use serde::{Deserialize, Serialize};

use super::accounts::{insert_account, Account};
use super::Service;
use crate::clock::now;
use crate::mail::{MailJob, MailKind};
use crate::setting::BadSetting;
use crate::store::{IssuedSignUp, PendingSignUp, SharedLimit, SignUpState, StoreError};
use crate::tokens::RawToken;
use crate::validate;

/// The longest a sign-up link may live: the file transport keeps `.eml` files a day.
pub const MAX_CONFIRM_LIFETIME_SECS: u64 = 86400;

/// How long after a sign-up the mail sender is woken (as for a reset request).
const MAIL_WAKE_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

/// Sign-up.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignUpConfig {
    /// `sign_up` answers every address alike and mails the difference: a link to finish for a
    /// new address, a notice to the owner of a taken one. The account is created when the
    /// link is used with the password. Off: `sign_up` creates the account at once and says
    /// `EmailTaken` for a taken address.
    pub conceal_taken_addresses: bool,
    /// The link that finishes a sign-up; `{token}` is replaced by the token. Never built from
    /// anything a caller sends.
    pub confirm_link_template: String,
    /// How long a sign-up link stays valid; at most 86400 (24 hours).
    pub confirm_lifetime_secs: u64,
    /// The link in the notice to an address that has an account: where its owner can reset
    /// a forgotten password.
    pub existing_account_link: String,
    /// Wrong passwords a sign-up link takes before it is deleted.
    pub max_confirm_failures: u32,
    /// A concealed `sign_up` answers no sooner than this many milliseconds after its password
    /// hash was done, for new and taken addresses alike: the floor hides what difference in
    /// store work remains. Keep it above the store's usual commit time.
    pub reply_floor_ms: u64,
}

impl Default for SignUpConfig {
    fn default() -> Self {
        SignUpConfig {
            conceal_taken_addresses: false,
            confirm_link_template: "http://localhost:3000/confirm-sign-up?token={token}".into(),
            confirm_lifetime_secs: 86400,
            existing_account_link: "http://localhost:3000/forgot-password".into(),
            max_confirm_failures: 5,
            reply_floor_ms: 10,
        }
    }
}

impl SignUpConfig {
    /// Checks values that parse but make no sense.
    pub(crate) fn validate(&self) -> Result<(), BadSetting> {
        if self.confirm_lifetime_secs == 0 || self.confirm_lifetime_secs > MAX_CONFIRM_LIFETIME_SECS
        {
            return Err(BadSetting::new(
                "signup.confirm_lifetime_secs",
                "must be between 1 and 86400 (24 hours)",
            ));
        }
        if self.confirm_link_template.matches("{token}").count() != 1 {
            return Err(BadSetting::new(
                "signup.confirm_link_template",
                "must contain {token} exactly once",
            ));
        }
        if self.existing_account_link.trim().is_empty() {
            return Err(BadSetting::new(
                "signup.existing_account_link",
                "must not be empty",
            ));
        }
        if self.max_confirm_failures == 0 {
            return Err(BadSetting::new(
                "signup.max_confirm_failures",
                "must be at least 1",
            ));
        }
        if self.reply_floor_ms > 10_000 {
            return Err(BadSetting::new(
                "signup.reply_floor_ms",
                "must be at most 10000",
            ));
        }
        Ok(())
    }
}

/// A sign-up: checked like `create_user` (without a role), limited per client IP and per
/// address, then created at once or, concealing, mailed.
pub(super) async fn sign_up(
    service: &Service,
    form: SignUp,
    client_ip: Option<String>,
) -> Result<SignUpOutcome, ApiError> {
    let ip = validate::client_ip(client_ip.as_deref())?;
    let email = validate::email(&form.email)?;
    let name = validate::name(&form.name)?;
    let locale = validate::locale(form.locale.as_deref())?;
    let normalised = service
        .state
        .passwords
        .check_policy(&form.password, Some(&email))?;
    drop(form);
    // After every field passed: a refused sign-up takes no cell. The per-address limit
    // counts every address alike, with or without an account.
    let limits = service.state.limits();
    limits.signup(ip)?;
    limits.signup_email(&email)?;
    service
        .state
        .take_shared(SharedLimit::SignUpPerEmail, &email)
        .await?;
    let config = service.state.signup();
    let account = Account {
        email,
        name,
        role: validate::DEFAULT_ROLE.into(),
        locale,
    };
    if !config.conceal_taken_addresses {
        let user = insert_account(service, account, normalised, ip).await?;
        return Ok(SignUpOutcome::Created {
            user: user.to_api(),
        });
    }
    // From here on a new and a taken address do the same work. The read gives the owner's
    // locale for the notice; the transaction decides again which mail goes.
    let owner = service.state.store.user_by_email(&account.email).await?;
    let password_hash = service
        .state
        .passwords
        .hash(normalised, service.flow(ip))
        .await?;
    let floor =
        tokio::time::Instant::now() + std::time::Duration::from_millis(config.reply_floor_ms);
    let now = now();
    let raw = RawToken::generate();
    let expires_at = now + config.confirm_lifetime_secs;
    let client_ip = ip.map(|i| i.to_string());
    let confirm = MailJob {
        kind: MailKind::SignUpConfirm,
        to: account.email.clone(),
        locale: account.locale.clone(),
        link: Some(
            config
                .confirm_link_template
                .replace("{token}", &raw.encode()),
        ),
        expires_at: Some(expires_at),
        client_ip: client_ip.clone(),
        at: now,
    };
    let existing = MailJob {
        kind: MailKind::SignUpExisting,
        to: account.email.clone(),
        locale: owner.and_then(|o| o.locale).or(account.locale.clone()),
        link: Some(config.existing_account_link.clone()),
        expires_at: None,
        client_ip,
        at: now,
    };
    let pending = IssuedSignUp {
        selector: raw.selector,
        record: PendingSignUp {
            verifier_hash: raw.verifier_hash(),
            email: account.email,
            name: account.name,
            locale: account.locale,
            password_hash,
            issued_at: now,
            expires_at,
            used_at: None,
            purge_at: expires_at,
            failures: 0,
        },
    };
    service
        .state
        .store
        .begin_sign_up(&pending, &confirm.to_bytes(), &existing.to_bytes())
        .await?;
    let wake = service.state.mail_wake.clone();
    tokio::spawn(async move {
        tokio::time::sleep(MAIL_WAKE_DELAY).await;
        wake.notify_one();
    });
    tokio::time::sleep_until(floor).await;
    Ok(SignUpOutcome::ConfirmationSent)
}

/// Finishes a concealed sign-up: a valid link and the password chosen at sign-up create the
/// account, in the transaction that uses the link up.
pub(super) async fn confirm_sign_up(
    service: &Service,
    token: String,
    password: String,
    client_ip: Option<String>,
) -> Result<User, ApiError> {
    let ip = validate::client_ip(client_ip.as_deref())?;
    let mut password = password;
    service.state.passwords.cut(&mut password);
    service.state.limits().token_use(ip)?;
    let Some(raw) = RawToken::parse(token.trim()) else {
        return Err(ApiError::InvalidToken);
    };
    let verifier_hash = raw.verifier_hash();
    let pending = service
        .state
        .store
        .pending_sign_up(&raw.selector)
        .await?
        .filter(|p| p.state(&verifier_hash, now()) == SignUpState::Valid)
        .ok_or(ApiError::InvalidToken)?;
    let verdict = service
        .state
        .passwords
        .verify(&password, Some(&pending.password_hash), service.flow(ip))
        .await?;
    if !verdict.matched {
        let max = service.state.signup().max_confirm_failures;
        service
            .state
            .store
            .sign_up_failed(&raw.selector, max)
            .await?;
        return Err(ApiError::InvalidCredentials);
    }
    let user = service
        .state
        .store
        .complete_sign_up(&raw.selector, &verifier_hash, now())
        .await
        .map_err(|e| match e {
            StoreError::TokenRejected => ApiError::InvalidToken,
            e => e.into(),
        })?;
    Ok(user.to_api())
}
