//! Event time: turning CloudTrail's `eventTime` text into seconds and nanoseconds.
//!
//! CloudTrail writes `2023-07-10T11:42:36Z`, but other producers that drop files in the same
//! layout (and hand-edited test data) use fractional seconds, numeric offsets or lower-case
//! separators. All of those are accepted; anything else is rejected so the caller can fall
//! back to the object's LastModified instead of guessing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time as Fluent Bit's EventTime carries it: whole seconds since the Unix epoch
/// and nanoseconds within that second.
///
/// The range is what a Fluent Bit record can carry: u32 seconds, less the two values Fluent
/// Bit reserves for group markers (seconds `0xFFFFFFFF` and `0xFFFFFFFE` mark a group's start
/// and end), so 1970-01-01T00:00:00Z up to, not including, 2106-02-07T06:28:14Z. Every value
/// of this type can be encoded without loss and is never read back as a marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventTime {
    secs: u32,
    nanos: u32,
}

/// Why a timestamp cannot be an [`EventTime`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeError {
    /// Not RFC 3339 / ISO 8601 as [`EventTime::parse`] reads it (or an impossible date).
    Unreadable,
    /// Before 1970-01-01T00:00:00Z.
    Before1970,
    /// 2106-02-07T06:28:14Z or later: past Fluent Bit's u32 seconds, or one of its group
    /// markers.
    BeyondHost,
}

impl std::fmt::Display for TimeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeError::Unreadable => "not an RFC 3339 time",
            TimeError::Before1970 => "before 1970",
            TimeError::BeyondHost => "2106-02-07T06:28:14Z or later, which Fluent Bit cannot carry",
        })
    }
}

impl EventTime {
    /// The last second a record can carry: `0xFFFFFFFE` and `0xFFFFFFFF` are Fluent Bit's
    /// group end and start markers (2106-02-07T06:28:14Z and 06:28:15Z).
    pub const MAX_SECS: u32 = u32::MAX - 2;

    /// Builds a time; `None` before 1970, from 2106-02-07T06:28:14Z on (see
    /// [`EventTime::MAX_SECS`]), or when the nanoseconds are not below one second.
    pub fn new(secs: i64, nanos: u32) -> Option<Self> {
        Self::checked(secs, nanos).ok()
    }

    /// As [`EventTime::new`], saying which end of the range `secs` is off.
    pub fn checked(secs: i64, nanos: u32) -> Result<Self, TimeError> {
        if secs < 0 {
            return Err(TimeError::Before1970);
        }
        if secs > i64::from(Self::MAX_SECS) {
            return Err(TimeError::BeyondHost);
        }
        Self::from_parts(secs as u32, nanos).ok_or(TimeError::Unreadable)
    }

    /// Builds a time from Fluent Bit's own parts; `None` when `nanos` is a second or more, or
    /// `secs` is past [`EventTime::MAX_SECS`] (a group marker).
    pub const fn from_parts(secs: u32, nanos: u32) -> Option<Self> {
        if nanos < 1_000_000_000 && secs <= Self::MAX_SECS {
            Some(Self { secs, nanos })
        } else {
            None
        }
    }

    pub fn secs(self) -> u32 {
        self.secs
    }

    pub fn nanos(self) -> u32 {
        self.nanos
    }

    /// The time as a `SystemTime`, for comparisons with file and object timestamps.
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::new(u64::from(self.secs), self.nanos)
    }

    /// Converts a `SystemTime`; `None` outside Fluent Bit's range (before 1970 or after 2106).
    pub fn from_system_time(t: SystemTime) -> Option<Self> {
        let d = t.duration_since(UNIX_EPOCH).ok()?;
        Self::new(i64::try_from(d.as_secs()).ok()?, d.subsec_nanos())
    }

    /// The current time (clamped into range, which only matters after 2106).
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now()).unwrap_or(Self {
            secs: Self::MAX_SECS,
            nanos: 0,
        })
    }

    /// Parses an RFC 3339 / ISO 8601 timestamp: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM|±HHMM)`,
    /// with `T`/`t`/space as separator and `Z`/`z` for UTC. Fractions beyond nanoseconds are
    /// truncated. Returns `None` for anything else, including impossible dates and times
    /// outside the range (see [`EventTime::parse`] for why).
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        Self::parse(text).ok()
    }

    /// As [`EventTime::parse_rfc3339`], saying why a text is refused.
    pub fn parse(text: &str) -> Result<Self, TimeError> {
        let (secs, nanos) = parse_parts(text).ok_or(TimeError::Unreadable)?;
        Self::checked(secs, nanos)
    }

    /// The time in UTC as RFC 3339, the way CloudTrail writes it (`2023-07-10T11:42:36Z`),
    /// with a fraction only when there is one (`.5`, `.123456789`, trailing zeros cut).
    pub fn to_rfc3339(self) -> String {
        let days = i64::from(self.secs / 86_400);
        let rem = self.secs % 86_400;
        let (y, m, d) = civil_from_days(days);
        let mut out = format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        );
        if self.nanos > 0 {
            let frac = format!("{:09}", self.nanos);
            out.push('.');
            out.push_str(frac.trim_end_matches('0'));
        }
        out.push('Z');
        out
    }
}

