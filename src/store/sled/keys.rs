//! Every key encoding of the store, in one place. Integers are fixed-width big-endian so that
//! sled's byte order is numeric order; composite keys concatenate fixed-width parts, so a
//! prefix scan over the leading part finds all entries of one owner.

/// Key of a user record: the id.
pub fn user(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// Reads an id written by [`user`] (or any 8-byte big-endian integer value).
pub fn read_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

/// Key of the email index: the normalised address.
pub fn email(normalised: &str) -> &[u8] {
    normalised.as_bytes()
}

/// Key of the expiry index: expiry time, then the item's own key, so a scan from the start
/// finds what has expired first.
pub fn expiry(expires_at: u64, item: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + item.len());
    key.extend_from_slice(&expires_at.to_be_bytes());
    key.extend_from_slice(item);
    key
}

/// Key of an outbox schedule entry: when the next attempt is due, then the message id.
pub fn due(at: u64, id: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&at.to_be_bytes());
    key[8..].copy_from_slice(&id.to_be_bytes());
    key
}

/// The second 8-byte half of a 16-byte key such as [`due`].
pub fn second_u64(key: &[u8]) -> Option<u64> {
    read_u64(key.get(8..)?)
}
