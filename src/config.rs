//! Configuration: built-in defaults, then a TOML file, then `LATCHKEY_*` environment variables
//! (`__` separates nesting levels: `LATCHKEY_SERVER__SOCKET`). Unknown keys are errors that name
//! the key, because a misspelt security setting must not silently fall back to its default.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The socket and connection handling.
    pub server: ServerConfig,
    /// Which peers get which role.
    pub auth: AuthConfig,
    /// Where the data lives.
    pub store: StoreConfig,
    /// Hashing parameters and the password policy.
    pub passwords: PasswordConfig,
    /// Reset tokens and links.
    pub reset: ResetConfig,
    /// Rate limits.
    pub limits: crate::limits::LimitsConfig,
    /// The event log.
    pub events: EventsConfig,
    /// Outgoing mail.
    pub mail: crate::mail::MailConfig,
    /// Logging.
    pub log: LogConfig,
}

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
            reply_floor_ms: 5,
        }
    }
}

/// The longest a reset token may live.
pub const MAX_TOKEN_LIFETIME_SECS: u64 = 86400;

/// The event log.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Most events kept; the oldest go first.
    pub max_events: usize,
    /// Events older than this are dropped.
    pub max_age_days: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            max_events: 1_000_000,
            max_age_days: 90,
        }
    }
}

/// The socket and connection handling.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Path of the Unix socket.
    pub socket: PathBuf,
    /// Permission bits of the socket file, as an octal string.
    pub socket_mode: String,
    /// Group owning the socket (name or numeric gid); the daemon's own group when unset.
    pub socket_group: Option<String>,
    /// Connections served at once; further connections wait in the kernel backlog.
    pub max_connections: usize,
    /// Requests in flight on one connection; more are refused with a throttling error.
    pub max_requests_per_connection: usize,
    /// Largest frame accepted; a larger one closes that connection.
    pub max_frame_bytes: usize,
    /// How long one frame may take to arrive once begun; a slower one closes the connection.
    pub frame_timeout_secs: u64,
    /// On SIGTERM, how long calls in flight may take to finish before the daemon exits anyway.
    pub shutdown_grace_secs: u64,
    /// Run even as root (normally refused: run as a dedicated user).
    pub allow_root: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            socket: PathBuf::from("latchkey.sock"),
            socket_mode: "0660".into(),
            socket_group: None,
            max_connections: 256,
            max_requests_per_connection: 64,
            max_frame_bytes: 64 * 1024,
            frame_timeout_secs: 30,
            shutdown_grace_secs: 30,
            allow_root: false,
        }
    }
}

/// Which peers get which role, by the uid and gid the kernel reports for the connecting
/// process. Anyone matching neither role is disconnected.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Uids given the admin role; unset means the daemon's own uid and root.
    pub admin_uids: Option<Vec<u32>>,
    /// Gids (primary or supplementary) given the admin role.
    pub admin_gids: Vec<u32>,
    /// Uids given the app role.
    pub app_uids: Vec<u32>,
    /// Gids (primary or supplementary) given the app role; unset means the socket's group.
    pub app_gids: Option<Vec<u32>>,
}

/// Where the data lives.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Data directory; the embedded database lives in `db/` below it.
    pub data_dir: PathBuf,
    /// sled's page cache size in bytes.
    pub cache_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: PathBuf::from("latchkey-data"),
            cache_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Hashing parameters and the password policy (NIST SP 800-63B: length only, no composition
/// rules, no truncation).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordConfig {
    /// argon2id memory cost in KiB; may be raised above the OWASP floor of 19456, never lowered.
    pub memory_kib: u32,
    /// argon2id iterations; at least 2.
    pub iterations: u32,
    /// argon2id lanes; at least 1.
    pub parallelism: u32,
    /// Hashes computed at once; 0 means the number of cores.
    pub max_concurrent_hashes: usize,
    /// Fewest characters (Unicode code points after NFKC) in a new password.
    pub min_chars: usize,
    /// Most characters in a new password.
    pub max_chars: usize,
    /// Most bytes a password argument may have before any other work is done on it.
    pub max_bytes: usize,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        PasswordConfig {
            memory_kib: 19456,
            iterations: 2,
            parallelism: 1,
            max_concurrent_hashes: 0,
            min_chars: 8,
            max_chars: 256,
            max_bytes: 1024,
        }
    }
}