/// Seconds since the epoch (any sign) and nanoseconds of an RFC 3339 text.
fn parse_parts(text: &str) -> Option<(i64, u32)> {
    let b = text.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let year = digits(b, 0, 4)? as i64;
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    let hour = digits(b, 11, 2)?;
    let minute = digits(b, 14, 2)?;
    let second = digits(b, 17, 2)?;
    if b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos: u32 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        let mut scale = 100_000_000u32;
        while let Some(d) = b.get(i).filter(|c| c.is_ascii_digit()) {
            nanos += u32::from(d - b'0') * scale;
            scale /= 10;
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset_secs: i64 = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') => {
            let rest = &b[i + 1..];
            let (h, m) = match rest.len() {
                5 if rest[2] == b':' => (digits(rest, 0, 2)?, digits(rest, 3, 2)?),
                4 => (digits(rest, 0, 2)?, digits(rest, 2, 2)?),
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            let off = i64::from(h * 3600 + m * 60);
            if *sign == b'+' { off } else { -off }
        }
        _ => return None,
    };
    // A leap second (":60") is folded into the next second, as most log tools do.
    let secs = days_from_civil(year, month, day) * 86_400
        + i64::from(hour * 3600 + minute * 60 + second)
        - offset_secs;
    Some((secs, nanos))
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let s = b.get(at..at + n)?;
    s.iter().try_fold(0u32, |acc, c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The calendar date `(year, month, day)` of a day number since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Option<(u32, u32)> {
        EventTime::parse_rfc3339(s).map(|t| (t.secs(), t.nanos()))
    }

    #[test]
    fn written_back_as_rfc3339() {
        for text in [
            "2023-07-10T11:42:36Z",
            "1970-01-01T00:00:00Z",
            "2000-02-29T23:59:59.5Z",
            "2106-02-07T06:28:13.123456789Z",
        ] {
            assert_eq!(EventTime::parse(text).unwrap().to_rfc3339(), text);
        }
        let t = EventTime::parse("2023-07-10T13:42:36.120+02:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2023-07-10T11:42:36.12Z");
    }

    #[test]
    fn cloudtrail_format() {
        assert_eq!(t("2023-07-10T11:42:36Z"), Some((1_688_989_356, 0)));
        assert_eq!(t("1970-01-01T00:00:00Z"), Some((0, 0)));
    }

    #[test]
    fn fractions_offsets_and_case() {
        assert_eq!(
            t("2023-07-10T11:42:36.5Z"),
            Some((1_688_989_356, 500_000_000))
        );
        assert_eq!(
            t("2023-07-10T11:42:36.123456789123z"),
            Some((1_688_989_356, 123_456_789))
        );
        assert_eq!(t("2023-07-10t13:42:36+02:00"), Some((1_688_989_356, 0)));
        assert_eq!(t("2023-07-10 06:42:36-0500"), Some((1_688_989_356, 0)));
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        for bad in [
            "",
            "2023-07-10",
            "2023-07-10T11:42:36",
            "2023-02-30T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-07-10T24:00:00Z",
            "2023-07-10T11:42:36.Z",
            "2023-07-10T11:42:36Zjunk",
            "1969-12-31T23:59:59Z",
            "2200-01-01T00:00:00Z",
            "2023/07/10T11:42:36Z",
            "2023-07-10T11:42:36+2:00",
        ] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn group_marker_seconds_and_beyond_are_refused_with_their_reason() {
        assert_eq!(
            EventTime::parse("2106-02-07T06:28:13.999999999Z").map(|t| (t.secs(), t.nanos())),
            Ok((u32::MAX - 2, 999_999_999))
        );
        for (text, why) in [
            ("2106-02-07T06:28:14Z", TimeError::BeyondHost),
            ("2106-02-07T06:28:15Z", TimeError::BeyondHost),
            ("2106-02-07T07:28:14+01:00", TimeError::BeyondHost),
            ("2200-01-01T00:00:00Z", TimeError::BeyondHost),
            ("1969-12-31T23:59:59Z", TimeError::Before1970),
            ("1969-12-31T23:59:59.999Z", TimeError::Before1970),
            ("yesterday", TimeError::Unreadable),
        ] {
            assert_eq!(EventTime::parse(text), Err(why), "{text}");
            assert_eq!(EventTime::parse_rfc3339(text), None, "{text}");
        }
        for secs in [u32::MAX, u32::MAX - 1] {
            assert_eq!(EventTime::from_parts(secs, 0), None);
            assert_eq!(EventTime::new(i64::from(secs), 0), None);
            assert_eq!(EventTime::new(i64::from(secs), 1), None);
        }
        assert_eq!(EventTime::new(-1, 0), None);
        assert!(EventTime::now().secs() <= EventTime::MAX_SECS);
    }

    #[test]
    fn civil_round_trip() {
        for days in [-1, 0, 59, 365, 11_016, 19_548, 50_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(19_548), (2023, 7, 10));
    }
}
