//! The `[passwords]` settings: argon2id parameters and the password policy.

use serde::{Deserialize, Serialize};

use super::{check_argon2_cost, MAX_MEMORY_KIB};
use crate::setting::BadSetting;

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

impl PasswordConfig {
    /// Checks values that parse but make no sense.
    pub(crate) fn validate(&self) -> Result<(), BadSetting> {
        if self.memory_kib < 19456 {
            return Err(BadSetting::new(
                "passwords.memory_kib",
                "must be at least 19456 (the OWASP minimum for argon2id)",
            ));
        }
        if self.iterations < 2 {
            return Err(BadSetting::new(
                "passwords.iterations",
                "must be at least 2",
            ));
        }
        if self.memory_kib > MAX_MEMORY_KIB {
            return Err(BadSetting::new(
                "passwords.memory_kib",
                format!("must be at most {MAX_MEMORY_KIB}"),
            ));
        }
        check_argon2_cost(self.memory_kib, self.iterations)
            .map_err(|reason| BadSetting::new("passwords.iterations", reason))?;
        if self.parallelism < 1 {
            return Err(BadSetting::new(
                "passwords.parallelism",
                "must be at least 1",
            ));
        }
        if self.min_chars < 8 {
            return Err(BadSetting::new(
                "passwords.min_chars",
                "must be at least 8 (NIST SP 800-63B)",
            ));
        }
        if self.max_chars < 64 || self.max_chars < self.min_chars {
            return Err(BadSetting::new(
                "passwords.max_chars",
                "must be at least 64 (NIST SP 800-63B) and at least min_chars",
            ));
        }
        if self.max_bytes < self.max_chars {
            return Err(BadSetting::new(
                "passwords.max_bytes",
                "must be at least max_chars",
            ));
        }
        Ok(())
    }

    /// The number of hashes computed at once.
    pub(crate) fn concurrency(&self) -> usize {
        match self.max_concurrent_hashes {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}