/// Logging.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `latchkeyd=debug`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info,tarpc=warn".into(),
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file was named but is not there.
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    /// figment could not read or map the settings (unknown keys, wrong types); its message
    /// names the key and the source.
    #[error(transparent)]
    Invalid(#[from] Box<figment::Error>),
    /// A value is outside what the daemon accepts.
    #[error("{key}: {reason}")]
    Value {
        /// The dotted key.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl Config {
    /// Loads defaults, then `file` if given (it must exist), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            // `Toml::file` silently ignores a missing file; a path the operator typed must exist.
            if !path.is_file() {
                return Err(ConfigError::Missing(path.to_path_buf()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Env::prefixed("LATCHKEY_").split("__"));
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but make no sense.
    fn validate(&self) -> Result<(), ConfigError> {
        let value = |key, reason: &str| ConfigError::Value {
            key,
            reason: reason.to_owned(),
        };
        let p = &self.passwords;
        if p.memory_kib < 19456 {
            return Err(value(
                "passwords.memory_kib",
                "must be at least 19456 (the OWASP minimum for argon2id)",
            ));
        }
        if p.iterations < 2 {
            return Err(value("passwords.iterations", "must be at least 2"));
        }
        if p.memory_kib > crate::passwords::MAX_MEMORY_KIB {
            return Err(value(
                "passwords.memory_kib",
                &format!("must be at most {}", crate::passwords::MAX_MEMORY_KIB),
            ));
        }
        crate::passwords::check_argon2_cost(p.memory_kib, p.iterations)
            .map_err(|reason| value("passwords.iterations", &reason))?;
        if p.parallelism < 1 {
            return Err(value("passwords.parallelism", "must be at least 1"));
        }
        if p.min_chars < 8 {
            return Err(value(
                "passwords.min_chars",
                "must be at least 8 (NIST SP 800-63B)",
            ));
        }
        if p.max_chars < 64 || p.max_chars < p.min_chars {
            return Err(value(
                "passwords.max_chars",
                "must be at least 64 (NIST SP 800-63B) and at least min_chars",
            ));
        }
        if p.max_bytes < p.max_chars {
            return Err(value("passwords.max_bytes", "must be at least max_chars"));
        }
        let r = &self.reset;
        if r.token_lifetime_secs == 0 || r.token_lifetime_secs > MAX_TOKEN_LIFETIME_SECS {
            return Err(value(
                "reset.token_lifetime_secs",
                "must be between 1 and 86400 (24 hours)",
            ));
        }
        if r.max_live_tokens == 0 {
            return Err(value("reset.max_live_tokens", "must be at least 1"));
        }
        if r.link_template.matches("{token}").count() != 1 {
            return Err(value(
                "reset.link_template",
                "must contain {token} exactly once",
            ));
        }
        if r.reply_floor_ms > 10_000 {
            return Err(value("reset.reply_floor_ms", "must be at most 10000"));
        }
        if r.sweep_interval_secs == 0 {
            return Err(value("reset.sweep_interval_secs", "must be at least 1"));
        }
        self.limits
            .validate()
            .map_err(|reason| value("limits", &reason))?;
        self.mail
            .validate()
            .map_err(|reason| value("mail", &reason))?;
        self.socket_mode()?;
        let s = &self.server;
        if s.max_connections == 0 || s.max_requests_per_connection == 0 {
            return Err(value(
                "server.max_connections",
                "connection and request limits must be at least 1",
            ));
        }
        if s.frame_timeout_secs == 0 {
            return Err(value("server.frame_timeout_secs", "must be at least 1"));
        }
        if s.max_frame_bytes < 1024 {
            return Err(value("server.max_frame_bytes", "must be at least 1024"));
        }
        Ok(())
    }

    /// The socket mode as bits.
    pub fn socket_mode(&self) -> Result<u32, ConfigError> {
        let raw = self.server.socket_mode.trim_start_matches("0o");
        match u32::from_str_radix(raw, 8) {
            Ok(mode) if mode <= 0o777 => Ok(mode),
            _ => Err(ConfigError::Value {
                key: "server.socket_mode",
                reason: format!("{:?} is not an octal mode such as \"0660\"", raw),
            }),
        }
    }

    /// The number of hashes computed at once.
    pub fn hash_concurrency(&self) -> usize {
        match self.passwords.max_concurrent_hashes {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// The effective configuration as TOML, secrets replaced by `"<redacted>"`.
    pub fn redacted_toml(&self) -> String {
        let mut value = match toml::Value::try_from(self) {
            Ok(v) => v,
            Err(e) => return format!("# cannot render the configuration: {e}\n"),
        };
        redact(&mut value);
        toml::to_string_pretty(&value)
            .unwrap_or_else(|e| format!("# cannot render the configuration: {e}\n"))
    }
}

/// Secrets are normally given by file, environment variable or systemd credential, so only
/// their locations are settings; a key that holds a secret itself is still blanked out here.
fn redact(value: &mut toml::Value) {
    if let toml::Value::Table(table) = value {
        for (key, v) in table.iter_mut() {
            let secret =
                matches!(key.as_str(), "password" | "secret" | "token") || key.ends_with("_secret");
            if secret && v.is_str() {
                *v = toml::Value::String("<redacted>".into());
            } else {
                redact(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml.example")
    }

    #[test]
    fn the_example_config_parses_and_documents_the_defaults() {
        let loaded = Config::load(Some(&example()));
        let loaded = match loaded {
            Ok(c) => c,
            Err(e) => unreachable!("config.toml.example does not load: {e}"),
        };
        // The example claims to show every default; hold it to that.
        assert_eq!(loaded.redacted_toml(), Config::default().redacted_toml());
    }

    /// Whether `key` is set, or shown commented out, on a line of its own.
    fn documented(text: &str, key: &str) -> bool {
        text.lines().any(|l| {
            let l = l.trim_start_matches(['#', ' ']);
            l.starts_with(&format!("{key} =")) || l.starts_with(&format!("{key}="))
        })
    }

    #[test]
    fn every_default_key_is_in_the_example() {
        let text = std::fs::read_to_string(example()).unwrap_or_default();
        let defaults =
            toml::Value::try_from(Config::default()).unwrap_or(toml::Value::Boolean(false));
        let Some(sections) = defaults.as_table() else {
            unreachable!("config is a table")
        };
        for (section, keys) in sections {
            assert!(
                text.contains(&format!("[{section}]")),
                "section [{section}] missing"
            );
            for (key, value) in keys.as_table().into_iter().flatten() {
                // A table-valued key is documented inline (`key = { ... }`) or as a
                // [section.key] table of its own, whose keys are then checked too.
                if let (Some(table), false) = (value.as_table(), documented(&text, key)) {
                    let heading = format!("[{section}.{key}]");
                    assert!(text.contains(&heading), "{heading} missing");
                    for inner in table.keys() {
                        assert!(
                            documented(&text, inner),
                            "{section}.{key}.{inner} is not in config.toml.example"
                        );
                    }
                    continue;
                }
                assert!(
                    documented(&text, key),
                    "{section}.{key} is not in config.toml.example"
                );
            }
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_by_name() {
        let dir = tempfile::tempdir().ok();
        let Some(dir) = dir else {
            unreachable!("tempdir")
        };
        let path = dir.path().join("c.toml");
        let check = |text: &str, needle: &str| {
            std::fs::write(&path, text).ok();
            match Config::load(Some(&path)) {
                Ok(_) => unreachable!("{text:?} was accepted"),
                Err(e) => assert!(e.to_string().contains(needle), "{e} lacks {needle:?}"),
            }
        };
        check("[server]\nsockett = \"x\"\n", "sockett");
        check("[passwords]\nmemory_kib = 4096\n", "passwords.memory_kib");
        check(
            "[passwords]\nmemory_kib = 4194304\n",
            "passwords.memory_kib",
        );
        check("[passwords]\niterations = 1000\n", "passwords.iterations");
        check("[passwords]\nmin_chars = 6\n", "passwords.min_chars");
        check(
            "[reset]\ntoken_lifetime_secs = 90000\n",
            "reset.token_lifetime_secs",
        );
        check(
            "[reset]\nlink_template = \"https://x/\"\n",
            "reset.link_template",
        );
        check("[server]\nsocket_mode = \"rw\"\n", "server.socket_mode");
        check(
            "[limits]\nreset_per_ip = { burst = 0, per_secs = 60 }\n",
            "reset_per_ip",
        );
        assert!(matches!(
            Config::load(Some(&dir.path().join("missing.toml"))),
            Err(ConfigError::Missing(_))
        ));
    }
}
