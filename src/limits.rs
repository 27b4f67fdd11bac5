//! In-process rate limits (governor's GCRA buckets), keyed by client IP, normalised email or
//! account.
//!
//! Keys are hashed to a u64 under a per-process random SipHash key before they reach
//! governor, so each bucket costs a few dozen bytes whatever the key's length, and nobody can
//! aim collisions at a chosen victim. A periodic cleanup drops keys whose bucket is full again
//! (they are indistinguishable from new ones). If a flood of distinct keys still reaches
//! `max_keys`, the limiter evicts the half of its keys whose buckets are fullest (the least
//! limited: their next call is due soonest), logs it and counts it. Memory stays bounded, and
//! neither the keys it holds nor new ones are refused because of the flood (issue 19, item 2:
//! a limiter that refused every call once full let a flood of fresh addresses lock every real
//! user out for minutes).
//!
//! Unknown emails get the same buckets as known ones, so a `RateLimited` reply says nothing
//! about whether an account exists.

use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};
use latchkey_client::ApiError;
use serde::{Deserialize, Serialize};

/// One bucket setting: up to `burst` calls at once, refilled evenly over `per_secs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Calls allowed at once.
    pub burst: u32,
    /// Seconds in which a whole burst is refilled.
    pub per_secs: u64,
}

impl Rate {
    fn quota(self) -> Option<Quota> {
        let burst = NonZeroU32::new(self.burst)?;
        Quota::with_period(Duration::from_secs(self.per_secs.max(1)) / burst.get())
            .map(|q| q.allow_burst(burst))
    }
}

/// The limits' settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Reset requests per client IP.
    pub reset_per_ip: Rate,
    /// Reset requests per normalised email (the cooldown between two mails to one address).
    pub reset_per_email: Rate,
    /// Token checks and completions per client IP.
    pub token_per_ip: Rate,
    /// Login attempts per client IP, failed or not.
    pub login_per_ip: Rate,
    /// Accounts created (`create_user`, `sign_up`) per client IP, for calls that pass one.
    pub signup_per_ip: Rate,
    /// Sign-ups per normalised email, whether or not it has an account: the most mail a
    /// sign-up form can send one address.
    pub signup_per_email: Rate,
    /// Throttling by consecutive failed logins per account (NIST SP 800-63B 5.2.2).
    pub login_failures: LoginFailuresConfig,
    /// Most keys one limiter holds; reaching it evicts the fullest half of its buckets.
    pub max_keys: usize,
    /// How often idle keys are dropped.
    pub cleanup_interval_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            reset_per_ip: Rate {
                burst: 5,
                per_secs: 900,
            },
            reset_per_email: Rate {
                burst: 1,
                per_secs: 60,
            },
            token_per_ip: Rate {
                burst: 30,
                per_secs: 60,
            },
            login_per_ip: Rate {
                burst: 100,
                per_secs: 300,
            },
            signup_per_ip: Rate {
                burst: 10,
                per_secs: 3600,
            },
            signup_per_email: Rate {
                burst: 3,
                per_secs: 3600,
            },
            login_failures: LoginFailuresConfig::default(),
            max_keys: 1_000_000,
            cleanup_interval_secs: 60,
        }
    }
}

impl LimitsConfig {
    /// Checks every rate; names the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in self.rates() {
            if rate.quota().is_none() || rate.per_secs == 0 {
                return Err(format!(
                    "limits.{name}: burst and per_secs must be at least 1"
                ));
            }
        }
        self.login_failures.validate()?;
        if self.max_keys == 0 || self.cleanup_interval_secs == 0 {
            return Err(
                "limits.max_keys and limits.cleanup_interval_secs must be at least 1".into(),
            );
        }
        Ok(())
    }

    fn rates(&self) -> [(&'static str, Rate); 6] {
        [
            ("reset_per_ip", self.reset_per_ip),
            ("reset_per_email", self.reset_per_email),
            ("token_per_ip", self.token_per_ip),
            ("login_per_ip", self.login_per_ip),
            ("signup_per_ip", self.signup_per_ip),
            ("signup_per_email", self.signup_per_email),
        ]
    }
}

