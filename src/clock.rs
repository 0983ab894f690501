//! The time: UTC stamps for ledgers and reports, local time for versions.
//! A leaf module (it imports nothing of es), on jiff rather than libc's
//! `localtime_r` and a hand-written civil-date algorithm.

use jiff::{Timestamp, ZonedDateTime};

/// The time now, as UTC RFC 3339 to the second (`2026-12-04T05:10:00Z`).
pub fn now_utc() -> String {
    format_timestamp(Timestamp::now())
}

/// Unix seconds as UTC RFC 3339 to the second; out-of-range values as the epoch.
pub fn format_utc(secs: i64) -> String {
    format_timestamp(Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn format_timestamp(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The local wall-clock time now (the system's time zone, as `date` shows it):
/// year, month, day, hour, minute, second.
pub fn local_now() -> [u64; 6] {
    let now = ZonedDateTime::now();
    let field = |v: i64| u64::try_from(v).unwrap_or(0);
    [
        field(now.year().into()),
        field(now.month().into()),
        field(now.day().into()),
        field(now.hour().into()),
        field(now.minute().into()),
        field(now.second().into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_seconds_format_as_utc_rfc3339() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_796_360_399), "2026-12-04T04:59:59Z");
        assert_eq!(format_utc(-86_400), "1969-12-31T00:00:00Z");
    }

    #[test]
    fn now_is_a_utc_stamp_of_this_century() {
        let now = now_utc();
        assert!(
            now.starts_with("20") && now.ends_with('Z') && now.len() == 20,
            "{now}"
        );
        let [year, month, day, ..] = local_now();
        assert!(year >= 2024 && (1..=12).contains(&month) && (1..=31).contains(&day));
    }
}
