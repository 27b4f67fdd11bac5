//! `[u8; 32]` as 64 lowercase hex digits in a serde record (the verifier hash of a token).
//! Records written before 0.1 hold an array of 32 numbers, which is read too; decoding that
//! array took most of a token check's time.

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserializer, Serializer};

const DIGITS: &[u8; 16] = b"0123456789abcdef";

pub(super) fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    let mut text = [0u8; 64];
    for (pair, b) in text.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
    s.serialize_str(std::str::from_utf8(&text).unwrap_or_default())
}

pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
    d.deserialize_any(Hex32)
}

struct Hex32;

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl<'de> Visitor<'de> for Hex32 {
    type Value = [u8; 32];

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("32 bytes as 64 lowercase hex digits")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<[u8; 32], E> {
        let digits = v.as_bytes();
        if digits.len() != 64 {
            return Err(E::invalid_length(digits.len(), &self));
        }
        let mut out = [0u8; 32];
        for (b, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
            match (nibble(pair[0]), nibble(pair[1])) {
                (Some(hi), Some(lo)) => *b = hi << 4 | lo,
                _ => return Err(E::invalid_value(de::Unexpected::Str(v), &self)),
            }
        }
        Ok(out)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; 32], A::Error> {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = seq
                .next_element()?
                .ok_or_else(|| de::Error::invalid_length(i, &self))?;
        }
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(33, &self));
        }
        Ok(out)
    }
}