/// Throttling of password logins by their consecutive failures on one account (NIST SP
/// 800-63B 5.2.2), made so that an attacker's guesses cannot lock the owner out.
///
/// For an account with `n` consecutive failed logins (a correct password, a completed reset
/// or a new password set by an admin brings `n` back to 0, and `n` is forgotten once
/// `memory_secs` pass without a failure):
/// - `n < free`: the password is checked.
/// - `free <= n < max`: the password is checked once `first_wait_secs * 2^(n - free)` (at
///   most `max_wait_secs`) have passed since the last failure. Before that the attempt is
///   answered `RateLimited` without a check, unless it comes from a *clean* client address:
///   one that has failed no login, on any account, for `clean_ip_secs`. A clean address's
///   attempt is checked, so the owner's correct password from her own address lets her in
///   while her account is under attack; a wrong one counts, and makes the address unclean.
/// - `n >= max`: every attempt is answered `RateLimited` until a reset, an admin's new
///   password, or `memory_secs` without a failure: never more than `max` guesses in a row.
///
/// An attempt without `client_ip` comes from no clean address. Unknown addresses are
/// counted like accounts, so the answers say nothing about which exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginFailuresConfig {
    /// Consecutive failures on an account checked without a wait.
    pub free: u32,
    /// The wait after the first failure past `free`; each further failure doubles it.
    pub first_wait_secs: u64,
    /// The longest wait between two checked attempts.
    pub max_wait_secs: u64,
    /// Consecutive failures after which the account takes no password login (NIST: at most
    /// 100).
    pub max: u32,
    /// How long an account's failures are remembered after the last one.
    pub memory_secs: u64,
    /// How long after its last failed login a client address is not clean.
    pub clean_ip_secs: u64,
}

impl Default for LoginFailuresConfig {
    fn default() -> Self {
        LoginFailuresConfig {
            free: 5,
            first_wait_secs: 30,
            max_wait_secs: 3600,
            max: 100,
            memory_secs: 86_400,
            clean_ip_secs: 3600,
        }
    }
}

impl LoginFailuresConfig {
    fn validate(&self) -> Result<(), String> {
        if self.max == 0 || self.free > self.max {
            return Err("limits.login_failures: max must be at least 1 and at least free".into());
        }
        if self.memory_secs == 0 || self.clean_ip_secs == 0 || self.max_wait_secs == 0 {
            return Err(
                "limits.login_failures: memory_secs, clean_ip_secs and max_wait_secs must be \
                 at least 1"
                    .into(),
            );
        }
        Ok(())
    }

    /// Failures older than this (Unix ms) are forgotten.
    pub fn forget_before_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.memory_secs.saturating_mul(1000))
    }

    /// Whether a client address whose last failed login was at `last_failed_ms` is clean;
    /// `None` for a call without `client_ip`.
    pub fn is_clean(&self, last_failed_ms: Option<Option<u64>>, now_ms: u64) -> bool {
        match last_failed_ms {
            None => false,
            Some(None) => true,
            Some(Some(at)) => now_ms.saturating_sub(at) >= self.clean_ip_secs.saturating_mul(1000),
        }
    }

    /// Whether an attempt on an account with `failures` consecutive failures, the last at
    /// `last_ms`, is checked now: `Err` carries the seconds to wait.
    pub fn judge(
        &self,
        failures: u32,
        last_ms: u64,
        clean_ip: bool,
        now_ms: u64,
    ) -> Result<(), u64> {
        if failures == 0 || last_ms < self.forget_before_ms(now_ms) || failures < self.free {
            return Ok(());
        }
        let since = now_ms.saturating_sub(last_ms);
        let wait_ms = |secs: u64| secs.saturating_mul(1000).saturating_sub(since);
        if failures >= self.max {
            return Err(wait_ms(self.memory_secs).div_ceil(1000).max(1));
        }
        let doublings = failures - self.free;
        let wait = self
            .first_wait_secs
            .checked_shl(doublings)
            .filter(|w| w >> doublings == self.first_wait_secs)
            .map_or(self.max_wait_secs, |w| w.min(self.max_wait_secs));
        let left = wait_ms(wait);
        if left == 0 || clean_ip {
            Ok(())
        } else {
            Err(left.div_ceil(1000).max(1))
        }
    }
}

