//! The `[mail]` settings and their checks. Only the *locations* of secrets are settings: the
//! SMTP password is read at start-up from a file, an environment variable or a systemd
//! credential, so the configuration file (and `--check-config`) never holds it.

use std::net::IpAddr;
use std::path::PathBuf;

use lettre::message::Mailbox;
use serde::{Deserialize, Serialize};

use super::template::{self, Template};
use super::MailKind;

/// Outgoing mail: how it leaves, what it says, and how hard delivery is retried.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    /// How mail leaves the daemon: `"file"` (default: every message written as an `.eml` file,
    /// so a fresh machine needs no mail server) or `"smtp"`.
    pub transport: TransportKind,
    /// The `From` header and envelope sender, as `"Name <address>"` or a bare address.
    /// Default `"Latchkey <no-reply@localhost>"`. Its domain also names the `Message-ID`s.
    pub from: String,
    /// A `Reply-To` header; unset by default.
    pub reply_to: Option<String>,
    /// The product name templates show as `{{product}}`. Default `"Latchkey"`.
    pub product_name: String,
    /// The locale of users who have none, and the last step of every locale fallback chain.
    /// Default `"en"` (the language of the built-in templates).
    pub default_locale: String,
    /// A directory of templates overriding the built-in ones, per locale (layout in
    /// `mail::templates`). Unset by default: only the built-in English templates are used.
    pub template_dir: Option<PathBuf>,
    /// Subject lines, for locales whose template directory has no `.subject` file.
    pub subjects: SubjectsConfig,
    /// Delivery attempts before a message goes dead (dead-letter state). Default 12, which
    /// with the default backoff keeps trying for 4 to 5 hours.
    pub max_attempts: u32,
    /// The wait after the first failed attempt; it doubles after each further failure.
    /// Default 30.
    pub backoff_base_secs: u64,
    /// The longest wait between two attempts. Default 3600 (one hour).
    pub backoff_max_secs: u64,
    /// How much of each wait is random, from 0.0 (none) to 1.0: a wait `w` becomes a random
    /// time between `w * (1 - jitter)` and `w`, so messages that failed together do not retry
    /// together. Default 0.2.
    pub jitter: f64,
    /// Messages delivered at once (and the SMTP connections kept open); a slow or failing
    /// message holds one slot, never the others. Default 4.
    pub concurrency: usize,
    /// On shutdown, how long deliveries in progress may take to finish; any still running are
    /// abandoned and stay queued. Default 10.
    pub shutdown_grace_secs: u64,
    /// The `file` transport.
    pub file: FileConfig,
    /// The `smtp` transport.
    pub smtp: SmtpConfig,
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            transport: TransportKind::File,
            from: "Latchkey <no-reply@localhost>".into(),
            reply_to: None,
            product_name: "Latchkey".into(),
            default_locale: "en".into(),
            template_dir: None,
            subjects: SubjectsConfig::default(),
            max_attempts: 12,
            backoff_base_secs: 30,
            backoff_max_secs: 3600,
            jitter: 0.2,
            concurrency: 4,
            shutdown_grace_secs: 10,
            file: FileConfig::default(),
            smtp: SmtpConfig::default(),
        }
    }
}

/// Which transport delivers mail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportKind {
    /// Write each message as an `.eml` file (see [`FileConfig`]).
    File,
    /// Send over SMTP (see [`SmtpConfig`]).
    Smtp,
}

/// Subject lines; `{{variables}}` as in the templates. Parsed once, when the configuration is
/// read: a mistake is refused there, naming its key, and the sender uses the parsed templates.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(try_from = "SubjectsText", into = "SubjectsText")]
pub struct SubjectsConfig {
    /// The text as configured, for printing and comparing the configuration.
    text: SubjectsText,
    /// Each kind's subject, parsed, in [`MailKind::ALL`] order.
    parsed: [Template; 4],
}

/// The subject lines as written in the configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SubjectsText {
    /// Default `"Reset your {{product}} password"`.
    password_reset: String,
    /// Default `"Your {{product}} password was changed"`.
    password_changed: String,
    /// Default `"Finish signing up for {{product}}"`.
    sign_up_confirm: String,
    /// Default `"You already have a {{product}} account"`.
    sign_up_existing: String,
}

