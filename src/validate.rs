//! Checks on caller-supplied fields other than passwords. Each returns the normalised value or
//! a typed error naming the field; nothing is stored until every field has passed.

use std::net::IpAddr;

use latchkey_client::ApiError;

pub use crate::store::DEFAULT_ROLE;
use unicode_normalization::UnicodeNormalization as _;

/// Longest email accepted (RFC 5321's path limit).
pub const MAX_EMAIL_BYTES: usize = 254;
/// Longest display name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest role label, in bytes.
pub const MAX_ROLE_BYTES: usize = 64;
/// Longest locale tag, in bytes.
pub const MAX_LOCALE_BYTES: usize = 35;

/// Trims, lowercases and NFC-normalises an email and checks that it is a plausible address:
/// one `@`, a non-empty local part of at most 64 bytes, no whitespace, control or invisible
/// characters ([`invisible`]), and a domain with a dot that UTS 46 (IDNA) accepts. The
/// domain is kept in its Unicode form after UTS 46 mapping, so `exämple.com`, `EXÄMPLE.com`
/// and `xn--exmple-cua.com` are one domain and one account. Deliverability is the mail
/// server's business.
pub fn email(raw: &str) -> Result<String, ApiError> {
    let email: String = raw.trim().to_lowercase().nfc().collect();
    if email.is_empty() || email.len() > MAX_EMAIL_BYTES {
        return Err(ApiError::InvalidEmail);
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Err(ApiError::InvalidEmail);
    };
    let bad_char = |c: char| {
        c.is_whitespace() || invisible(c) || matches!(c, '<' | '>' | ',' | ';' | '"' | '\\' | '@')
    };
    if local.is_empty() || local.len() > 64 || local.chars().any(bad_char) {
        return Err(ApiError::InvalidEmail);
    }
    if domain.chars().any(bad_char) {
        return Err(ApiError::InvalidEmail);
    }
    // STD3 rules (letters, digits and hyphens in every ASCII label) and DNS lengths, on the
    // ASCII form; then back to Unicode, the one form stored.
    let ascii = idna::domain_to_ascii_strict(domain).map_err(|_| ApiError::InvalidEmail)?;
    let (domain, checked) = idna::domain_to_unicode(&ascii);
    if checked.is_err()
        || !domain.contains('.')
        || domain.split('.').any(str::is_empty)
        || domain.chars().any(bad_char)
    {
        return Err(ApiError::InvalidEmail);
    }
    let email = format!("{local}@{domain}");
    if email.len() > MAX_EMAIL_BYTES {
        return Err(ApiError::InvalidEmail);
    }
    Ok(email)
}

/// Whether `c` is a character a reader cannot see or that changes how the text around it
/// is shown: controls, format characters (zero-width spaces and joiners, bidirectional
/// controls such as U+202E, the byte order mark, soft hyphens), line and paragraph
/// separators, private-use and unassigned code points, and the other default-ignorable
/// code points that are letters or marks by category (Hangul fillers, variation selectors,
/// the combining grapheme joiner). Two addresses or names that differ only by such
/// characters would look the same.
pub fn invisible(c: char) -> bool {
    use unicode_properties::{GeneralCategory as G, UnicodeGeneralCategory as _};
    matches!(
        c.general_category(),
        G::Control
            | G::Format
            | G::LineSeparator
            | G::ParagraphSeparator
            | G::PrivateUse
            | G::Surrogate
            | G::Unassigned
    ) || matches!(
        c,
        '\u{034F}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FFA0}'
            | '\u{E0100}'..='\u{E01EF}'
    )
}

/// A display name: trimmed and NFC-normalised, at most [`MAX_NAME_BYTES`], no control or
/// invisible characters ([`invisible`]).
pub fn name(raw: &str) -> Result<String, ApiError> {
    let name: String = raw.trim().nfc().collect();
    if name.len() > MAX_NAME_BYTES {
        return Err(invalid(
            "name",
            format!("longer than {MAX_NAME_BYTES} bytes"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid("name", "contains control characters".into()));
    }
    if let Some(c) = name.chars().find(|&c| invisible(c)) {
        return Err(invalid(
            "name",
            format!(
                "contains the invisible or direction-changing character U+{:04X}",
                u32::from(c)
            ),
        ));
    }
    Ok(name)
}

/// A role label: `"user"` when absent; otherwise 1 to 64 bytes of ASCII letters, digits, `-`,
/// `_`, `.` or `:`.
pub fn role(raw: Option<&str>) -> Result<String, ApiError> {
    let role = raw.map(str::trim).unwrap_or(DEFAULT_ROLE);
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
    fn invisible_and_direction_characters_are_refused_in_emails_and_names() {
        // Issue 19, item 8: `ada\u{200b}@example.com` was a second account that looks like
        // `ada@example.com`.
        for c in [
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{2060}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{202E}',
            '\u{202A}',
            '\u{2066}',
            '\u{200F}',
            '\u{061C}',
            '\u{2028}',
            '\u{2029}',
            '\u{3164}',
            '\u{115F}',
            '\u{FE0F}',
            '\u{034F}',
            '\u{E000}',
            '\u{E0001}',
        ] {
            let u = u32::from(c);
            assert_eq!(
                email(&format!("ada{c}@example.com")),
                Err(ApiError::InvalidEmail),
                "U+{u:04X} in the local part"
            );
            assert_eq!(
                email(&format!("ada@exam{c}ple.com")),
                Err(ApiError::InvalidEmail),
                "U+{u:04X} in the domain"
            );
            match name(&format!("Ada{c}Lovelace")) {
                Err(ApiError::InvalidInput { field, reason }) => {
                    assert_eq!(field, "name");
                    assert!(reason.contains(&format!("U+{u:04X}")), "{reason}");
                }
                other => panic!("U+{u:04X} in a name: {other:?}"),
            }
        }
        // Visible letters of every script stay welcome.
        assert_eq!(name(" Zoë 李 Ñandú "), Ok("Zoë 李 Ñandú".into()));
        assert_eq!(email("zoë@example.com"), Ok("zoë@example.com".into()));
    }

    #[test]
    fn an_internationalised_domain_is_one_domain_in_every_form_it_is_written_in() {
        let one = Ok("ada@exämple.com".to_owned());
        for form in [
            "ada@exämple.com",
            "ada@EXÄMPLE.COM",
            "ada@xn--exmple-cua.com",
            "ADA@XN--EXMPLE-CUA.COM",
            // Decomposed: a + combining diaeresis.
            "ada@exa\u{0308}mple.com",
            // A fullwidth full stop, which UTS 46 maps to '.'.
            "ada@exämple\u{FF0E}com",
        ] {
            assert_eq!(email(form), one, "{form:?}");
        }
        // NFC in the local part too.
        assert_eq!(
            email("zoe\u{0308}@example.com"),
            Ok("zoë@example.com".into())
        );
        for bad in ["ada@xn--zz.com", "ada@ex_ample.com", "ada@-example.com"] {
            assert_eq!(email(bad), Err(ApiError::InvalidEmail), "{bad:?}");
        }
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