/// A limiter's buckets: the theoretical arrival time (GCRA) of each hashed key, in governor's
/// clock nanoseconds, as governor's own `DashMapStateStore` keeps them, but shared with the
/// [`Bucket`] so it can evict by arrival time when full, which governor's store cannot.
#[derive(Clone, Default)]
struct Store(Arc<DashMap<u64, AtomicU64>>);

impl StateStore for Store {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(tat) = self.0.get(key) {
            return measure_and_replace(&tat, f);
        }
        let tat = self.0.entry(*key).or_default();
        measure_and_replace(&tat, f)
    }
}

/// governor's compare-and-swap step on one arrival time (0 stands for a key never seen).
fn measure_and_replace<T, E>(
    tat: &AtomicU64,
    f: impl Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
) -> Result<T, E> {
    let seen = |n: u64| (n != 0).then(|| Nanos::from(n));
    let mut prev = tat.load(Ordering::Acquire);
    loop {
        let (result, next) = f(seen(prev))?;
        match tat.compare_exchange_weak(prev, next.into(), Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return Ok(result),
            Err(actual) => prev = actual,
        }
    }
}

impl ShrinkableKeyedStateStore<u64> for Store {
    fn retain_recent(&self, drop_below: Nanos) {
        let below = u64::from(drop_below);
        self.0.retain(|_, tat| tat.load(Ordering::Relaxed) > below);
    }

