//! Mail: what the service queues ([`MailJob`]), and the sender that delivers the outbox.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// Mail settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    /// Directory the `file` transport writes `.eml` files into.
    pub dir: PathBuf,
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            dir: PathBuf::from("latchkey-data/mail"),
        }
    }
}

/// Delivers the outbox until `stop` is cancelled; `wake` is notified when mail is queued.
pub async fn run(store: Store, config: MailConfig, wake: Arc<Notify>, stop: CancellationToken) {
    let _ = (store, config, wake);
    stop.cancelled().await;
}

/// Which message a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailKind {
    /// The reset link.
    PasswordReset,
    /// "Your password was changed."
    PasswordChanged,
}

/// One message to send, as queued in the (sealed) outbox. Rendering happens at send time, so
/// a template fix applies to mail already queued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailJob {
    /// Which message.
    pub kind: MailKind,
    /// Recipient address (normalised).
    pub to: String,
    /// Recipient's display name (may be empty).
    pub name: String,
    /// Recipient's locale, for choosing a template.
    pub locale: Option<String>,
    /// The reset link (reset mail only).
    pub link: Option<String>,
    /// When the link expires (reset mail only; Unix seconds).
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
