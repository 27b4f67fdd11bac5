//! Checks on caller-supplied fields other than passwords. Each returns the normalised value or
//! a typed error naming the field; nothing is stored until every field has passed.

use std::net::IpAddr;

use latchkey_client::ApiError;

/// Longest email accepted (RFC 5321's path limit).
pub const MAX_EMAIL_BYTES: usize = 254;
/// Longest display name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest role label, in bytes.
pub const MAX_ROLE_BYTES: usize = 64;
/// Longest locale tag, in bytes.
pub const MAX_LOCALE_BYTES: usize = 35;

/// Trims and lowercases an email and checks that it is a plausible address: one `@`, a
/// non-empty local part of at most 64 bytes, a domain with a dot and no empty labels, no
/// whitespace or control characters. Deliverability is the mail server's business.
pub fn email(raw: &str) -> Result<String, ApiError> {
    let email = raw.trim().to_lowercase();
    if email.is_empty() || email.len() > MAX_EMAIL_BYTES {
        return Err(ApiError::InvalidEmail);
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Err(ApiError::InvalidEmail);
    };
    let bad_char = |c: char| {
        c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"' | '\\' | '@')
    };
    if local.is_empty()
        || local.len() > 64
        || local.chars().any(bad_char)
        || domain.chars().any(bad_char)
        || !domain.contains('.')
        || domain
            .split('.')
            .any(|label| label.is_empty() || label.len() > 63)
    {
        return Err(ApiError::InvalidEmail);
    }
    Ok(email)
}

/// A display name: trimmed, at most [`MAX_NAME_BYTES`], no control characters.
pub fn name(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim();
    if name.len() > MAX_NAME_BYTES {
        return Err(invalid(
            "name",
            format!("longer than {MAX_NAME_BYTES} bytes"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid("name", "contains control characters".into()));
    }
    Ok(name.to_owned())
}

/// A role label: `"user"` when absent; otherwise 1 to 64 bytes of ASCII letters, digits, `-`,
/// `_`, `.` or `:`.
pub fn role(raw: Option<&str>) -> Result<String, ApiError> {
    let role = raw.map(str::trim).unwrap_or("user");
    if role.is_empty()
        || role.len() > MAX_ROLE_BYTES
        || !role
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    {
        return Err(invalid(
            "role",
            format!("must be 1 to {MAX_ROLE_BYTES} ASCII letters, digits, '-', '_', '.' or ':'"),
        ));
    }
    Ok(role.to_owned())
}

/// A BCP 47-style locale tag such as `de` or `pt-BR` (letters, digits and `-`/`_`, starting
/// with a letter); `_` is turned into `-`. Absent or empty means none.
pub fn locale(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(tag) = raw.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let ok = tag.len() <= MAX_LOCALE_BYTES
        && tag.starts_with(|c: char| c.is_ascii_alphabetic())
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        return Err(invalid(
            "locale",
            "must be a language tag such as \"en\" or \"pt-BR\"".into(),
        ));
    }
    Ok(Some(tag.replace('_', "-")))
}

/// A client IP address as the application saw it; absent is allowed (the call then skips the
/// per-IP rate limits; the per-email and per-account ones still apply).
pub fn client_ip(raw: Option<&str>) -> Result<Option<IpAddr>, ApiError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| invalid("client_ip", "not an IPv4 or IPv6 address".into())),
    }
}

fn invalid(field: &str, reason: String) -> ApiError {
    ApiError::InvalidInput {
        field: field.into(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lowercased() {
        assert_eq!(email("  Ada@Example.COM \n"), Ok("ada@example.com".into()));
    }

    #[test]
    fn implausible_emails_are_refused() {
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "a b@example.com",
            "ada@@example.com",
            "ada@example..com",
            "ada@exa\0mple.com",
            "<ada@example.com>",
        ] {
            assert_eq!(email(bad), Err(ApiError::InvalidEmail), "{bad:?}");
        }
        assert_eq!(
            email(&format!("{}@example.com", "a".repeat(65))),
            Err(ApiError::InvalidEmail)
        );
    }

    #[test]
    fn locales_and_roles() {
        assert_eq!(locale(Some("pt_BR")), Ok(Some("pt-BR".into())));
        assert_eq!(locale(Some("")), Ok(None));
        assert!(locale(Some("../../etc")).is_err());
        assert_eq!(role(None), Ok("user".into()));
        assert!(role(Some("admin; drop")).is_err());
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn email_normalisation_never_panics_and_is_idempotent(raw in "\\PC{0,80}") {
            if let Ok(normal) = email(&raw) {
                prop_assert_eq!(email(&normal), Ok(normal.clone()));
                prop_assert_eq!(normal.trim(), normal.as_str());
                prop_assert_eq!(normal.to_lowercase(), normal.clone());
                prop_assert!(normal.len() <= MAX_EMAIL_BYTES);
            }
        }

        #[test]
        fn case_and_surrounding_space_variants_of_an_address_are_one_address(
            local in "[a-z0-9._+-]{1,20}",
            domain in "[a-z0-9-]{1,20}\\.[a-z]{2,6}",
            pad in "[ \\t\\n]{0,3}",
        ) {
            let plain = format!("{local}@{domain}");
            let variant = format!("{pad}{}{pad}", plain.to_uppercase());
            prop_assert_eq!(email(&variant), email(&plain));
        }

        #[test]
        fn other_fields_never_panic(raw in "\\PC{0,300}") {
            let _ = name(&raw);
            let _ = role(Some(&raw));
            let _ = locale(Some(&raw));
            let _ = client_ip(Some(&raw));
        }
    }
}
