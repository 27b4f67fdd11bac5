//! Paging through the daemon's listings (users, the outbox, the event log) by a cursor, a
//! page at a time, so that a listing of any length prints as it arrives in little memory.

use std::future::Future;

use anyhow::bail;
use latchkey_client::{Event, ExportedUser, OutboxMessage, User};
use serde::Serialize;

/// The most bytes of items a listing asks for per call. The daemon fills a page up to the
/// count asked for, whatever its size, and a reply over its frame limit (64 KiB by default,
/// `server.max_frame_bytes`) closes the connection: so each listing asks for as many items as
/// fit here in their largest possible encoding ([`Listed::MAX_BYTES`]), which leaves room for
/// tarpc's envelope. (500 typical users already make more than 64 KiB.)
const PAGE_BYTES: usize = 48 * 1024;

/// An item of a listing the daemon pages through by a cursor.
pub(crate) trait Listed: Serialize {
    /// The largest JSON encoding of one item, in bytes.
    const MAX_BYTES: usize;

    /// Items per call: as many as fit in [`PAGE_BYTES`] (35 users, 12 messages, 245 events).
    const PER_PAGE: u32 = (PAGE_BYTES / Self::MAX_BYTES) as u32;

    /// The cursor after this item: its id or sequence number.
    fn cursor(&self) -> u64;
}

impl Listed for User {
    /// Email (254 bytes) and name (256) that escaping may double, role (64), locale (35), and
    /// some 250 bytes of field names and numbers.
    const MAX_BYTES: usize = 1_400;

    fn cursor(&self) -> u64 {
        self.id
    }
}

impl Listed for OutboxMessage {
    /// The address (about 510 bytes escaped), the last error (500 characters, at most 6 bytes
    /// each escaped), and some 300 bytes more.
    const MAX_BYTES: usize = 3_800;

    fn cursor(&self) -> u64 {
        self.id
    }
}

impl Listed for ExportedUser {
    /// What a [`User`] takes, and a password hash of up to 1 KiB (PHC strings are far
    /// shorter; imported ones are kept as they came).
    const MAX_BYTES: usize = 2_400;

    fn cursor(&self) -> u64 {
        self.id
    }
}

impl Listed for Event {
    /// Numbers, a kind, an IP address and field names.
    const MAX_BYTES: usize = 200;

    fn cursor(&self) -> u64 {
        self.seq
    }
}

/// Pages through a listing: asks `fetch` for the items after `after`, [`Listed::PER_PAGE`] at
/// a time, and gives each to `each`, until the listing ends or `limit` items were seen.
/// Returns the cursor of the last item seen (`after` if none), from where a later call goes
/// on.
pub(crate) async fn page_through<T: Listed, Fut>(
    mut after: u64,
    limit: Option<u64>,
    mut fetch: impl FnMut(u64, u32) -> Fut,
    mut each: impl FnMut(&T) -> anyhow::Result<()>,
) -> anyhow::Result<u64>
where
    Fut: Future<Output = Result<Vec<T>, latchkey_client::Error>>,
{
    let mut left = limit;
    while left != Some(0) {
        let want = left.map_or(T::PER_PAGE, |left| {
            u32::try_from(left.min(u64::from(T::PER_PAGE))).unwrap_or(T::PER_PAGE)
        });
        let page = fetch(after, want).await?;
        let Some(last) = page.last() else { break };
        // A page that does not move the cursor on would be asked for again forever.
        if last.cursor() <= after {
            bail!("the daemon's listing did not advance past {after}");
        }
        after = last.cursor();
        for item in page.iter().take(want as usize) {
            each(item)?;
        }
        left = left.map(|left| left.saturating_sub(page.len() as u64));
    }
    Ok(after)
}

#[cfg(test)]
mod tests {
    use latchkey_client::{MessageState, UserStatus};

    use super::*;

    /// The largest encoding of `item` fits its [`Listed::MAX_BYTES`], so a page of them fits
    /// in [`PAGE_BYTES`].
    #[track_caller]
    fn assert_fits<T: Listed>(item: &T) {
        let size = serde_json::to_vec(item).expect("encodes").len();
        assert!(size <= T::MAX_BYTES, "{size} bytes > {}", T::MAX_BYTES);
    }

    #[test]
    fn the_largest_possible_items_fit_their_page_budget() {
        // Quotes escape to two bytes, control characters (refused in names, possible in an
        // SMTP error) to six.
        assert_fits(&User {
            id: u64::MAX,
            email: format!("{}@{}", "\"".repeat(64), "x".repeat(189)),
            name: "\"".repeat(256),
            role: "r".repeat(64),
            status: UserStatus::Disabled,
            locale: Some("l".repeat(35)),
            created_at: u64::MAX,
            updated_at: u64::MAX,
            password_changed_at: u64::MAX,
            credential_epoch: u64::MAX,
        });
        assert_fits(&OutboxMessage {
            id: u64::MAX,
            kind: "password_changed".into(),
            to: format!("{}@{}", "\"".repeat(64), "x".repeat(189)),
            state: MessageState::Queued,
            attempts: u32::MAX,
            created_at: u64::MAX,
            next_attempt_at: Some(u64::MAX),
            last_error: Some("\u{1}".repeat(500)),
        });
        assert_fits(&Event {
            seq: u64::MAX,
            at: u64::MAX,
            kind: latchkey_client::EventKind::PasswordChanged,
            user_id: Some(u64::MAX),
            client_ip: Some("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".into()),
        });
    }
}
