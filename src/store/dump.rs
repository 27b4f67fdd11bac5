//! The backup file: every record of a store at one point in time, in a form that does not
//! depend on the backend, so a backup of sled restores into sled or loads into PostgreSQL.
//!
//! JSON lines, readable with `jq` and `grep`:
//! - a header (`format`, `version`, where it came from, the id counter, the outbox key check);
//! - one line per record: `{"user":…}`, `{"token":…}`, `{"mail":…}`, `{"event":…}`. Indexes
//!   (the email index, each user's token list, the schedules) are not in the file: a restore
//!   rebuilds them from the records;
//! - a trailer `{"end":{"counts":…,"sha256":…}}`, the SHA-256 of every byte before it.
//!
//! The file holds password hashes (the store's, as `latchkey export` gives them), only the
//! SHA-256 of each token's verifier, and mail sealed under the outbox key, which is not in it:
//! a stolen backup gives no usable token, and without the key only the queued mail is lost.
//! The checksum finds damage and truncation; it does not stop someone who can write the file
//! from forging one, so keep backups where only operators can write.

use std::collections::HashSet;
use std::io::BufRead;
use std::path::Path;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::records::{EventRecord, OutboxRecord, OutboxState, TokenRecord, UserRecord};

/// The `format` of every backup file.
pub const FORMAT: &str = "latchkey-backup";

/// The newest file version this daemon writes and reads.
pub const VERSION: u32 = 1;

/// The first line of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// The file version; a reader refuses a newer one.
    pub version: u32,
    /// When the snapshot was taken (Unix seconds).
    pub created_at: u64,
    /// The latchkeyd version that wrote it.
    pub daemon_version: String,
    /// The backend it was taken from (`sled` or `postgres`).
    pub backend: String,
    /// Every id in the file (users, messages, events) is below this; a restored store hands
    /// out ids from here on, so none is reused.
    pub next_id: u64,
    /// The outbox key check value of the source store (hex), if it had one: tells a restore
    /// whether the key it is given is the one the queued mail was sealed under.
    pub outbox_key_check: Option<String>,
}

impl Header {
    /// A header for a snapshot of `backend` taken now.
    pub(super) fn new(backend: &str, next_id: u64, key_check: Option<&[u8]>) -> Header {
        Header {
            format: FORMAT.into(),
            version: VERSION,
            created_at: crate::clock::now(),
            daemon_version: env!("CARGO_PKG_VERSION").into(),
            backend: backend.into(),
            next_id,
            outbox_key_check: key_check.map(hex),
        }
    }

    /// The outbox key check value, decoded.
    pub fn key_check(&self) -> Option<Vec<u8>> {
        self.outbox_key_check.as_deref().and_then(unhex)
    }
}

/// A reset token with its selector (the verifier only as a hash, as stored).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpToken {
    /// The selector, hex.
    pub selector: String,
    /// The record.
    pub record: TokenRecord,
}

/// A message: the stored record with its sealed payload in base64.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpMail {
    /// The message id.
    pub id: u64,
    /// When it was queued (Unix seconds).
    pub created_at: u64,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// When the next attempt is due (Unix milliseconds).
    pub next_attempt_ms: u64,
    /// Queued or dead.
    pub state: OutboxState,
    /// The last delivery error.
    pub last_error: Option<String>,
    /// The payload sealed under the outbox key, base64.
    pub sealed: String,
}

impl DumpMail {
    /// The dump form of a stored message.
    pub(super) fn from_record(record: &OutboxRecord) -> DumpMail {
        DumpMail {
            id: record.id,
            created_at: record.created_at,
            attempts: record.attempts,
            next_attempt_ms: record.next_attempt_ms,
            state: record.state,
            last_error: record.last_error.clone(),
            sealed: base64::engine::general_purpose::STANDARD.encode(&record.payload),
        }
    }

