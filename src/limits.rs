//! In-process rate limits (governor's GCRA buckets), keyed by client IP, normalised email or
//! account.
//!
//! Keys are hashed to a u64 under a per-process random SipHash key before they reach
//! governor, so each bucket costs a few dozen bytes whatever the key's length, and nobody can
//! aim collisions at a chosen victim. A periodic cleanup drops keys whose bucket is full again
//! (they are indistinguishable from new ones). If a flood of distinct keys still reaches
//! `max_keys`, the limiter refuses every call until cleanup brings it back under: memory stays
//! bounded and the service fails closed rather than unthrottled.
//!
//! Unknown emails get the same buckets as known ones, so a `RateLimited` reply says nothing
//! about whether an account exists.

use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
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
    /// Login attempts per client IP.
    pub login_per_ip: Rate,
    /// Login attempts per email (NIST SP 800-63B: at most 100 failures in a row).
    pub login_per_account: Rate,
    /// Most keys one limiter holds; past it the limiter refuses calls until cleanup.
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
            login_per_account: Rate {
                burst: 100,
                per_secs: 3600,
            },
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
        if self.max_keys == 0 || self.cleanup_interval_secs == 0 {
            return Err(
                "limits.max_keys and limits.cleanup_interval_secs must be at least 1".into(),
            );
        }
        Ok(())
    }

    fn rates(&self) -> [(&'static str, Rate); 5] {
        [
            ("reset_per_ip", self.reset_per_ip),
            ("reset_per_email", self.reset_per_email),
            ("token_per_ip", self.token_per_ip),
            ("login_per_ip", self.login_per_ip),
            ("login_per_account", self.login_per_account),
        ]
    }
}

/// One keyed limiter, on the clock `C` (the real one, but for tests that drive time).
struct Bucket<C: Clock + Clone> {
    /// The GCRA state per hashed key.
    limiter: RateLimiter<u64, DashMapStateStore<u64>, C, NoOpMiddleware<C::Instant>>,
    /// The limiter's clock, to tell how long a refused caller must wait.
    clock: C,
    /// The cap on keys.
    max_keys: usize,
    /// Set when the cap was reached; calls are refused while it is set.
    over: AtomicBool,
    /// Calls so far, to look at the key count every [`CAP_CHECK_EVERY`] calls.
    calls: AtomicU64,
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
        Bucket {
            limiter: RateLimiter::new(quota, DashMapStateStore::default(), clock.clone()),
            clock,
            max_keys,
            over: AtomicBool::new(false),
            calls: AtomicU64::new(0),
        }
    }

    fn check(&self, key: u64, cleanup_secs: u64) -> Result<(), ApiError> {
        if self.calls.fetch_add(1, Ordering::Relaxed) % CAP_CHECK_EVERY == CAP_CHECK_EVERY - 1
            && self.limiter.len() >= self.max_keys
        {
            // Drop what has idled out before giving up on new keys.
            self.limiter.retain_recent();
            if self.limiter.len() >= self.max_keys && !self.over.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    keys = self.limiter.len(),
                    "a rate limiter is full; refusing its calls until keys idle out"
                );
            }
        }
        if self.over.load(Ordering::Relaxed) {
            return Err(ApiError::RateLimited {
                retry_after_secs: cleanup_secs,
            });
        }
        self.limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            ApiError::RateLimited {
                retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            }
        })
    }

    fn cleanup(&self, name: &str) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        let over = self.limiter.len() >= self.max_keys;
        if over {
            tracing::error!(
                limiter = name,
                keys = self.limiter.len(),
                "rate limiter is full; refusing its calls until keys idle out"
            );
        }
        self.over.store(over, Ordering::Relaxed);
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
    login_account: Bucket<C>,
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
            login_account: bucket(config.login_per_account),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    fn key(&self, value: impl Hash) -> u64 {
        self.hasher.hash_one(value)
    }

    fn check_ip(&self, bucket: &Bucket<C>, ip: Option<IpAddr>) -> Result<(), ApiError> {
        // Without an IP there is nothing to key on; sharing one bucket among every such call
        // would throttle the whole application. The per-email and per-account limits still
        // apply.
        match ip {
            Some(ip) => bucket.check(self.key(ip_bucket(ip)), self.config.cleanup_interval_secs),
            None => Ok(()),
        }
    }

    /// A reset request: per IP, then per email.
    pub fn reset_request(&self, ip: Option<IpAddr>, email: &str) -> Result<(), ApiError> {
        self.check_ip(&self.reset_ip, ip)?;
        self.reset_email
            .check(self.key(email), self.config.cleanup_interval_secs)
    }

    /// A token check or completion, per IP.
    pub fn token_use(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        self.check_ip(&self.token_ip, ip)
    }

    /// A login attempt: per IP, then per account (email).
    pub fn login(&self, ip: Option<IpAddr>, email: &str) -> Result<(), ApiError> {
        self.check_ip(&self.login_ip, ip)?;
        self.login_account
            .check(self.key(email), self.config.cleanup_interval_secs)
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

    fn buckets(&self) -> [(&'static str, &Bucket<C>); 5] {
        [
            ("reset_per_ip", &self.reset_ip),
            ("reset_per_email", &self.reset_email),
            ("token_per_ip", &self.token_ip),
            ("login_per_ip", &self.login_ip),
            ("login_per_account", &self.login_account),
        ]
    }
}

/// The address a per-IP bucket is kept for (issue 19, item 3): an IPv4 address as it is,
/// also when it comes IPv4-mapped (`::ffff:192.0.2.1` is `192.0.2.1`), and an IPv6 address
/// by its /64, the block one subscriber or one host gets, whose 2^64 addresses an attacker
/// could otherwise walk through for a fresh bucket each.
fn ip_bucket(ip: IpAddr) -> IpAddr {
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
    fn a_million_distinct_keys_stay_within_the_cap_and_idle_out() {
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
        let mut refused = 0;
        for i in 0..1_000_000u32 {
            if limits
                .token_use(Some(IpAddr::from(i.to_be_bytes())))
                .is_err()
            {
                refused += 1;
            }
        }
        // The cap is checked every CAP_CHECK_EVERY calls, so it can be passed by that much.
        let held = limits.token_ip.limiter.len();
        assert!(held <= cap + CAP_CHECK_EVERY as usize, "{held} keys held");
        assert!(
            refused > 800_000,
            "only {refused} refused: the cap did not engage"
        );
        // Nothing has idled out while no time passed: cleanup keeps every key and the cap.
        limits.cleanup();
        assert_eq!(limits.keys_held(), held);
        assert!(limits
            .token_use(Some(IpAddr::from([192, 0, 2, 1])))
            .is_err());
        // Once the keys idle out (a second for this quota), cleanup frees them and the
        // limiter serves again.
        clock.advance(Duration::from_secs(2));
        limits.cleanup();
        assert_eq!(limits.keys_held(), 0);
        assert!(limits.token_use(Some(IpAddr::from([192, 0, 2, 1]))).is_ok());
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
    fn the_key_cap_fails_closed_until_cleanup_frees_keys() {
        let limits = Limits::new(&LimitsConfig {
            max_keys: 10,
            ..Default::default()
        });
        for i in 0..10 {
            assert!(limits.token_use(Some(IpAddr::from([10, 0, 0, i]))).is_ok());
        }
        limits.cleanup();
        assert!(matches!(
            limits.token_use(Some(IpAddr::from([10, 0, 1, 1]))),
            Err(ApiError::RateLimited { .. })
        ));
    }
}
