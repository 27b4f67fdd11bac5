//! A setting that parses but makes no sense, named by its dotted key. Each module that owns a
//! section of the configuration checks it and says what is wrong in these terms; the loader
//! in `config` reports it.

/// A setting outside what the daemon accepts.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct BadSetting {
    /// The dotted key, such as `passwords.memory_kib`.
    pub key: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl BadSetting {
    /// `key` is wrong because of `reason`.
    pub(crate) fn new(key: &'static str, reason: impl Into<String>) -> BadSetting {
        BadSetting {
            key,
            reason: reason.into(),
        }
    }
}

/// Where a secret (a password, a key) is read from: exactly one of a file, an environment
/// variable or a systemd credential, so the configuration itself never holds it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SecretSources<'a> {
    /// The dotted key the secret is for, such as `store.postgres.password`.
    pub(crate) key: &'static str,
    /// The dotted keys of the three sources, in the order file, env, credential.
    pub(crate) keys: [&'static str; 3],
    /// A file holding the secret.
    pub(crate) file: Option<&'a std::path::Path>,
    /// An environment variable holding it.
    pub(crate) env: Option<&'a str>,
    /// A systemd credential holding it.
    pub(crate) credential: Option<&'a str>,
}

/// Checks that at most one source is given (exactly one when `required`), and that each names
/// something that can hold a secret.
pub(crate) fn check_secret_sources(
    sources: &SecretSources<'_>,
    required: bool,
) -> Result<(), BadSetting> {
    let given = [
        sources.file.is_some(),
        sources.env.is_some(),
        sources.credential.is_some(),
    ]
    .into_iter()
    .filter(|g| *g)
    .count();
    // The keys as they are written in their section: `password_file`, ...
    let [file, env, credential] = sources
        .keys
        .map(|k| k.rsplit_once('.').map_or(k, |(_, name)| name));
    if given > 1 {
        return Err(BadSetting::new(
            sources.keys[0],
            format!("give only one of {file}, {env} and {credential}"),
        ));
    }
    if required && given == 0 {
        return Err(BadSetting::new(
            sources.key,
            format!("needs one of {file}, {env} or {credential}"),
        ));
    }
    if let Some(var) = sources.env {
        let key = sources.keys[1];
        if var.is_empty() || var.contains('=') || var.contains('\0') {
            return Err(BadSetting::new(key, "must be an environment variable name"));
        }
        if var.to_ascii_uppercase().starts_with("LATCHKEY_") {
            return Err(BadSetting::new(
                key,
                "must not start with LATCHKEY_ (such variables are read as settings)",
            ));
        }
    }
    if let Some(name) = sources.credential {
        check_credential_name(sources.keys[2], name)?;
    }
    Ok(())
}

/// Checks that `name` is a systemd credential name, not a path.
pub(crate) fn check_credential_name(key: &'static str, name: &str) -> Result<(), BadSetting> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(BadSetting::new(
            key,
            "must be a credential name, not a path",
        ));
    }
    Ok(())
}

/// The path of the systemd credential `name`, from `$CREDENTIALS_DIRECTORY`.
pub(crate) fn credential_path(
    key: &'static str,
    name: &str,
) -> Result<std::path::PathBuf, BadSetting> {
    let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
        return Err(BadSetting::new(
            key,
            "$CREDENTIALS_DIRECTORY is not set (start the daemon from a systemd unit with \
             LoadCredential=)",
        ));
    };
    Ok(std::path::Path::new(&dir).join(name))
}

/// Reads a text secret from its source, without one trailing newline; `None` when no source
/// is given. Never logged; errors name only where it was looked for.
pub(crate) fn read_secret(sources: &SecretSources<'_>) -> Result<Option<String>, BadSetting> {
    let from_file = |key: &'static str, path: &std::path::Path| {
        std::fs::read_to_string(path)
            .map_err(|e| BadSetting::new(key, format!("cannot read {}: {e}", path.display())))
    };
    let (key, raw) = if let Some(path) = sources.file {
        let key = sources.keys[0];
        (key, from_file(key, path)?)
    } else if let Some(var) = sources.env {
        let key = sources.keys[1];
        let value = std::env::var(var).map_err(|e| BadSetting::new(key, format!("${var}: {e}")))?;
        (key, value)
    } else if let Some(name) = sources.credential {
        let key = sources.keys[2];
        (key, from_file(key, &credential_path(key, name)?)?)
    } else {
        return Ok(None);
    };
    // Files written by `echo` end in a newline that is not part of the secret.
    let secret = raw
        .strip_suffix('\n')
        .map(|p| p.strip_suffix('\r').unwrap_or(p))
        .unwrap_or(&raw);
    if secret.is_empty() {
        return Err(BadSetting::new(key, "the secret is empty"));
    }
    Ok(Some(secret.to_owned()))
}
