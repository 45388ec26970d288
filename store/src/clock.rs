//! Record times: nanoseconds since the Unix epoch in an `i64`, which spans
//! 1677-09-21 to 2262-04-11. Converting a clock reading with `as` wraps a
//! time past 2262 around to before 1970 (a dataset recorded then would be
//! the oldest, and the first retention drops); these saturate instead.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in ns since the epoch.
pub fn now_ns() -> i64 {
    ns_since_epoch(SystemTime::now())
}

/// `time` in ns since the epoch (negative before 1970), saturated at the
/// ends of `i64`.
pub fn ns_since_epoch(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_nanos()).map_or(i64::MIN, |ns| -ns),
    }
}

/// Now, in ns since the epoch, for records that keep an unsigned time
/// (object records, delta names); 0 before 1970.
pub fn now_ns_unsigned() -> u64 {
    u64::try_from(now_ns()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_outside_i64_saturate_instead_of_wrapping() {
        let year = Duration::from_secs(365 * 86_400);
        assert_eq!(ns_since_epoch(UNIX_EPOCH + year * 300), i64::MAX);
        assert_eq!(ns_since_epoch(UNIX_EPOCH - year * 300), i64::MIN);
        assert_eq!(ns_since_epoch(UNIX_EPOCH - Duration::from_secs(1)), -1_000_000_000);
        assert_eq!(ns_since_epoch(UNIX_EPOCH + Duration::from_nanos(5)), 5);
        assert!(now_ns() > 1_700_000_000_000_000_000);
    }
}
