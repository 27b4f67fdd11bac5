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
