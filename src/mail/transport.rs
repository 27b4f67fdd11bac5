//! The two ways a message leaves: written to a directory as an `.eml` file, or sent over SMTP
//! with lettre's pooled async transport. Both report a [`Failure`] that says whether trying
//! again can help.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::{self, AsyncSmtpTransportBuilder, PoolConfig};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::config::{MailConfig, SmtpConfig, TlsMode, TransportKind};
use super::SetupError;

/// A transport as configured, before it runs: everything that reads a file or an environment
/// variable is done here, at start-up, so a missing secret stops the daemon instead of every
/// message.
pub(crate) enum TransportSetup {
    /// Write `.eml` files into a directory.
    File(FileSink),
    /// Send over SMTP; built into a pool once a runtime is running (the pool spawns a task).
    Smtp(Box<AsyncSmtpTransportBuilder>),
}

/// A running transport.
pub(crate) enum Transport {
    /// See [`TransportSetup::File`].
    File(FileSink),
    /// lettre's SMTP transport, a new connection per message.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

/// A delivery that did not happen.
#[derive(Debug)]
pub(crate) struct Failure {
    /// True when the same message would fail the same way again (a 5xx rejection of the
    /// message or recipient, a message that cannot be built).
    pub permanent: bool,
    /// What went wrong, for the log and the outbox record: an SMTP reply or an I/O error,
    /// never the message.
    pub reason: String,
}

impl Failure {
    /// A failure that a later attempt may not repeat.
    pub(crate) fn transient(reason: impl Into<String>) -> Failure {
        Failure {
            permanent: false,
            reason: reason.into(),
        }
    }

    /// A failure that a later attempt would repeat.
    pub(crate) fn permanent(reason: impl Into<String>) -> Failure {
        Failure {
            permanent: true,
            reason: reason.into(),
        }
    }
}

impl TransportSetup {
    /// Prepares the configured transport; `data_dir` places the default `.eml` directory.
    pub(crate) fn new(config: &MailConfig, data_dir: &Path) -> Result<TransportSetup, SetupError> {
        match config.transport {
            TransportKind::File => {
                let dir = config
                    .file
                    .dir
                    .clone()
                    .unwrap_or_else(|| data_dir.join("mail"));
                // 0700 on every directory created: the files hold live reset links.
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&dir)
                    .map_err(|source| SetupError::Read {
                        key: "mail.file.dir",
                        path: dir.clone(),
                        source,
                    })?;
                let sink = FileSink {
                    dir,
                    keep_ms: config.file.keep_secs.saturating_mul(1000),
                    pruned_at_ms: AtomicU64::new(0),
                };
                sink.prune();
                Ok(TransportSetup::File(sink))
            }
            TransportKind::Smtp => Ok(TransportSetup::Smtp(Box::new(smtp_builder(&config.smtp)?))),
        }
    }

    /// Starts the transport. Needs a running tokio runtime.
    pub(crate) fn start(self) -> Transport {
        match self {
            TransportSetup::File(sink) => Transport::File(sink),
            TransportSetup::Smtp(builder) => Transport::Smtp(builder.build()),
        }
    }
}

/// The lettre transport for `smtp`, with the password read from wherever it is kept.
fn smtp_builder(smtp: &SmtpConfig) -> Result<AsyncSmtpTransportBuilder, SetupError> {
    let tls_error = |e: smtp::Error| SetupError::Config {
        key: "mail.smtp.tls",
        reason: e.to_string(),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.as_str())
        .port(smtp.effective_port())
        .timeout(Some(Duration::from_secs(smtp.timeout_secs)))
        // No connection is reused. lettre's async transport bounds only connecting, so the
        // sender cuts off a stuck delivery from outside; a connection dropped mid-command
        // would go back to the pool out of step with the server, and the next message on it
        // would read the replies meant for this one. A handshake per message is nothing at
        // the rate reset mail is sent.
        .pool_config(PoolConfig::new().max_size(0));
    if smtp.tls != TlsMode::None {
        let mut params = TlsParameters::builder(smtp.host.clone());
        if let Some(path) = &smtp.ca_file {
            let pem = std::fs::read(path).map_err(|source| SetupError::Read {
                key: "mail.smtp.ca_file",
                path: path.clone(),
                source,
            })?;
            let cert = Certificate::from_pem(&pem).map_err(|e| SetupError::Config {
                key: "mail.smtp.ca_file",
                reason: format!("{}: {e}", path.display()),
            })?;
            params = params.add_root_certificate(cert);
        }
        let params = params.build_rustls().map_err(tls_error)?;
        builder = builder.tls(match smtp.tls {
            TlsMode::Tls => Tls::Wrapper(params),
            _ => Tls::Required(params),
        });
    }
    if let Some(name) = &smtp.helo_name {
        builder = builder.hello_name(ClientId::Domain(name.clone()));
    }
    if let Some(username) = &smtp.username {
        builder = builder.credentials(Credentials::new(username.clone(), read_password(smtp)?));
    }
    Ok(builder)
}

/// The AUTH password from its file, variable or systemd credential. Never logged; errors name
/// only where it was looked for.
fn read_password(smtp: &SmtpConfig) -> Result<String, SetupError> {
    match crate::setting::read_secret(&smtp.password()) {
        Ok(Some(password)) => Ok(password),
        Ok(None) => Err(SetupError::Config {
            key: "mail.smtp.username",
            reason: "no password source".into(),
        }),
        Err(e) => Err(SetupError::Config {
            key: e.key,
            reason: e.reason,
        }),
    }
}