    /// The stored message again; `None` if the payload is not base64.
    pub(super) fn to_record(&self) -> Option<OutboxRecord> {
        let payload = base64::engine::general_purpose::STANDARD
            .decode(&self.sealed)
            .ok()?;
        Some(OutboxRecord {
            id: self.id,
            created_at: self.created_at,
            attempts: self.attempts,
            next_attempt_ms: self.next_attempt_ms,
            state: self.state,
            last_error: self.last_error.clone(),
            payload,
        })
    }
}

/// How many records of each kind a backup holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    /// Accounts.
    pub users: u64,
    /// Token records, live or remembered.
    pub tokens: u64,
    /// Messages, queued or dead.
    pub mail: u64,
    /// Events.
    pub events: u64,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} users, {} tokens, {} messages, {} events",
            self.users, self.tokens, self.mail, self.events
        )
    }
}

/// The last line: the counts and the checksum of everything before it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trailer {
    /// Records of each kind.
    pub counts: Counts,
    /// SHA-256 of every byte before this line, hex.
    pub sha256: String,
}

/// One line after the header.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Item {
    /// An account.
    User(UserRecord),
    /// A reset token record.
    Token(DumpToken),
    /// An outbox message.
    Mail(DumpMail),
    /// An event.
    Event(EventRecord),
    /// The trailer.
    End(Trailer),
}

/// Why a backup file was refused. Each names the line where it applies.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// The file could not be read.
    #[error("cannot read the backup: {0}")]
    Io(#[from] std::io::Error),
    /// The first line is not a latchkey backup header.
    #[error("not a latchkey backup: {0}")]
    NotABackup(String),
    /// Written by a newer latchkeyd.
    #[error("backup version {found} is newer than the {known} this latchkeyd {daemon} reads; restore it with the latchkeyd that wrote it ({writer}) or newer")]
    Newer {
        /// The file's version.
        found: u64,
        /// The newest this build reads.
        known: u32,
        /// This build.
        daemon: &'static str,
        /// The build that wrote it.
        writer: String,
    },
    /// The file ends before its trailer.
    #[error("the backup is truncated: it ends at line {0} without its trailer")]
    Truncated(u64),
    /// The checksum does not match.
    #[error("the backup's checksum does not match its contents: the file was damaged or changed after it was written")]
    Checksum,
    /// A line does not decode.
    #[error("line {line}: {reason}")]
    Bad {
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        reason: String,
    },
}

impl DumpError {
    fn bad(line: u64, reason: impl Into<String>) -> DumpError {
        DumpError::Bad {
            line,
            reason: reason.into(),
        }
    }
}

/// Writes a backup's lines, keeping the counts and the checksum.
pub struct Writer {
    /// Over every byte written so far.
    hash: Sha256,
    /// Records written so far.
    counts: Counts,
}

impl Writer {
    /// Starts a backup with its header line, returned in `out`.
    pub(super) fn start(header: &Header, out: &mut Vec<u8>) -> Result<Writer, serde_json::Error> {
        let mut writer = Writer {
            hash: Sha256::new(),
            counts: Counts::default(),
        };
        let start = out.len();
        serde_json::to_writer(&mut *out, header)?;
        out.push(b'\n');
        writer.hash.update(&out[start..]);
        Ok(writer)
    }

    /// One record's line.
    pub(super) fn line(&mut self, item: &Item) -> Result<Vec<u8>, serde_json::Error> {
        let mut line = serde_json::to_vec(item)?;
        line.push(b'\n');
        match item {
            Item::User(_) => self.counts.users += 1,
            Item::Token(_) => self.counts.tokens += 1,
            Item::Mail(_) => self.counts.mail += 1,
            Item::Event(_) => self.counts.events += 1,
            Item::End(_) => {}
        }
        self.hash.update(&line);
        Ok(line)
    }

    /// The trailer line.
    pub(super) fn end(&self) -> Result<(Vec<u8>, Counts), serde_json::Error> {
        let trailer = Item::End(Trailer {
            counts: self.counts,
            sha256: hex(&self.hash.clone().finalize()),
        });
        let mut line = serde_json::to_vec(&trailer)?;
        line.push(b'\n');
        Ok((line, self.counts))
    }
}

