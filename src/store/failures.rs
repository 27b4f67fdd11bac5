//! Failed logins on the embedded store, kept in memory: sled serves one daemon, so this
//! process sees every login. A restart forgets them, as it forgets the rate limiters.
//!
//! A failure is recorded only after a whole argon2 check, so the hashing rate bounds how fast
//! entries can be added; the cap ([`MAX_ENTRIES`] per map) bounds memory anyway. At the cap,
//! forgotten entries go first, then the older half: an attacker who pays for a million
//! failed hashes to push a victim's count out gains at most `limits.login_failures.free`
//! fresh guesses.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;

use super::records::FailedLogins;

/// Most entries each map holds (about 40 MiB for both at the cap).
const MAX_ENTRIES: usize = 1_000_000;

/// The in-memory failure counts.
#[derive(Default)]
pub(super) struct FailureBook {
    /// The counts; every call holds the lock for a hash-map operation or two.
    maps: Mutex<Maps>,
    /// The per-process hash key: the maps hold no addresses.
    hasher: RandomState,
}

/// The two maps behind the lock.
#[derive(Default)]
struct Maps {
    /// Per hashed account: consecutive failures and the last one's time (Unix ms).
    accounts: HashMap<u64, (u32, u64)>,
    /// Per hashed client address: the last failure's time (Unix ms).
    addresses: HashMap<u64, u64>,
}

impl FailureBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        // A panic while holding the lock cannot leave the maps torn (every change is one
        // insert or remove), so a poisoned lock is still good.
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// See [`super::Store::failed_logins`].
    pub(super) fn failed_logins(&self, account: &str, ip: Option<IpAddr>) -> FailedLogins {
        let account = self.hasher.hash_one(account);
        let ip = ip.map(|ip| self.hasher.hash_one(ip));
        let maps = self.lock();
        let (account_failures, account_last_ms) =
            maps.accounts.get(&account).copied().unwrap_or((0, 0));
        FailedLogins {
            account_failures,
            account_last_ms,
            ip_last_ms: ip.and_then(|ip| maps.addresses.get(&ip).copied()),
        }
    }

    /// See [`super::Store::login_failed`].
    pub(super) fn login_failed(
        &self,
        account: &str,
        ip: Option<IpAddr>,
        now_ms: u64,
        forget_before_ms: u64,
    ) {
        let account = self.hasher.hash_one(account);
        let ip = ip.map(|ip| self.hasher.hash_one(ip));
        let mut maps = self.lock();
        if maps.accounts.len() >= MAX_ENTRIES && !maps.accounts.contains_key(&account) {
            make_room(&mut maps.accounts, |&(_, last)| last, forget_before_ms);
        }
        let entry = maps.accounts.entry(account).or_insert((0, now_ms));
        if entry.1 < forget_before_ms {
            entry.0 = 0;
        }
        *entry = (entry.0.saturating_add(1), entry.1.max(now_ms));
        if let Some(ip) = ip {
            if maps.addresses.len() >= MAX_ENTRIES && !maps.addresses.contains_key(&ip) {
                make_room(&mut maps.addresses, |&last| last, forget_before_ms);
            }
            let last = maps.addresses.entry(ip).or_insert(now_ms);
            *last = (*last).max(now_ms);
        }
    }

    /// See [`super::Store::forget_login_failures`].
    pub(super) fn forget(&self, account: &str) {
        let account = self.hasher.hash_one(account);
        self.lock().accounts.remove(&account);
    }

    /// Drops accounts last failed before `account_before_ms` and addresses last failed
    /// before `address_before_ms`; returns how many went.
    pub(super) fn sweep(&self, account_before_ms: u64, address_before_ms: u64) -> usize {
        let mut maps = self.lock();
        let before = maps.accounts.len() + maps.addresses.len();
        maps.accounts
            .retain(|_, (_, last)| *last >= account_before_ms);
        maps.addresses.retain(|_, last| *last >= address_before_ms);
        before - maps.accounts.len() - maps.addresses.len()
    }
}

/// Frees room in a full map: what is forgotten first, then the older half.
fn make_room<V>(map: &mut HashMap<u64, V>, last: impl Fn(&V) -> u64, forget_before_ms: u64) {
    map.retain(|_, v| last(v) >= forget_before_ms);
    if map.len() < MAX_ENTRIES {
        return;
    }
    let mut times: Vec<u64> = map.values().map(&last).collect();
    let middle = times.len() / 2;
    let (_, &mut median, _) = times.select_nth_unstable(middle);
    map.retain(|_, v| last(v) > median);
    tracing::warn!(
        kept = map.len(),
        "the login-failure book was full; the older half of its entries was dropped"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_count_up_are_forgotten_after_their_memory_and_on_a_success() {
        let book = FailureBook::default();
        let ip: IpAddr = "192.0.2.9".parse().expect("an address");
        for at in [1_000, 2_000, 3_000] {
            book.login_failed("ada@example.com", Some(ip), at, 0);
        }
        let seen = book.failed_logins("ada@example.com", Some(ip));
        assert_eq!((seen.account_failures, seen.account_last_ms), (3, 3_000));
        assert_eq!(seen.ip_last_ms, Some(3_000));
        assert_eq!(
            book.failed_logins("bob@example.com", None),
            FailedLogins::default()
        );
        // A failure after the memory has passed starts the count afresh.
        book.login_failed("ada@example.com", None, 10_000, 5_000);
        assert_eq!(
            book.failed_logins("ada@example.com", None).account_failures,
            1
        );
        book.forget("ada@example.com");
        assert_eq!(
            book.failed_logins("ada@example.com", None).account_failures,
            0
        );
        assert_eq!(
            book.failed_logins("x@example.com", Some(ip)).ip_last_ms,
            Some(3_000),
            "a success forgets the account, not the address"
        );
        assert_eq!(book.sweep(0, 5_000), 1);
    }
}
