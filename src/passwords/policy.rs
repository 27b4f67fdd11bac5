//! The password policy (NIST SP 800-63B): a minimum and a maximum length counted in Unicode
//! code points after NFKC normalisation, no composition rules, no truncation, and a check
//! against commonly used passwords and the account's own address.

use unicode_normalization::UnicodeNormalization;

use super::Passwords;

/// Passwords so common that every guessing list starts with them. NIST SP 800-63B asks for a
/// blocklist; this short one catches the worst, and length does the rest.
const COMMON: &[&str] = &[
    "password",
    "password1",
    "password12",
    "password123",
    "password1234",
    "passw0rd",
    "12345678",
    "123456789",
    "1234567890",
    "12345678910",
    "87654321",
    "11111111",
    "00000000",
    "qwertyui",
    "qwertyuiop",
    "qwerty123",
    "qwerty12",
    "1q2w3e4r",
    "1q2w3e4r5t",
    "1qaz2wsx",
    "iloveyou",
    "sunshine",
    "princess",
    "football",
    "baseball",
    "welcome1",
    "welcome123",
    "letmein1",
    "letmein123",
    "admin123",
    "administrator",
    "changeme",
    "changeme123",
    "trustno1",
    "superman",
    "starwars",
    "whatever",
    "dragon123",
    "monkey123",
    "abc12345",
    "abcd1234",
    "abcdefgh",
    "aa123456",
    "asdfghjk",
    "zxcvbnm1",
    "zaq12wsx",
    "123qweasd",
    "q1w2e3r4",
    "q1w2e3r4t5",
    "p@ssw0rd",
    "p@ssword",
    "passwort",
    "motdepasse",
    "contraseña",
];

/// Why a password was refused; the message is shown to the user.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Fewer code points than the minimum.
    #[error("must be at least {min} characters long")]
    TooShort {
        /// The minimum.
        min: usize,
    },
    /// More code points than the maximum.
    #[error("must be at most {max} characters long")]
    TooLong {
        /// The maximum.
        max: usize,
    },
    /// More bytes than the byte cap.
    #[error("must be at most {max} bytes long")]
    TooManyBytes {
        /// The byte cap.
        max: usize,
    },
    /// Contains a NUL character, which many callers' string handling would cut the password at.
    #[error("must not contain a NUL character")]
    Nul,
    /// On the list of commonly used passwords.
    #[error("is too common; choose another")]
    Common,
    /// Is the account's email address or its local part.
    #[error("must not be your email address")]
    ContainsEmail,
}

impl Passwords {
    /// Checks a new password against the policy and returns the form to hash.
    pub fn check_policy(&self, password: &str, email: Option<&str>) -> Result<String, PolicyError> {
        let p = &self.inner.policy;
        // The byte cap comes first so a huge argument costs nothing more than its receipt.
        if password.len() > p.max_bytes {
            return Err(PolicyError::TooManyBytes { max: p.max_bytes });
        }
        if password.contains('\0') {
            return Err(PolicyError::Nul);
        }
        let normalised: String = password.nfkc().collect();
        let chars = normalised.chars().count();
        if chars < p.min_chars {
            return Err(PolicyError::TooShort { min: p.min_chars });
        }
        if chars > p.max_chars {
            return Err(PolicyError::TooLong { max: p.max_chars });
        }
        if normalised.len() > p.max_bytes {
            return Err(PolicyError::TooManyBytes { max: p.max_bytes });
        }
        let lower = normalised.to_lowercase();
        if COMMON.contains(&lower.as_str()) {
            return Err(PolicyError::Common);
        }
        if let Some(email) = email {
            let local = email.split('@').next().unwrap_or(email);
            if lower == email || (local.chars().count() >= p.min_chars && lower == local) {
                return Err(PolicyError::ContainsEmail);
            }
        }
        Ok(normalised)
    }

    /// The form of a password that gets hashed (NFKC), without any policy check: for
    /// rehashing a password that was accepted under an older policy.
    pub fn normalise(password: &str) -> String {
        password.nfkc().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passwords::test_pool;

    #[test]
    fn length_is_counted_in_code_points_after_nfkc() {
        let p = test_pool();
        // Seven ASCII letters are too short.
        assert_eq!(
            p.check_policy("abcdefg", None),
            Err(PolicyError::TooShort { min: 8 })
        );
        // Eight two-byte characters are eight characters, not sixteen bytes.
        assert!(p.check_policy("éééééééé", None).is_ok());
        // The ligature "ﬃ" is one code point but NFKC makes it three.
        assert_eq!(
            p.check_policy("ﬃﬃ", None),
            Err(PolicyError::TooShort { min: 8 })
        );
        assert!(p.check_policy("ﬃﬃﬃ", None).is_ok());
    }

    #[test]
    fn long_passwords_are_refused_not_truncated() {
        let p = test_pool();
        assert!(p.check_policy(&"a".repeat(256), None).is_ok());
        assert_eq!(
            p.check_policy(&"b".repeat(257), None),
            Err(PolicyError::TooLong { max: 256 })
        );
        assert_eq!(
            p.check_policy(&"c".repeat(5000), None),
            Err(PolicyError::TooManyBytes { max: 1024 })
        );
    }

    #[test]
    fn common_and_email_passwords_are_refused() {
        let p = test_pool();
        assert_eq!(
            p.check_policy("Password123", None),
            Err(PolicyError::Common)
        );
        assert_eq!(
            p.check_policy("someone@example.com", Some("someone@example.com")),
            Err(PolicyError::ContainsEmail)
        );
        assert_eq!(
            p.check_policy("longlocalpart", Some("longlocalpart@example.com")),
            Err(PolicyError::ContainsEmail)
        );
        assert_eq!(p.check_policy("abc\0defghij", None), Err(PolicyError::Nul));
    }
}
