//! The parts of the bench, one file each, every one a `run(&Env) -> Vec<Row>` that starts
//! its own daemons and baselines and returns its figures; and what they all get ([`Env`],
//! with the [`Sizes`] that tell a full run from a short one).

pub(crate) mod backup;
pub(crate) mod big_calls;
pub(crate) mod cheap_calls;
pub(crate) mod durable_writes;
pub(crate) mod fairness;
pub(crate) mod hash_bound;
pub(crate) mod limiter_memory;
mod pg_scripts;
pub(crate) mod reset_timing;
pub(crate) mod saturation;
pub(crate) mod signup_timing;
pub(crate) mod token_scaling;

use crate::harness::{Daemon, EchoProcess, Harness};

/// How big each measurement is; the full and the short run differ only here.
///
/// Each comparison runs in `rounds` rounds that alternate the daemon and its baseline
/// window by window, and the windows of each side are pooled: the machine is shared, and a
/// neighbour's build that starts halfway through then slows both sides alike instead of one.
pub(crate) struct Sizes {
    /// Rounds of each comparison.
    rounds: usize,
    /// Unmeasured seconds before each timed window, so the closed loop is in its steady state.
    warmup_secs: f64,
    /// Measured seconds per cheap-call window (one call kind at one client count).
    cheap_secs: f64,
    /// Measured seconds per hash-bound window (daemon and raw baseline alike).
    hash_secs: f64,
    /// Live-token counts at which `check_reset_token` is timed, against a daemon that holds
    /// the first count throughout.
    token_stages: Vec<usize>,
    /// Accounts the tokens are spread over (each holds at most a handful, like real users).
    token_users: usize,
    /// Timed `check_reset_token` calls per stage and side.
    token_samples: usize,
    /// Measured seconds per window of cheap calls, idle or under hashing saturation.
    saturation_secs: f64,
    /// `request_password_reset` calls per kind (known, unknown).
    timing_each: usize,
    /// Concealed `sign_up` calls per kind (taken, new address); each hashes a password.
    signup_each: usize,
    /// Distinct limiter keys created.
    rss_keys: usize,
    /// `per_secs` of the burst-1 bucket the limiter-memory section fills. governor's cleanup
    /// (`retain_recent`) drops a key once its theoretical arrival time is a whole period old,
    /// which for one call is two periods after it: twice this must exceed the time it takes
    /// to make every key, or the first keys go before the last are made.
    rss_key_secs: u64,
    /// The daemon's `[limits] cleanup_interval_secs` in the memory section.
    rss_cleanup_secs: u64,
    /// Measured seconds per durable-write run.
    write_secs: f64,
    /// Accounts at which a backup is read under load, by one daemon that grows through them.
    backup_stages: Vec<usize>,
    /// Seconds of load before each backup, of which up to half the backup's length is the
    /// baseline's first half.
    backup_before_secs: f64,
}

impl Sizes {
    /// The sizes BENCHMARKS.md reports.
    pub(crate) fn full() -> Sizes {
        Sizes {
            rounds: 5,
            warmup_secs: 0.3,
            cheap_secs: 1.0,
            hash_secs: 2.0,
            token_stages: vec![1_000, 100_000, 1_000_000],
            token_users: 100_000,
            token_samples: 5_000,
            saturation_secs: 2.0,
            timing_each: 10_000,
            signup_each: 2_000,
            rss_keys: 1_000_000,
            rss_key_secs: 30,
            rss_cleanup_secs: 5,
            write_secs: 5.0,
            backup_stages: vec![100_000, 1_000_000],
            backup_before_secs: 30.0,
        }
    }

    /// Tiny sizes for CI (`--short`): every section runs, the figures are rough.
    pub(crate) fn short() -> Sizes {
        Sizes {
            rounds: 1,
            warmup_secs: 0.1,
            cheap_secs: 0.3,
            hash_secs: 1.0,
            token_stages: vec![100, 1_000],
            token_users: 100,
            token_samples: 300,
            saturation_secs: 1.0,
            timing_each: 200,
            signup_each: 50,
            rss_keys: 10_000,
            rss_key_secs: 1,
            rss_cleanup_secs: 1,
            write_secs: 0.5,
            backup_stages: vec![2_000],
            backup_before_secs: 0.5,
        }
    }
}

/// What every section needs.
pub(crate) struct Env {
    /// Starts the daemons and baselines, and prints progress.
    pub(crate) harness: Harness,
    /// Seconds to keep the limiter-memory daemon alive after measuring it.
    pub(crate) hold_rss: Option<u64>,
    /// How big the measurements are.
    pub(crate) sizes: Sizes,
}

impl Env {
    /// A progress line on stderr (the results go to stdout).
    pub(crate) fn progress(&self, what: &str) {
        self.harness.progress(what);
    }

    /// Starts a daemon with the bench's base settings plus `reset` and `limits` sections.
    async fn daemon(&self, name: &str, reset: &str, limits: &str) -> anyhow::Result<Daemon> {
        Daemon::start(&self.harness, name, reset, limits).await
    }

    /// Starts the echo baseline.
    async fn echo(&self) -> anyhow::Result<EchoProcess> {
        EchoProcess::start(&self.harness).await
    }
}