impl Default for SubjectsText {
    fn default() -> Self {
        SubjectsText {
            password_reset: "Reset your {{product}} password".into(),
            password_changed: "Your {{product}} password was changed".into(),
            sign_up_confirm: "Finish signing up for {{product}}".into(),
            sign_up_existing: "You already have a {{product}} account".into(),
        }
    }
}

impl SubjectsText {
    /// The configured text for `kind`.
    fn get(&self, kind: MailKind) -> &str {
        match kind {
            MailKind::PasswordReset => &self.password_reset,
            MailKind::PasswordChanged => &self.password_changed,
            MailKind::SignUpConfirm => &self.sign_up_confirm,
            MailKind::SignUpExisting => &self.sign_up_existing,
        }
    }
}

impl TryFrom<SubjectsText> for SubjectsConfig {
    type Error = String;

    fn try_from(text: SubjectsText) -> Result<SubjectsConfig, String> {
        let mut parsed = Vec::with_capacity(MailKind::ALL.len());
        for kind in MailKind::ALL {
            let template = Template::parse(text.get(kind), kind)
                .map_err(|e| format!("mail.subjects.{}: {e}", kind.name()))?;
            parsed.push(template);
        }
        let parsed = parsed
            .try_into()
            .map_err(|_| "mail.subjects: one subject per kind".to_owned())?;
        Ok(SubjectsConfig { text, parsed })
    }
}

impl From<SubjectsConfig> for SubjectsText {
    fn from(subjects: SubjectsConfig) -> SubjectsText {
        subjects.text
    }
}

impl Default for SubjectsConfig {
    fn default() -> Self {
        let text = SubjectsText::default();
        // The default subjects parse (a unit test holds them to it); should they ever not, the
        // text is sent as it stands rather than the daemon refusing its own defaults.
        SubjectsConfig::try_from(text.clone()).unwrap_or_else(|_| SubjectsConfig {
            parsed: MailKind::ALL.map(|kind| Template::literal(text.get(kind))),
            text,
        })
    }
}

impl SubjectsConfig {
    /// The subject for `kind`.
    pub(crate) fn get(&self, kind: MailKind) -> &Template {
        let index = MailKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        &self.parsed[index]
    }
}

/// The `file` transport.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// Where the `.eml` files go (created with mode 0700; each file is 0600, since a reset
    /// mail holds a live link). Unset means `mail/` inside the store's data directory.
    pub dir: Option<PathBuf>,
    /// `.eml` files older than this are deleted (at start and then at most once a minute,
    /// after a mail is written); 0 keeps them. The default, a day, is the longest a reset
    /// link can live, so no file outlives its link by more than that.
    pub keep_secs: u64,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            dir: None,
            keep_secs: 86_400,
        }
    }
}

/// The `smtp` transport.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// The server's host name (checked against its TLS certificate) or IP address. Default
    /// `"localhost"`.
    pub host: String,
    /// The server's port. Unset means 25 with `tls = "none"`, 587 with `"starttls"` and 465
    /// with `"tls"`.
    pub port: Option<u16>,
    /// `"starttls"` (default: plain connection upgraded with STARTTLS, refused if the server
    /// does not offer it), `"tls"` (implicit TLS from the first byte) or `"none"`.
    pub tls: TlsMode,
    /// A PEM file of extra CA certificates to trust, for a relay with a private CA. Unset by
    /// default: the Mozilla root set (webpki-roots) only.
    pub ca_file: Option<PathBuf>,
    /// The name sent with EHLO. Unset means this machine's host name.
    pub helo_name: Option<String>,
    /// The AUTH user name; unset (the default) means no AUTH. Needs exactly one of
    /// `password_file`, `password_env` or `password_credential`.
    pub username: Option<String>,
    /// A file holding the AUTH password (one trailing newline is ignored).
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the AUTH password. Must not start with `LATCHKEY_`,
    /// which the configuration loader would read as a setting.
    pub password_env: Option<String>,
    /// A systemd credential holding the AUTH password (`LoadCredential=NAME:/path` in the
    /// unit), read from `$CREDENTIALS_DIRECTORY/NAME`.
    pub password_credential: Option<String>,
    /// How long connecting to the server may take. A whole delivery (connection, TLS, AUTH and
    /// the message) is cut off after four times this. Default 30.
    pub timeout_secs: u64,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: "localhost".into(),
            port: None,
            tls: TlsMode::Starttls,
            ca_file: None,
            helo_name: None,
            username: None,
            password_file: None,
            password_env: None,
            password_credential: None,
            timeout_secs: 30,
        }
    }
}

