//! The `[store]` and `[store.postgres]` settings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::setting::{check_secret_sources, BadSetting, SecretSources};

/// Where the data lives.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `"sled"` (the default: embedded, one daemon per data directory) or `"postgres"` (one
    /// database shared by the daemons of every host).
    pub backend: Backend,
    /// Data directory: the sled database in `db/` below it, the outbox key (unless
    /// `outbox_key_file` or `outbox_key_credential` says otherwise) and the mail directory.
    pub data_dir: PathBuf,
    /// sled's page cache size in bytes.
    pub cache_bytes: u64,
    /// Most bytes an online backup of sled keeps of the records that change while it runs
    /// (their values as they were when it began); a backup that needs more fails and can be
    /// run again. About 0.5 KiB per changed record.
    pub backup_saved_bytes: u64,
    /// The 32-byte key that seals queued mail (it holds reset links). Default
    /// `data_dir/outbox.key`, created on first start. On PostgreSQL every host must use the
    /// same key: copy it to each, or give it as a systemd credential.
    pub outbox_key_file: Option<PathBuf>,
    /// The outbox key as a systemd credential (`LoadCredential=NAME:/path`), read from
    /// `$CREDENTIALS_DIRECTORY/NAME`; never created.
    pub outbox_key_credential: Option<String>,
    /// The PostgreSQL connection, used when `backend = "postgres"`.
    pub postgres: PostgresConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: Backend::Sled,
            data_dir: PathBuf::from("latchkey-data"),
            cache_bytes: 64 * 1024 * 1024,
            backup_saved_bytes: 128 * 1024 * 1024,
            outbox_key_file: None,
            outbox_key_credential: None,
            postgres: PostgresConfig::default(),
        }
    }
}

/// The store backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// sled, embedded.
    Sled,
    /// PostgreSQL 13 or newer.
    Postgres,
}

/// How to reach PostgreSQL. Either `url` or the separate fields; the password never appears
/// here, only where to read it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// A connection URL (`postgres://user@host:5432/db?...`), in place of `host`, `port`,
    /// `database` and `user`. It must not hold a password.
    pub url: Option<String>,
    /// Server host name or address. Default `localhost`.
    pub host: Option<String>,
    /// A directory holding the server's Unix socket (such as `/run/postgresql`), in place of
    /// `host`.
    pub socket_dir: Option<PathBuf>,
    /// Server port. Default 5432.
    pub port: u16,
    /// Database name. Default `latchkey`.
    pub database: String,
    /// Role to log in as. Default `latchkey`.
    pub user: String,
    /// `"disable"`, `"require"` (encrypted, the server's certificate not checked) or
    /// `"verify-full"` (the default: encrypted, certificate checked against `ca_file` or the
    /// Mozilla roots, and the host name matched). `"disable"` is refused for a host that is
    /// not this machine.
    pub tls: PostgresTls,
    /// A PEM file of CA certificates for `verify-full`.
    pub ca_file: Option<PathBuf>,
    /// A file holding the password (one trailing newline is ignored).
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password; must not start with `LATCHKEY_`.
    pub password_env: Option<String>,
    /// A systemd credential holding the password.
    pub password_credential: Option<String>,
    /// Connections kept open at most for writes and transactions. Default 16. One more per
    /// core (at most 8) is shared, pipelined, by the single-statement reads on a call's path.
    pub pool_size: usize,
    /// How long one statement may run before the server cancels it, in milliseconds.
    /// Default 5000.
    pub statement_timeout_ms: u64,
    /// How long connecting (or waiting for a free connection) may take. Default 5.
    pub connect_timeout_secs: u64,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: None,
            host: None,
            socket_dir: None,
            port: 5432,
            database: "latchkey".into(),
            user: "latchkey".into(),
            tls: PostgresTls::VerifyFull,
            ca_file: None,
            password_file: None,
            password_env: None,
            password_credential: None,
            pool_size: 16,
            statement_timeout_ms: 5000,
            connect_timeout_secs: 5,
        }
    }
}

