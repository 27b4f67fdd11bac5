//! Mail: what the service queues ([`MailJob`]) and the sender that delivers the outbox.
//!
//! - [`config`]: the `[mail]` settings and their checks.
//! - `template`: the `{{variable}}` language.
//! - `templates`: built-in and overriding templates, locales.
//! - `compose`: a job and its templates become a complete multipart message.
//! - `transport`: `.eml` files or SMTP (lettre), and which failures are worth retrying.
//! - `sender`: the loop over the outbox schedule, retries with backoff, dead letters.
//!
//! The service only queues: a reset request is answered once its mail is durably in the
//! outbox, never after talking to a mail server.

mod compose;
mod config;
mod sender;
pub(crate) mod template;
mod templates;
mod transport;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use config::MailConfig;
pub use sender::{Mailer, Templates};

/// Why the mail sender cannot start. Each message names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A setting is unusable.
    #[error("{key}: {reason}")]
    Config {
        /// The dotted key.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A file or directory a setting names cannot be read or created.
    #[error("{key}: {}: {source}", path.display())]
    Read {
        /// The dotted key.
        key: &'static str,
        /// The path.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// A template in `mail.template_dir` is wrong.
    #[error("mail template {}: {reason}", path.display())]
    Template {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Which message a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailKind {
    /// The reset link.
    PasswordReset,
    /// "Your password was changed."
    PasswordChanged,
    /// The link that finishes a sign-up (concealing mode, an address without an account).
    SignUpConfirm,
    /// "You already have an account" (concealing mode, an address that has one).
    SignUpExisting,
}

impl MailKind {
    /// Every kind.
    pub const ALL: [MailKind; 4] = [
        MailKind::PasswordReset,
        MailKind::PasswordChanged,
        MailKind::SignUpConfirm,
        MailKind::SignUpExisting,
    ];

    /// The kind as serialised and as template files are named: `"password_reset"`,
    /// `"password_changed"`, `"sign_up_confirm"` or `"sign_up_existing"`.
    pub fn name(self) -> &'static str {
        match self {
            MailKind::PasswordReset => "password_reset",
            MailKind::PasswordChanged => "password_changed",
            MailKind::SignUpConfirm => "sign_up_confirm",
            MailKind::SignUpExisting => "sign_up_existing",
        }
    }

    /// Whether the message carries a link that expires (and must not be sent once it has).
    pub fn has_expiring_link(self) -> bool {
        matches!(self, MailKind::PasswordReset | MailKind::SignUpConfirm)
    }
}

/// One message to send, as queued in the (sealed) outbox. Rendering happens at send time, so
/// a template fix applies to mail already queued.
///
/// It holds no display name: a name is whatever the application's sign-up form let a user
/// type, and printed into a genuine security mail from the product's own sender it could
/// carry an attacker's instructions (issue 19, item 8). Mail queued by older versions, which
/// has a `name`, still opens: unknown fields are ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailJob {
    /// Which message.
    pub kind: MailKind,
    /// Recipient address (normalised).
    pub to: String,
    /// Recipient's locale, for choosing a template.
    pub locale: Option<String>,
    /// The link (reset, sign-up and existing-account mail).
    pub link: Option<String>,
    /// When the link expires (reset and sign-up mail; Unix seconds).
    pub expires_at: Option<u64>,
    /// The client IP the application passed with the request, if any.
    pub client_ip: Option<String>,
    /// When the request or change happened (Unix seconds).
    pub at: u64,
}

impl MailJob {
    /// The job as outbox payload bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising a struct of strings and integers to JSON cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a job back from outbox payload bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<MailJob, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}