/// SMTP replies that reject the session (authentication), not the message: 530
/// authentication required, 534 mechanism too weak, 535 credentials invalid, 538 encryption
/// required. Fixing the configuration fixes them, so they are retried like transient errors
/// instead of killing every queued message at once.
const SESSION_CODES: [u16; 4] = [530, 534, 535, 538];

impl Transport {
    /// Delivers `message`; `file_name` names its `.eml` file. On success, a short account of
    /// what the other side said (the SMTP reply, or the file written).
    pub(crate) async fn send(&self, message: Message, file_name: &str) -> Result<String, Failure> {
        match self {
            Transport::Smtp(smtp) => match smtp.send(message).await {
                Ok(reply) => Ok(format!(
                    "{} {}",
                    reply.code(),
                    reply.first_line().unwrap_or_default()
                )),
                Err(e) => Err(classify(&e)),
            },
            Transport::File(sink) => {
                let path = sink.dir.join(file_name);
                let bytes = message.formatted();
                let target = path.clone();
                tokio::task::spawn_blocking(move || write_file(&target, &bytes))
                    .await
                    .map_err(|e| Failure::transient(format!("writer task failed: {e}")))?
                    .map_err(|e| Failure::transient(format!("{}: {e}", path.display())))?;
                if sink.prune_due() {
                    let dir = sink.dir.clone();
                    let keep_ms = sink.keep_ms;
                    tokio::task::spawn_blocking(move || prune(&dir, keep_ms));
                }
                Ok(format!("written to {}", path.display()))
            }
        }
    }

    /// Closes pooled SMTP connections politely (QUIT).
    pub(crate) async fn shutdown(&self) {
        if let Transport::Smtp(smtp) = self {
            smtp.shutdown().await;
        }
    }
}

/// The file transport's directory and its retention.
pub(crate) struct FileSink {
    /// Where the `.eml` files go.
    dir: PathBuf,
    /// How long a file is kept (`mail.file.keep_secs`, in ms); 0 keeps every file.
    keep_ms: u64,
    /// When the directory was last pruned (Unix ms).
    pruned_at_ms: AtomicU64,
}

/// How often, at most, the `.eml` directory is pruned: each prune reads the whole directory.
const PRUNE_EVERY_MS: u64 = 60_000;

impl FileSink {
    /// Deletes the files past their retention now.
    fn prune(&self) {
        self.pruned_at_ms
            .store(crate::clock::now_ms(), Ordering::Relaxed);
        prune(&self.dir, self.keep_ms);
    }

    /// Whether a prune is due, marking it done if so.
    fn prune_due(&self) -> bool {
        let now = crate::clock::now_ms();
        let last = self.pruned_at_ms.load(Ordering::Relaxed);
        self.keep_ms > 0
            && now.saturating_sub(last) >= PRUNE_EVERY_MS
            && self
                .pruned_at_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// Deletes the `.eml` files in `dir` last modified more than `keep_ms` ago (none when
/// `keep_ms` is 0). A failure is logged and tried again at the next prune.
fn prune(dir: &Path, keep_ms: u64) {
    if keep_ms == 0 {
        return;
    }
    let Some(cutoff) = std::time::SystemTime::now().checked_sub(Duration::from_millis(keep_ms))
    else {
        return;
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot read the mail directory to prune it");
            return;
        }
    };
    let mut removed = 0u64;
    for entry in entries.flatten() {
        let path = entry.path();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|modified| modified < cutoff);
        if old && path.extension().is_some_and(|e| e == "eml") {
            match std::fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot delete an old .eml file")
                }
            }
        }
    }
    if removed > 0 {
        tracing::info!(removed, dir = %dir.display(), "deleted .eml files past mail.file.keep_secs");
    }
}

/// Whether an SMTP error is worth retrying. Only a 5xx reply about the message or recipient,
/// or a message lettre cannot send at all (such as a non-ASCII address the server cannot
/// take), is permanent; connection, TLS, timeout and 4xx errors are transient.
fn classify(e: &smtp::Error) -> Failure {
    let reason = e.to_string();
    let session = e
        .status()
        .is_some_and(|c| SESSION_CODES.contains(&u16::from(c)));
    if (e.is_permanent() && !session) || e.is_client() {
        Failure::permanent(reason)
    } else {
        Failure::transient(reason)
    }
}

/// Writes `bytes` to `path` so that the file appears whole or not at all (a temporary file,
/// synced, then renamed), readable by the owner only. Writing the same message twice replaces
/// the file, so a retried delivery leaves one copy.
fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_come_from_a_file_without_the_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret value\n").unwrap();
        let smtp = SmtpConfig {
            username: Some("u".into()),
            password_file: Some(path),
            ..SmtpConfig::default()
        };
        assert_eq!(read_password(&smtp).unwrap(), "s3cret value");
    }

    #[test]
    fn a_missing_password_names_where_it_was_looked_for() {
        let smtp = SmtpConfig {
            username: Some("u".into()),
            password_credential: Some("smtp".into()),
            ..SmtpConfig::default()
        };
        if std::env::var_os("CREDENTIALS_DIRECTORY").is_none() {
            let err = read_password(&smtp).unwrap_err().to_string();
            assert!(err.contains("mail.smtp.password_credential"), "{err}");
        }
    }

    #[test]
    fn files_are_written_whole_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1-1.eml");
        write_file(&path, b"first").unwrap();
        write_file(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