/// How the SMTP connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Plain text; only sensible for a relay on the same machine.
    None,
    /// A plain connection upgraded with STARTTLS; never falls back to plain text.
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
}

impl SmtpConfig {
    /// Where the AUTH password is read from.
    pub(crate) fn password(&self) -> crate::setting::SecretSources<'_> {
        crate::setting::SecretSources {
            key: "mail.smtp.username",
            keys: [
                "mail.smtp.password_file",
                "mail.smtp.password_env",
                "mail.smtp.password_credential",
            ],
            file: self.password_file.as_deref(),
            env: self.password_env.as_deref(),
            credential: self.password_credential.as_deref(),
        }
    }

    /// The port to connect to.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            TlsMode::None => 25,
            TlsMode::Starttls => 587,
            TlsMode::Tls => 465,
        })
    }

    /// Whether `host` names this machine, where a plain-text connection does not cross a
    /// network.
    fn host_is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

/// The most messages delivered at once.
const MAX_CONCURRENCY: usize = 256;

impl MailConfig {
    /// Checks values that parse but make no sense; the message starts with the dotted key.
    /// Files (password, CA, templates) are read later, at start-up.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |key: &str, reason: &str| Err(format!("{key}: {reason}"));
        parse_mailbox(&self.from).map_err(|e| format!("mail.from: {e}"))?;
        if let Some(reply_to) = &self.reply_to {
            parse_mailbox(reply_to).map_err(|e| format!("mail.reply_to: {e}"))?;
        }
        if self.product_name.chars().any(char::is_control) {
            return bad("mail.product_name", "must not contain control characters");
        }
        if !template::is_locale_tag(&self.default_locale) {
            return bad(
                "mail.default_locale",
                "must be a language tag such as \"en\" or \"pt-BR\"",
            );
        }
        if self.max_attempts == 0 {
            return bad("mail.max_attempts", "must be at least 1");
        }
        if self.backoff_base_secs == 0 {
            return bad("mail.backoff_base_secs", "must be at least 1");
        }
        if self.backoff_max_secs < self.backoff_base_secs {
            return bad(
                "mail.backoff_max_secs",
                "must be at least backoff_base_secs",
            );
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return bad("mail.jitter", "must be between 0.0 and 1.0");
        }
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            return bad("mail.concurrency", "must be between 1 and 256");
        }
        self.smtp.validate()
    }
}

impl SmtpConfig {
    /// See [`MailConfig::validate`].
    fn validate(&self) -> Result<(), String> {
        let bad = |key: &str, reason: &str| Err(format!("mail.smtp.{key}: {reason}"));
        if self.host.trim().is_empty() || self.host.chars().any(|c| c.is_whitespace()) {
            return bad("host", "must be a host name or an IP address");
        }
        if self.port == Some(0) {
            return bad("port", "must be between 1 and 65535");
        }
        if self.timeout_secs == 0 {
            return bad("timeout_secs", "must be at least 1");
        }
        if let Some(name) = &self.helo_name {
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            if !ok {
                return bad("helo_name", "must be a host name");
            }
        }
        let sources = self.password();
        let given = [
            sources.file.is_some(),
            sources.env.is_some(),
            sources.credential.is_some(),
        ];
        if self.username.is_none() && given.contains(&true) {
            return bad("username", "must be set when a password source is");
        }
        crate::setting::check_secret_sources(&sources, self.username.is_some())
            .map_err(|e| e.to_string())?;
        if self.username.is_some() && self.tls == TlsMode::None && !self.host_is_loopback() {
            return bad(
                "tls",
                "\"none\" would send the password in clear text to another machine; use \
                 \"starttls\" or \"tls\"",
            );
        }
        Ok(())
    }
}

