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
