//! Configuration: built-in defaults, then a TOML file, then `LATCHKEY_*` environment variables
//! (`__` separates nesting levels: `LATCHKEY_SERVER__SOCKET`). Unknown keys are errors that name
//! the key, because a misspelt security setting must not silently fall back to its default.
//!
//! Each section's type lives in the module it configures (`[server]` in `server`, `[limits]`
//! in `limits`, ...), with its own checks; this module only puts them together, loads them
//! and prints them.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::limits::LimitsConfig;
use crate::mail::MailConfig;
use crate::maintenance::EventsConfig;
use crate::passwords::PasswordConfig;
use crate::scrape::MetricsConfig;
use crate::server::{AuthConfig, ServerConfig};
use crate::service::{ResetConfig, SignUpConfig};
pub use crate::setting::BadSetting;
use crate::store::StoreConfig;

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
    /// Sign-up from an application's form.
    pub signup: SignUpConfig,
    /// Rate limits.
    pub limits: LimitsConfig,
    /// The event log.
    pub events: EventsConfig,
    /// Outgoing mail.
    pub mail: MailConfig,
    /// Logging.
    pub log: LogConfig,
    /// The optional metrics HTTP listener.
    pub metrics: MetricsConfig,
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
    #[error(transparent)]
    Value(#[from] BadSetting),
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

    /// Checks values that parse but make no sense, section by section.
    fn validate(&self) -> Result<(), BadSetting> {
        self.store.validate()?;
        self.passwords.validate()?;
        self.reset.validate()?;
        self.signup.validate()?;
        self.limits
            .validate()
            .map_err(|reason| BadSetting::new("limits", reason))?;
        self.mail
            .validate()
            .map_err(|reason| BadSetting::new("mail", reason))?;
        self.metrics.validate()?;
        self.server.validate()
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
        let text = std::fs::read_to_string(example()).expect("config.toml.example is readable");
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
            "[mail.subjects]\npassword_changed = \"{{link}}\"\n",
            "mail.subjects.password_changed",
        );
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
