//! The reset token format: `<selector>.<verifier>`, both URL-safe base64 without padding. The
//! selector (128 random bits) names the stored record, so a lookup costs the same whatever the
//! number of live tokens; the verifier (256 random bits) is stored only as its SHA-256 and
//! compared in constant time. Both come from the OS CSPRNG.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// Characters of an encoded selector (16 bytes).
const SELECTOR_CHARS: usize = 22;
/// Characters of an encoded verifier (32 bytes).
const VERIFIER_CHARS: usize = 43;
/// Characters of a whole token.
pub const TOKEN_CHARS: usize = SELECTOR_CHARS + 1 + VERIFIER_CHARS;

/// A token in its raw form: only ever held in memory, in the sealed outbox, and in the mail.
pub struct RawToken {
    /// Names the stored record.
    pub selector: [u8; 16],
    /// The secret half.
    verifier: [u8; 32],
}

impl RawToken {
    /// A fresh random token.
    pub fn generate() -> RawToken {
        RawToken {
            selector: crate::random::bytes(),
            verifier: crate::random::bytes(),
        }
    }

    /// Parses a presented token; `None` for anything not exactly of the issued form.
    pub fn parse(text: &str) -> Option<RawToken> {
        if text.len() != TOKEN_CHARS {
            return None;
        }
        let (selector, verifier) = text.split_once('.')?;
        if selector.len() != SELECTOR_CHARS || verifier.len() != VERIFIER_CHARS {
            return None;
        }
        let selector = URL_SAFE_NO_PAD.decode(selector).ok()?.try_into().ok()?;
        let verifier = URL_SAFE_NO_PAD.decode(verifier).ok()?.try_into().ok()?;
        Some(RawToken { selector, verifier })
    }

    /// The text given to the user.
    pub fn encode(&self) -> String {
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(self.selector),
            URL_SAFE_NO_PAD.encode(self.verifier)
        )
    }

    /// What the store keeps of the verifier.
    pub fn verifier_hash(&self) -> [u8; 32] {
        Sha256::digest(self.verifier).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_are_url_safe() {
        let token = RawToken::generate();
        let text = token.encode();
        assert_eq!(text.len(), TOKEN_CHARS);
        assert!(text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
        let parsed = RawToken::parse(&text);
        assert!(parsed.as_ref().is_some_and(
            |p| p.selector == token.selector && p.verifier_hash() == token.verifier_hash()
        ));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let text = RawToken::generate().encode();
        for bad in [
            String::new(),
            text.replace('.', "-"),
            format!("{text}A"),
            text[1..].to_string(),
            format!("{}={}", &text[..22], &text[23..]),
            text.replacen(|c: char| c.is_ascii_alphanumeric(), "+", 1),
        ] {
            assert!(RawToken::parse(&bad).is_none(), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn parsing_any_text_never_panics_and_accepts_only_the_issued_form(text in ".{0,200}") {
            if let Some(token) = RawToken::parse(&text) {
                prop_assert_eq!(token.encode(), text);
            }
        }

        #[test]
        fn every_issued_token_round_trips(selector in any::<[u8; 16]>(), verifier in any::<[u8; 32]>()) {
            let token = RawToken { selector, verifier };
            let parsed = RawToken::parse(&token.encode());
            prop_assert!(parsed.is_some());
            let parsed = parsed.unwrap_or_else(RawToken::generate);
            prop_assert_eq!(parsed.selector, selector);
            prop_assert_eq!(parsed.verifier_hash(), token.verifier_hash());
        }

        #[test]
        fn changing_any_character_changes_what_the_token_names_or_proves(
            at in 0usize..TOKEN_CHARS,
            replacement in prop::sample::select(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ".to_vec()),
        ) {
            let token = RawToken::generate();
            let mut text = token.encode().into_bytes();
            prop_assume!(text[at] != replacement);
            text[at] = replacement;
            let text = String::from_utf8(text).expect("an encoded token is ASCII");
            if let Some(other) = RawToken::parse(&text) {
                prop_assert!(
                    other.selector != token.selector || other.verifier_hash() != token.verifier_hash()
                );
            }
        }
    }
}