/// What a verified backup holds.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Its header.
    pub header: Header,
    /// Its records.
    pub counts: Counts,
}

/// What the records seen so far have claimed, to find duplicates and dangling references.
#[derive(Default)]
struct Seen {
    users: HashSet<u64>,
    emails: HashSet<[u8; 16]>,
    selectors: HashSet<[u8; 16]>,
    mail: HashSet<u64>,
    events: HashSet<u64>,
}

/// A backup being read, checked line by line as it goes: [`Reader::next`] gives each record
/// in file order, and `None` only after the trailer's counts and checksum matched. What came
/// before an error must be discarded: a restore writes where it can throw it away, or checks
/// the whole file first ([`verify`]).
pub struct Reader {
    input: std::io::BufReader<std::fs::File>,
    hash: Sha256,
    buf: Vec<u8>,
    line_no: u64,
    header: Header,
    seen: Seen,
    counts: Counts,
    ended: bool,
}

impl Reader {
    /// Opens a backup and reads its header.
    pub fn open(path: &Path) -> Result<Reader, DumpError> {
        let file = std::fs::File::open(path)?;
        let mut input = std::io::BufReader::with_capacity(1 << 20, file);
        let mut buf = Vec::new();
        if input.read_until(b'\n', &mut buf)? == 0 {
            return Err(DumpError::NotABackup("the file is empty".into()));
        }
        let header = parse_header(&buf)?;
        let mut hash = Sha256::new();
        hash.update(&buf);
        Ok(Reader {
            input,
            hash,
            buf,
            line_no: 1,
            header,
            seen: Seen::default(),
            counts: Counts::default(),
            ended: false,
        })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The next record; `None` once the trailer has been read and matched.
    #[allow(clippy::should_implement_trait)] // Fallible, and it ends by verifying.
    pub fn next(&mut self) -> Result<Option<Item>, DumpError> {
        if self.ended {
            return Ok(None);
        }
        self.buf.clear();
        if self.input.read_until(b'\n', &mut self.buf)? == 0 || self.buf.last() != Some(&b'\n') {
            return Err(DumpError::Truncated(self.line_no));
        }
        self.line_no += 1;
        let line_no = self.line_no;
        let item: Item = serde_json::from_slice(&self.buf)
            .map_err(|e| DumpError::bad(line_no, format!("not a backup record: {e}")))?;
        if let Item::End(trailer) = &item {
            if hex(&self.hash.clone().finalize()) != trailer.sha256 {
                return Err(DumpError::Checksum);
            }
            if trailer.counts != self.counts {
                return Err(DumpError::bad(
                    line_no,
                    format!(
                        "the trailer counts {} but the file holds {}",
                        trailer.counts, self.counts
                    ),
                ));
            }
            self.buf.clear();
            if self.input.read_until(b'\n', &mut self.buf)? != 0 {
                return Err(DumpError::bad(line_no + 1, "data after the trailer"));
            }
            self.ended = true;
            return Ok(None);
        }
        self.hash.update(&self.buf);
        check(&item, &self.header, &mut self.seen)
            .map_err(|reason| DumpError::bad(line_no, reason))?;
        match &item {
            Item::User(_) => self.counts.users += 1,
            Item::Token(_) => self.counts.tokens += 1,
            Item::Mail(_) => self.counts.mail += 1,
            Item::Event(_) => self.counts.events += 1,
            Item::End(_) => {}
        }
        Ok(Some(item))
    }

    /// What the file held, once [`Reader::next`] has given `None`.
    pub fn summary(&self) -> Summary {
        Summary {
            header: self.header.clone(),
            counts: self.counts,
        }
    }
}

/// Reads a backup, checking it line by line; calls `visit` with each record in file order.
/// See [`Reader`] for what an error means for what `visit` saw.
pub fn read(
    path: &Path,
    mut visit: impl FnMut(&Item) -> Result<(), DumpError>,
) -> Result<Summary, DumpError> {
    let mut reader = Reader::open(path)?;
    while let Some(item) = reader.next()? {
        visit(&item)?;
    }
    Ok(reader.summary())
}

/// Checks a file without restoring it.
pub fn verify(path: &Path) -> Result<Summary, DumpError> {
    read(path, |_| Ok(()))
}

/// Reads the header line, refusing anything but a backup of a version this build reads.
fn parse_header(line: &[u8]) -> Result<Header, DumpError> {
    let value: serde_json::Value = serde_json::from_slice(line)
        .map_err(|e| DumpError::NotABackup(format!("the first line is not JSON: {e}")))?;
    if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(DumpError::NotABackup(format!(
            "the first line has no \"format\": \"{FORMAT}\""
        )));
    }
    let version = value.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
    if version > u64::from(VERSION) {
        return Err(DumpError::Newer {
            found: version,
            known: VERSION,
            daemon: env!("CARGO_PKG_VERSION"),
            writer: value
                .get("daemon_version")
                .and_then(|v| v.as_str())
                .unwrap_or("unknown")
                .to_owned(),
        });
    }
    let header: Header = serde_json::from_value(value)
        .map_err(|e| DumpError::bad(1, format!("a bad header: {e}")))?;
    if header.version == 0 {
        return Err(DumpError::bad(1, "version 0"));
    }
    if header.outbox_key_check.is_some() && header.key_check().is_none() {
        return Err(DumpError::bad(1, "outbox_key_check is not hex"));
    }
    Ok(header)
}

