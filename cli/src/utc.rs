//! Unix seconds and UTC calendar times, converted by jiff: what the output prints and what an
//! import file's RFC 3339 creation times are read into.
//!
//! Both directions go through jiff's civil (calendar) `DateTime` rather than its `Timestamp`:
//! a `Timestamp` ends at 9999-12-30T22:00:00Z (so that any offset can be applied to it), a
//! civil time at the end of 9999, which is where humantime, used before, ended too. The
//! difference is a day and two hours no real account lives in, but keeping it means that the
//! change of crate changed no output and no accepted input.

use jiff::civil::DateTime;
use jiff::SignedDuration;
use latchkey_client::UnixTime;

/// 1970-01-01T00:00:00, the Unix epoch, as a UTC calendar time.
const EPOCH: DateTime = DateTime::constant(1970, 1, 1, 0, 0, 0, 0);

/// The UTC calendar time `secs` after the epoch; `None` after 9999-12-31T23:59:59.
pub(crate) fn from_unix(secs: UnixTime) -> Option<DateTime> {
    let secs = i64::try_from(secs).ok()?;
    EPOCH.checked_add(SignedDuration::from_secs(secs)).ok()
}

/// The whole seconds from the epoch to `at`, read as UTC; negative before the epoch.
/// Fractions of a second are dropped (towards the epoch).
pub(crate) fn to_unix(at: DateTime) -> i64 {
    at.duration_since(EPOCH).as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_calendar_times_convert_both_ways_to_the_end_of_9999() {
        for (secs, text) in [
            (0, "1970-01-01T00:00:00"),
            (1_680_350_400, "2023-04-01T12:00:00"),
            (951_782_400, "2000-02-29T00:00:00"),
            (253_402_300_799, "9999-12-31T23:59:59"),
        ] {
            let at = from_unix(secs).expect("in range");
            assert_eq!(at.to_string(), text);
            assert_eq!(to_unix(at), secs as i64);
        }
        assert_eq!(from_unix(253_402_300_800), None);
        assert_eq!(from_unix(u64::MAX), None);
    }
}
