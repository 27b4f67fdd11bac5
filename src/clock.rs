//! The wall clock, in the units the store keeps: Unix seconds and Unix milliseconds.
//!
//! The lowest module of the daemon: everything that stamps a record or schedules a retry
//! reads the time here, so there is one definition of "now".

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix seconds.
pub(crate) fn now() -> u64 {
    now_ms() / 1000
}

/// Now, in Unix milliseconds. A clock set before 1970 reads as 0, one beyond the year
/// 584 million as `u64::MAX`: neither stops the daemon.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