/// Checks one record on its own and against the records before it.
fn check(item: &Item, header: &Header, seen: &mut Seen) -> Result<(), String> {
    let below = |what: &str, id: u64| {
        if id == 0 || id >= header.next_id {
            Err(format!(
                "{what} {id} is outside the ids the header allows (1 to {})",
                header.next_id.saturating_sub(1)
            ))
        } else {
            Ok(())
        }
    };
    match item {
        Item::User(u) => {
            below("user id", u.id)?;
            if u.email.is_empty() || !u.email.contains('@') || u.email.len() > 320 {
                return Err(format!("user {}: not an email address", u.id));
            }
            if !u.password_hash.starts_with('$') {
                return Err(format!(
                    "user {}: the password hash is not a PHC string",
                    u.id
                ));
            }
            if !seen.users.insert(u.id) {
                return Err(format!("user {} appears twice", u.id));
            }
            if !seen.emails.insert(short_hash(u.email.as_bytes())) {
                return Err(format!("user {}: another user has the same email", u.id));
            }
        }
        Item::Token(t) => {
            let selector = selector(&t.selector)
                .ok_or_else(|| "a token selector is not 32 hex digits".to_owned())?;
            if !seen.selectors.insert(selector) {
                return Err("a token appears twice".into());
            }
            // A snapshot has no token without its user: deleting a user deletes its tokens in
            // the same transaction.
            if !seen.users.contains(&t.record.user_id) {
                return Err(format!(
                    "a token of user {} comes before or without that user",
                    t.record.user_id
                ));
            }
        }
        Item::Mail(m) => {
            below("message id", m.id)?;
            if m.to_record().is_none() {
                return Err(format!(
                    "message {}: the sealed payload is not base64",
                    m.id
                ));
            }
            if !seen.mail.insert(m.id) {
                return Err(format!("message {} appears twice", m.id));
            }
        }
        Item::Event(e) => {
            below("event", e.seq)?;
            if !seen.events.insert(e.seq) {
                return Err(format!("event {} appears twice", e.seq));
            }
        }
        Item::End(_) => {}
    }
    Ok(())
}

/// The first 16 bytes of a SHA-256: a set of them finds duplicate emails in a million
/// accounts without keeping every address.
fn short_hash(bytes: &[u8]) -> [u8; 16] {
    let digest = Sha256::digest(bytes);
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// Lowercase hex.
pub(super) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    text
}