    fn shrink_to_fit(&self) {
        self.0.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Store {
    /// Drops the half of the keys with the earliest arrival times: the buckets closest to
    /// full, whose loss forgets the least. Returns how many went.
    fn evict_fullest_half(&self) -> usize {
        let mut times: Vec<u64> = self
            .0
            .iter()
            .map(|entry| entry.value().load(Ordering::Relaxed))
            .collect();
        if times.is_empty() {
            return 0;
        }
        let middle = times.len() / 2;
        let (_, &mut median, _) = times.select_nth_unstable(middle);
        let before = self.0.len();
        self.0.retain(|_, tat| tat.load(Ordering::Relaxed) > median);
        before.saturating_sub(self.0.len())
    }
}

/// One keyed limiter, on the clock `C` (the real one, but for tests that drive time).
struct Bucket<C: Clock + Clone> {
    /// The GCRA state per hashed key.
    limiter: RateLimiter<u64, Store, C, NoOpMiddleware<C::Instant>>,
    /// The same state, for eviction.
    store: Store,
    /// The limiter's clock, to tell how long a refused caller must wait.
    clock: C,
    /// The cap on keys.
    max_keys: usize,
    /// Calls so far, to look at the key count every [`CAP_CHECK_EVERY`] calls.
    calls: AtomicU64,
    /// Keys evicted because the limiter was full, for the metrics.
    evicted: AtomicU64,
}

/// How often (in calls) a limiter compares its key count with the cap between cleanups, so
/// a flood of distinct keys cannot outgrow the cap by more than this many keys.
const CAP_CHECK_EVERY: u64 = 1024;

impl<C: Clock + Clone> Bucket<C> {
    fn new(rate: Rate, max_keys: usize, clock: C) -> Bucket<C> {
        // validate() ran at config load; the fallback only guards a programming error.
        let quota = rate
            .quota()
            .unwrap_or_else(|| Quota::per_minute(NonZeroU32::MIN));
        let store = Store::default();
        Bucket {
            limiter: RateLimiter::new(quota, store.clone(), clock.clone()),
            store,
            clock,
            max_keys,
            calls: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    fn check(&self, name: &str, key: u64) -> Result<(), ApiError> {
        if self.calls.fetch_add(1, Ordering::Relaxed) % CAP_CHECK_EVERY == CAP_CHECK_EVERY - 1
            && self.limiter.len() >= self.max_keys
        {
            self.make_room(name);
        }
        self.limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            ApiError::RateLimited {
                retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            }
        })
    }

    /// Drops what has idled out, then, if the cap is still reached, the fullest half.
    fn make_room(&self, name: &str) {
        self.limiter.retain_recent();
        if self.limiter.len() < self.max_keys {
            return;
        }
        let evicted = self.store.evict_fullest_half();
        self.evicted.fetch_add(evicted as u64, Ordering::Relaxed);
        tracing::warn!(
            limiter = name,
            evicted,
            kept = self.limiter.len(),
            "a rate limiter reached limits.max_keys (a flood of distinct keys?); evicted the \
             buckets closest to full"
        );
    }

    fn cleanup(&self, name: &str) {
        // make_room drops what has idled out first, and evicts only if that is not enough.
        self.make_room(name);
        self.limiter.shrink_to_fit();
    }
}

/// The rate limiters in force, shared by the service, the sweeper and the metrics; SIGHUP
/// replaces them with fresh ones when their settings change.
pub(crate) type LiveLimits = Arc<ArcSwap<Limits>>;

/// Every limiter of the daemon, on the clock `C`: the real one, or in tests a clock the test
/// moves on.
pub struct Limits<C: Clock + Clone = DefaultClock> {
    /// Settings in force.
    config: LimitsConfig,
    /// The per-process hash key.
    hasher: std::collections::hash_map::RandomState,
    reset_ip: Bucket<C>,
    reset_email: Bucket<C>,
    token_ip: Bucket<C>,
    login_ip: Bucket<C>,
    signup_ip: Bucket<C>,
    signup_email: Bucket<C>,
}

impl Limits {
    /// Fresh, empty limiters.
    pub fn new(config: &LimitsConfig) -> Limits {
        Limits::with_clock(config, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Limits<C> {
    /// Fresh, empty limiters on `clock`.
    pub fn with_clock(config: &LimitsConfig, clock: C) -> Limits<C> {
        let bucket = |rate| Bucket::new(rate, config.max_keys, clock.clone());
        Limits {
            config: config.clone(),
            hasher: Default::default(),
            reset_ip: bucket(config.reset_per_ip),
            reset_email: bucket(config.reset_per_email),
            token_ip: bucket(config.token_per_ip),
            login_ip: bucket(config.login_per_ip),
            signup_ip: bucket(config.signup_per_ip),
            signup_email: bucket(config.signup_per_email),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    fn key(&self, value: impl Hash) -> u64 {
        self.hasher.hash_one(value)
    }

    fn check_ip(&self, name: &str, bucket: &Bucket<C>, ip: Option<IpAddr>) -> Result<(), ApiError> {
        // Without an IP there is nothing to key on; sharing one bucket among every such call
        // would throttle the whole application. The per-email and per-account limits still
        // apply.
        match ip {
            Some(ip) => bucket.check(name, self.key(ip_bucket(ip))),
            None => Ok(()),
        }
    }

    /// A reset request: per IP, then per email.
    pub fn reset_request(&self, ip: Option<IpAddr>, email: &str) -> Result<(), ApiError> {
        self.check_ip("reset_per_ip", &self.reset_ip, ip)?;
        self.reset_email.check("reset_per_email", self.key(email))
    }

    /// A token check or completion, per IP.
    pub fn token_use(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        self.check_ip("token_per_ip", &self.token_ip, ip)
    }

    /// A login attempt, per IP. Per account, logins are throttled by their consecutive
    /// failures instead ([`LoginFailuresConfig::judge`]): counting every attempt there would
    /// let anyone lock an owner out by guessing.
    pub fn login(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        self.check_ip("login_per_ip", &self.login_ip, ip)
    }

    /// An account created, per IP.
    pub fn signup(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        self.check_ip("signup_per_ip", &self.signup_ip, ip)
    }

    /// A sign-up for a normalised address, with or without an account behind it.
    pub fn signup_email(&self, email: &str) -> Result<(), ApiError> {
        self.signup_email.check("signup_per_email", self.key(email))
    }

    /// Drops idle keys from every limiter and re-arms the key caps.
    pub fn cleanup(&self) {
        for (name, bucket) in self.buckets() {
            bucket.cleanup(name);
        }
    }

    /// Keys held across all limiters.
    pub fn keys_held(&self) -> usize {
        self.buckets().iter().map(|(_, b)| b.limiter.len()).sum()
    }

    /// Keys each limiter has evicted because it was full, by limiter name.
    pub fn evicted(&self) -> [(&'static str, u64); 6] {
        self.buckets()
            .map(|(name, b)| (name, b.evicted.load(Ordering::Relaxed)))
    }

    fn buckets(&self) -> [(&'static str, &Bucket<C>); 6] {
        [
            ("reset_per_ip", &self.reset_ip),
            ("reset_per_email", &self.reset_email),
            ("token_per_ip", &self.token_ip),
            ("login_per_ip", &self.login_ip),
            ("signup_per_ip", &self.signup_ip),
            ("signup_per_email", &self.signup_email),
        ]
    }
}

/// The address a per-IP bucket is kept for (issue 19, item 3): an IPv4 address as it is,
/// also when it comes IPv4-mapped (`::ffff:192.0.2.1` is `192.0.2.1`), and an IPv6 address
/// by its /64, the block one subscriber or one host gets, whose 2^64 addresses an attacker
/// could otherwise walk through for a fresh bucket each.
pub(crate) fn ip_bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !u128::from(u64::MAX);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    #[test]
    fn a_bucket_refuses_past_its_burst_with_a_retry_time() {
        let limits = Limits::new(&LimitsConfig {
            reset_per_email: Rate {
                burst: 2,
                per_secs: 120,
            },
            ..Default::default()
        });
        assert!(limits.reset_request(None, "a@example.com").is_ok());
        assert!(limits.reset_request(None, "a@example.com").is_ok());
        match limits.reset_request(None, "a@example.com") {
            Err(ApiError::RateLimited { retry_after_secs }) => {
                assert!((1..=60).contains(&retry_after_secs), "{retry_after_secs}")
            }
            other => unreachable!("expected RateLimited, got {other:?}"),
        }
        // Another address has its own bucket.
        assert!(limits.reset_request(None, "b@example.com").is_ok());
    }

    #[test]
    fn a_million_distinct_keys_stay_within_the_cap_are_all_served_and_idle_out() {
        let cap = 100_000;
        let clock = FakeRelativeClock::default();
        let limits = Limits::with_clock(
            &LimitsConfig {
                token_per_ip: Rate {
                    burst: 1,
                    per_secs: 1,
                },
                max_keys: cap,
                ..Default::default()
            },
            clock.clone(),
        );
        for i in 0..1_000_000u32 {
            assert!(
                limits
                    .token_use(Some(IpAddr::from(i.to_be_bytes())))
                    .is_ok(),
                "key {i} refused: a full limiter refuses nobody new"
            );
        }
        // The cap is checked every CAP_CHECK_EVERY calls, so it can be passed by that much.
        let held = limits.token_ip.limiter.len();
        assert!(held <= cap + CAP_CHECK_EVERY as usize, "{held} keys held");
        let evicted = limits.evicted()[2];
        assert_eq!(evicted.0, "token_per_ip");
        assert!(evicted.1 >= 800_000, "{evicted:?}");
        // Nothing has idled out while no time passed: cleanup keeps what is held.
        limits.cleanup();
        assert_eq!(limits.keys_held(), held);
        // Once the keys idle out (a second for this quota), cleanup frees them.
        clock.advance(Duration::from_secs(2));
        limits.cleanup();
        assert_eq!(limits.keys_held(), 0);
    }

    #[test]
    fn a_flood_of_fresh_keys_evicts_the_fullest_buckets_not_the_limited_ones() {
        // Issue 19, item 2: a full limiter used to refuse every call, real users' included.
        let clock = FakeRelativeClock::default();
        let limits = Limits::with_clock(
            &LimitsConfig {
                token_per_ip: Rate {
                    burst: 3,
                    per_secs: 300,
                },
                max_keys: 4096,
                ..Default::default()
            },
            clock.clone(),
        );
        let guesser = Some(IpAddr::from([203, 0, 113, 1]));
        let regular = Some(IpAddr::from([203, 0, 113, 2]));
        for _ in 0..3 {
            assert!(limits.token_use(guesser).is_ok());
        }
        assert!(limits.token_use(guesser).is_err());
        assert!(limits.token_use(regular).is_ok());
        for i in 0..100_000u32 {
            clock.advance(Duration::from_micros(1));
            assert!(limits
                .token_use(Some(IpAddr::from((10u32 << 24 | i).to_be_bytes())))
                .is_ok());
        }
        assert!(limits.keys_held() <= 4096 + CAP_CHECK_EVERY as usize);
        assert!(
            limits.token_use(guesser).is_err(),
            "the flood bought the limited key a fresh bucket"
        );
        assert!(limits.token_use(regular).is_ok(), "an existing key works");
        assert!(
            limits
                .token_use(Some(IpAddr::from([198, 51, 100, 1])))
                .is_ok(),
            "a new key works"
        );
    }

    #[test]
    fn an_ipv6_64_is_one_bucket_and_a_mapped_ipv4_address_is_the_address() {
        let limits = Limits::new(&LimitsConfig {
            token_per_ip: Rate {
                burst: 3,
                per_secs: 3600,
            },
            ..Default::default()
        });
        let in_64 = |n: u16| IpAddr::from([0x2001, 0xdb8, 0, 7, n, n, 1, n]);
        for n in 1..=3 {
            assert!(limits.token_use(Some(in_64(n))).is_ok());
        }
        assert!(
            limits.token_use(Some(in_64(99))).is_err(),
            "a fourth address of the same /64 shares its bucket"
        );
        let next_64 = IpAddr::from([0x2001, 0xdb8, 0, 8, 0, 0, 0, 1]);
        assert!(
            limits.token_use(Some(next_64)).is_ok(),
            "another /64 has its own"
        );
        let v4: IpAddr = "192.0.2.1".parse().expect("an address");
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("an address");
        for ip in [v4, mapped, v4] {
            assert!(limits.token_use(Some(ip)).is_ok());
        }
        assert!(
            limits.token_use(Some(mapped)).is_err(),
            "one bucket for both forms"
        );
    }

    #[test]
    fn failures_past_the_free_ones_wait_doubling_up_to_the_cap_and_stop_at_the_ceiling() {
        let rule = LoginFailuresConfig {
            free: 3,
            first_wait_secs: 30,
            max_wait_secs: 100,
            max: 10,
            memory_secs: 1000,
            clean_ip_secs: 60,
        };
        let last = 1_000_000;
        for n in 0..3 {
            assert_eq!(
                rule.judge(n, last, false, last),
                Ok(()),
                "{n} failures are free"
            );
        }
        assert_eq!(rule.judge(3, last, false, last), Err(30));
        assert_eq!(rule.judge(3, last, false, last + 29_500), Err(1));
        assert_eq!(rule.judge(3, last, false, last + 30_000), Ok(()));
        assert_eq!(rule.judge(4, last, false, last), Err(60));
        assert_eq!(rule.judge(5, last, false, last), Err(100), "capped");
        assert_eq!(rule.judge(9, last, false, last), Err(100));
        // A clean address is checked while the others wait, but not at the ceiling.
        assert_eq!(rule.judge(9, last, true, last), Ok(()));
        assert_eq!(rule.judge(10, last, true, last), Err(1000));
        assert_eq!(rule.judge(10, last, false, last + 400_000), Err(600));
        // Forgotten after the memory.
        assert_eq!(rule.judge(u32::MAX, last, false, last + 1_000_001), Ok(()));
        // No overflow however many failures.
        let free = LoginFailuresConfig {
            max: u32::MAX,
            ..rule
        };
        assert_eq!(free.judge(u32::MAX - 1, last, false, last), Err(100));
    }

    #[test]
    fn an_address_is_clean_when_it_never_failed_or_not_lately_and_unknown_is_not_clean() {
        let rule = LoginFailuresConfig::default();
        let now = 10_000_000_000;
        assert!(rule.is_clean(Some(None), now));
        assert!(!rule.is_clean(None, now), "a call without client_ip");
        assert!(!rule.is_clean(Some(Some(now - 3_599_000)), now));
        assert!(rule.is_clean(Some(Some(now - 3_600_000)), now));
    }
}