/// Parses `"Name <address>"` or a bare address.
pub(crate) fn parse_mailbox(text: &str) -> Result<Mailbox, String> {
    text.parse::<Mailbox>()
        .map_err(|e| format!("{text:?} is not a mail address ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change to the default configuration.
    type Edit = Box<dyn FnOnce(&mut MailConfig)>;

    fn check(edit: impl FnOnce(&mut MailConfig)) -> Result<(), String> {
        let mut config = MailConfig::default();
        edit(&mut config);
        config.validate()
    }

    #[test]
    fn defaults_are_valid_and_use_the_file_transport() {
        assert_eq!(check(|_| {}), Ok(()));
        assert_eq!(MailConfig::default().transport, TransportKind::File);
        assert_eq!(SmtpConfig::default().effective_port(), 587);
    }

    #[test]
    fn every_refusal_names_its_key() {
        let cases: Vec<(&str, Edit)> = vec![
            ("mail.from", Box::new(|c| c.from = "not an address".into())),
            ("mail.jitter", Box::new(|c| c.jitter = 1.5)),
            ("mail.max_attempts", Box::new(|c| c.max_attempts = 0)),
            (
                "mail.backoff_max_secs",
                Box::new(|c| c.backoff_max_secs = 1),
            ),
            ("mail.concurrency", Box::new(|c| c.concurrency = 0)),
            (
                "mail.smtp.username",
                Box::new(|c| c.smtp.username = Some("u".into())),
            ),
            (
                "mail.smtp.password_env",
                Box::new(|c| {
                    c.smtp.username = Some("u".into());
                    c.smtp.password_env = Some("LATCHKEY_SMTP_PASSWORD".into());
                }),
            ),
            (
                "mail.smtp.tls",
                Box::new(|c| {
                    c.smtp.host = "mail.example.com".into();
                    c.smtp.tls = TlsMode::None;
                    c.smtp.username = Some("u".into());
                    c.smtp.password_env = Some("SMTP_PASSWORD".into());
                }),
            ),
        ];
        for (key, edit) in cases {
            let err = check(edit).expect_err(key);
            assert!(err.starts_with(key), "expected {key}, got {err}");
        }
    }

    #[test]
    fn auth_in_clear_text_is_allowed_to_a_local_relay() {
        let local = check(|c| {
            c.smtp.host = "127.0.0.1".into();
            c.smtp.tls = TlsMode::None;
            c.smtp.username = Some("u".into());
            c.smtp.password_credential = Some("smtp-password".into());
        });
        assert_eq!(local, Ok(()));
    }
    #[test]
    fn subjects_are_parsed_when_read_and_a_mistake_names_its_key() {
        let refused = toml::from_str::<MailConfig>("[subjects]\npassword_changed = \"{{link}}\"\n");
        let err = refused
            .expect_err("a subject with a variable its kind lacks")
            .to_string();
        assert!(err.contains("mail.subjects.password_changed"), "{err}");
        let refused = toml::from_str::<MailConfig>("[subjects]\npassword_reset = \"{{#link}}\"\n");
        let err = refused.expect_err("an unclosed section").to_string();
        assert!(err.contains("mail.subjects.password_reset"), "{err}");
        // The defaults parse, and a configured subject is what the sender gets.
        assert!(SubjectsConfig::try_from(SubjectsText::default()).is_ok());
        let config: MailConfig =
            toml::from_str("[subjects]\npassword_reset = \"Reset {{product}}\"\n").expect("parses");
        let mut vars = crate::mail::template::Vars::default();
        vars.set("product", "Acme");
        assert_eq!(
            config
                .subjects
                .get(MailKind::PasswordReset)
                .render(&vars, false),
            "Reset Acme"
        );
        // It prints as it was written.
        let printed = toml::to_string(&config).expect("prints");
        assert!(
            printed.contains("password_reset = \"Reset {{product}}\""),
            "{printed}"
        );
    }
}