/// Reads lowercase or uppercase hex.
pub(super) fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    text.as_bytes()
        .chunks_exact(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// A token selector from its hex form.
pub(super) fn selector(text: &str) -> Option<[u8; 16]> {
    unhex(text)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use latchkey_client::UserStatus;

    use super::*;

    fn user(id: u64, email: &str) -> Item {
        Item::User(UserRecord {
            id,
            email: email.into(),
            name: "N".into(),
            role: "user".into(),
            status: UserStatus::Active,
            password_hash: "$argon2id$x".into(),
            locale: None,
            created_at: 1,
            updated_at: 1,
            password_changed_at: 1,
            credential_epoch: 0,
        })
    }

    fn write(items: &[Item]) -> Vec<u8> {
        let mut out = Vec::new();
        let header = Header::new("sled", 100, Some(b"check"));
        let mut writer = Writer::start(&header, &mut out).expect("header");
        for item in items {
            out.extend(writer.line(item).expect("line"));
        }
        out.extend(writer.end().expect("end").0);
        out
    }

    fn verify_bytes(bytes: &[u8]) -> Result<Summary, DumpError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b");
        std::fs::write(&path, bytes).expect("write");
        verify(&path)
    }

    #[test]
    fn a_written_backup_verifies_and_damage_of_any_kind_is_refused() {
        let good = write(&[user(1, "a@x.org"), user(2, "b@x.org")]);
        let summary = verify_bytes(&good).expect("a fresh backup verifies");
        assert_eq!(summary.counts.users, 2);
        assert_eq!(summary.header.key_check().as_deref(), Some(&b"check"[..]));

        // Truncated anywhere: at the trailer, mid-line, after the header.
        for cut in [good.len() - 1, good.len() / 2, good.len() - 70] {
            let err = verify_bytes(&good[..cut]).expect_err("a truncated file");
            assert!(
                matches!(err, DumpError::Truncated(_) | DumpError::Bad { .. }),
                "{cut}: {err}"
            );
        }
        // One byte changed inside a record.
        let text = String::from_utf8(good.clone()).expect("utf8");
        let tampered = text.replacen("b@x.org", "c@x.org", 1);
        assert!(matches!(
            verify_bytes(tampered.as_bytes()),
            Err(DumpError::Checksum)
        ));
        // A newer version.
        let newer = text.replacen("\"version\":1", "\"version\":7", 1);
        let err = verify_bytes(newer.as_bytes()).expect_err("newer");
        assert!(err.to_string().contains("version 7 is newer"), "{err}");
        // Not a backup at all.
        assert!(matches!(
            verify_bytes(b"{\"hello\":1}\n"),
            Err(DumpError::NotABackup(_))
        ));
        assert!(matches!(verify_bytes(b""), Err(DumpError::NotABackup(_))));
        // Something after the trailer.
        let mut extra = good.clone();
        extra.extend_from_slice(b"{}\n");
        assert!(verify_bytes(&extra).is_err());
    }

    #[test]
    fn inconsistent_records_are_refused_even_with_a_good_checksum() {
        let twice = write(&[user(1, "a@x.org"), user(1, "b@x.org")]);
        let err = verify_bytes(&twice).expect_err("a user twice");
        assert!(err.to_string().contains("appears twice"), "{err}");
        let same_email = write(&[user(1, "a@x.org"), user(2, "a@x.org")]);
        assert!(verify_bytes(&same_email).is_err());
        let beyond = write(&[user(100, "a@x.org")]);
        assert!(verify_bytes(&beyond).is_err());
        let orphan = write(&[Item::Token(DumpToken {
            selector: hex(&[7; 16]),
            record: TokenRecord {
                user_id: 5,
                verifier_hash: [1; 32],
                credential_epoch: 0,
                issued_at: 1,
                expires_at: 2,
                used_at: None,
                purge_at: 3,
            },
        })]);
        assert!(verify_bytes(&orphan).is_err());
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
        assert_eq!(unhex("000fff"), Some(vec![0, 15, 255]));
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
    }
}