/// How the connection to PostgreSQL is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PostgresTls {
    /// Plain text: only for a Unix socket or a server on this machine.
    Disable,
    /// Encrypted; the certificate is not checked.
    Require,
    /// Encrypted; the certificate chain and the host name are checked.
    VerifyFull,
}

impl PostgresConfig {
    /// The password sources, for reading at start-up.
    pub(crate) fn password(&self) -> SecretSources<'_> {
        SecretSources {
            key: "store.postgres.password",
            keys: [
                "store.postgres.password_file",
                "store.postgres.password_env",
                "store.postgres.password_credential",
            ],
            file: self.password_file.as_deref(),
            env: self.password_env.as_deref(),
            credential: self.password_credential.as_deref(),
        }
    }

    /// Whether the connection stays on this machine, where plain text crosses no network.
    pub(crate) fn is_local(&self) -> bool {
        if self.socket_dir.is_some() {
            return true;
        }
        let host = match &self.url {
            Some(url) => url_host(url),
            None => self.host.clone(),
        };
        match host.as_deref() {
            None | Some("localhost") => true,
            Some(h) if h.starts_with('/') => true,
            Some(h) => h
                .trim_matches(|c| c == '[' || c == ']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()),
        }
    }
}

/// The host part of a `postgres://` URL, if it names one.
fn url_host(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))?;
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit('@').next()?;
    let host = if host_port.starts_with('[') {
        host_port.split(']').next().map(|h| format!("{h}]"))?
    } else {
        host_port.split(':').next()?.to_owned()
    };
    (!host.is_empty()).then_some(host)
}

impl StoreConfig {
    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), BadSetting> {
        if self.backup_saved_bytes < 1024 * 1024 {
            return Err(BadSetting::new(
                "store.backup_saved_bytes",
                "must be at least 1048576 (1 MiB)",
            ));
        }
        if self.outbox_key_file.is_some() && self.outbox_key_credential.is_some() {
            return Err(BadSetting::new(
                "store.outbox_key_file",
                "give only one of outbox_key_file and outbox_key_credential",
            ));
        }
        if let Some(name) = &self.outbox_key_credential {
            crate::setting::check_credential_name("store.outbox_key_credential", name)?;
        }
        if self.backend == Backend::Postgres {
            self.postgres.validate()?;
        }
        Ok(())
    }
}

impl PostgresConfig {
    /// See [`StoreConfig::validate`].
    fn validate(&self) -> Result<(), BadSetting> {
        let bad = |key, reason: &str| Err(BadSetting::new(key, reason));
        if let Some(url) = &self.url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return bad("store.postgres.url", "must start with postgres://");
            }
            if url_has_password(url) {
                return bad(
                    "store.postgres.url",
                    "must not hold a password; use password_file, password_env or \
                     password_credential",
                );
            }
            if self.host.is_some() || self.socket_dir.is_some() {
                return bad(
                    "store.postgres.url",
                    "give either url or host/socket_dir, not both",
                );
            }
            if url.parse::<tokio_postgres::Config>().is_err() {
                return bad("store.postgres.url", "is not a PostgreSQL connection URL");
            }
        }
        if self.host.is_some() && self.socket_dir.is_some() {
            return bad("store.postgres.host", "give either host or socket_dir");
        }
        if let Some(host) = &self.host {
            if host.trim().is_empty() || host.chars().any(char::is_whitespace) {
                return bad(
                    "store.postgres.host",
                    "must be a host name or an IP address",
                );
            }
        }
        if self.port == 0 {
            return bad("store.postgres.port", "must be between 1 and 65535");
        }
        if self.url.is_none() && (self.database.is_empty() || self.user.is_empty()) {
            return bad("store.postgres.database", "database and user must be set");
        }
        if self.pool_size == 0 || self.pool_size > 1024 {
            return bad("store.postgres.pool_size", "must be between 1 and 1024");
        }
        if self.statement_timeout_ms == 0 {
            return bad("store.postgres.statement_timeout_ms", "must be at least 1");
        }
        if self.connect_timeout_secs == 0 {
            return bad("store.postgres.connect_timeout_secs", "must be at least 1");
        }
        if self.ca_file.is_some() && self.tls != PostgresTls::VerifyFull {
            return bad(
                "store.postgres.ca_file",
                "is used only with tls = \"verify-full\"",
            );
        }
        if self.tls == PostgresTls::Disable && !self.is_local() {
            return bad(
                "store.postgres.tls",
                "\"disable\" would send password hashes in clear text to another machine; \
                 use \"verify-full\" (or \"require\")",
            );
        }
        check_secret_sources(&self.password(), false)
    }
}

/// Whether a URL carries `user:password@` or a `password=` parameter.
fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let in_authority = authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'));
    let in_query = url
        .split_once('?')
        .is_some_and(|(_, q)| q.split('&').any(|p| p.starts_with("password=")));
    in_authority || in_query
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(edit: impl FnOnce(&mut PostgresConfig)) -> Result<(), String> {
        let mut config = StoreConfig {
            backend: Backend::Postgres,
            ..StoreConfig::default()
        };
        edit(&mut config.postgres);
        config.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn a_local_server_may_go_without_tls_and_a_remote_one_may_not() {
        assert_eq!(pg(|_| {}), Ok(()));
        assert_eq!(pg(|c| c.tls = PostgresTls::Disable), Ok(()));
        assert_eq!(
            pg(|c| {
                c.socket_dir = Some("/run/postgresql".into());
                c.tls = PostgresTls::Disable;
            }),
            Ok(())
        );
        let remote = pg(|c| {
            c.host = Some("db.example.com".into());
            c.tls = PostgresTls::Disable;
        });
        assert!(remote.is_err_and(|e| e.starts_with("store.postgres.tls")));
        let remote_url = pg(|c| {
            c.url = Some("postgres://app@10.0.0.5:5432/latchkey".into());
            c.tls = PostgresTls::Disable;
        });
        assert!(remote_url.is_err_and(|e| e.starts_with("store.postgres.tls")));
        assert_eq!(
            pg(|c| {
                c.url = Some("postgres://app@[::1]:5432/latchkey".into());
                c.tls = PostgresTls::Disable;
            }),
            Ok(())
        );
    }

    #[test]
    fn a_password_in_the_url_is_refused_and_so_are_two_sources() {
        for url in [
            "postgres://app:hunter2@db/latchkey",
            "postgres://app@db/latchkey?password=hunter2",
        ] {
            let refused = pg(|c| c.url = Some(url.into()));
            assert!(
                refused
                    .as_ref()
                    .is_err_and(|e| e.starts_with("store.postgres.url") && !e.contains("hunter2")),
                "{url}: {refused:?}"
            );
        }
        let two = pg(|c| {
            c.password_env = Some("PGPASS".into());
            c.password_file = Some("/etc/pg".into());
        });
        assert!(two.is_err_and(|e| e.starts_with("store.postgres.password")));
        let prefixed = pg(|c| c.password_env = Some("LATCHKEY_PG".into()));
        assert!(prefixed.is_err_and(|e| e.starts_with("store.postgres.password_env")));
    }

    #[test]
    fn every_refusal_names_its_key() {
        type Edit = Box<dyn FnOnce(&mut PostgresConfig)>;
        let cases: Vec<(&str, Edit)> = vec![
            (
                "store.postgres.url",
                Box::new(|c| c.url = Some("mysql://x".into())),
            ),
            ("store.postgres.port", Box::new(|c| c.port = 0)),
            ("store.postgres.pool_size", Box::new(|c| c.pool_size = 0)),
            (
                "store.postgres.statement_timeout_ms",
                Box::new(|c| c.statement_timeout_ms = 0),
            ),
            (
                "store.postgres.ca_file",
                Box::new(|c| {
                    c.ca_file = Some("/ca.pem".into());
                    c.tls = PostgresTls::Require;
                }),
            ),
            (
                "store.postgres.host",
                Box::new(|c| {
                    c.host = Some("db".into());
                    c.socket_dir = Some("/run/postgresql".into());
                }),
            ),
        ];
        for (key, edit) in cases {
            let err = pg(edit).expect_err(key);
            assert!(err.starts_with(key), "expected {key}, got {err}");
        }
    }
}
