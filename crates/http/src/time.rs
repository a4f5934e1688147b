//! Times and durations in query parameters: `1717243200000` (ms since the Unix epoch),
//! `-15m` (relative to now), `now`, or RFC 3339 (`2024-06-01T12:00:00Z`); durations like
//! `60000` (ms), `90s`, `1m`, `1h30m`, `7d`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Longest duration accepted (about 100 years), so sums cannot overflow.
const MAX_DURATION_MS: u64 = 100 * 366 * 86_400_000;

/// Why a duration is refused (the text names it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DurationError {
    /// Nothing was given.
    #[error("empty duration")]
    Empty,
    /// Not ms nor numbers with units.
    #[error(
        "bad duration {0:?}: expected ms (60000) or a number with a unit: 500ms, 30s, 15m, 1h, 7d, 2w"
    )]
    Bad(String),
    /// Longer than [`MAX_DURATION_MS`].
    #[error("duration {0:?} is too long")]
    TooLong(String),
}

/// Why a point in time is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TimeError {
    /// `-<duration>` with a bad duration.
    #[error("bad time {0:?}: {1}")]
    Relative(String, DurationError),
    /// Digits beyond an `i64` of ms.
    #[error("bad time {0:?}: too large")]
    TooLarge(String),
    /// None of the accepted forms.
    #[error(
        "bad time {0:?}: expected ms since the epoch (1717243200000), a relative time \
         (-15m, -1h, -7d), now, or RFC 3339 (2024-06-01T12:00:00Z)"
    )]
    Unknown(String),
}

/// A duration: a number of ms, or parts like `1h30m` with units `ms`, `s`, `m`, `h`, `d`,
/// `w` (each part's number may have a fraction: `1.5h`).
pub(crate) fn parse_duration_ms(s: &str) -> Result<u64, DurationError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if let Ok(ms) = s.parse::<u64>() {
        return check_max(ms, s);
    }
    let bad = || DurationError::Bad(s.to_owned());
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, after) = rest.split_at(num_len);
        let unit_len = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let n: f64 = num.parse().map_err(|_| bad())?;
        let scale = match unit {
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" | "min" => 60_000.0,
            "h" => 3_600_000.0,
            "d" => 86_400_000.0,
            "w" => 604_800_000.0,
            _ => return Err(bad()),
        };
        total += n * scale;
        rest = next;
    }
    if !total.is_finite() || total > MAX_DURATION_MS as f64 {
        return Err(DurationError::TooLong(s.to_owned()));
    }
    // within 0..=MAX_DURATION_MS, checked above
    check_max(total.round() as u64, s)
}

fn check_max(ms: u64, s: &str) -> Result<u64, DurationError> {
    if ms > MAX_DURATION_MS {
        Err(DurationError::TooLong(s.to_owned()))
    } else {
        Ok(ms)
    }
}

/// A point in time, in ms since the epoch: ms, `now`, `-<duration>` (before `now`), or
/// RFC 3339.
pub(crate) fn parse_time(s: &str, now: i64) -> Result<i64, TimeError> {
    let s = s.trim();
    if s == "now" {
        return Ok(now);
    }
    if let Some(rel) = s.strip_prefix('-') {
        let ms = parse_duration_ms(rel).map_err(|e| TimeError::Relative(s.to_owned(), e))?;
        return Ok(now.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX)));
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<i64>()
            .map_err(|_| TimeError::TooLarge(s.to_owned()));
    }
    rfc3339(s).ok_or_else(|| TimeError::Unknown(s.to_owned()))
}

/// `YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM]` (a space may replace the `T`; no offset means
/// UTC).
fn rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let at = |i: usize| b.get(i).copied();
    let year = num(0, 4)?;
    if at(4)? != b'-' || at(7)? != b'-' || !matches!(at(10)?, b'T' | b't' | b' ') {
        return None;
    }
    let month = num(5, 2)?;
    let day = num(8, 2)?;
    if at(13)? != b':' || at(16)? != b':' {
        return None;
    }
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if at(i) == Some(b'.') {
        i += 1;
        let start = i;
        while at(i).is_some_and(|c| c.is_ascii_digit()) {
            i += 1;
        }
        let frac = s.get(start..i)?;
        if frac.is_empty() {
            return None;
        }
        let first3: String = frac.chars().chain("000".chars()).take(3).collect();
        millis = first3.parse().ok()?;
    }
    let offset_min = match at(i) {
        None => 0,
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && at(i + 3) == Some(b':') => {
            let (h, m) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let o = h * 60 + m;
            if sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_min * 60;
    Some(secs * 1_000 + millis)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_ms_and_with_units() {
        assert_eq!(parse_duration_ms("60000"), Ok(60_000));
        assert_eq!(parse_duration_ms("1m"), Ok(60_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("1.5h"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("7d"), Ok(604_800_000));
        assert_eq!(parse_duration_ms("2w"), Ok(1_209_600_000));
        for bad in [
            "",
            "m",
            "1x",
            "1 h",
            "-1m",
            "1..5s",
            "99999999999999999999d",
            "h1",
        ] {
            assert!(parse_duration_ms(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn times_absolute_relative_and_rfc3339() {
        let now = 1_717_243_200_000;
        assert_eq!(parse_time("now", now), Ok(now));
        assert_eq!(parse_time("1000", now), Ok(1000));
        assert_eq!(parse_time("-15m", now), Ok(now - 900_000));
        assert_eq!(
            parse_time("-60000", now),
            Ok(now - 60_000),
            "a bare number is ms"
        );
        assert_eq!(
            parse_time("2024-06-01T12:00:00Z", now),
            Ok(1_717_243_200_000)
        );
        assert_eq!(
            parse_time("2024-06-01 12:00:00", now),
            Ok(1_717_243_200_000)
        );
        assert_eq!(
            parse_time("2024-06-01T12:00:00.25Z", now),
            Ok(1_717_243_200_250)
        );
        assert_eq!(
            parse_time("2024-06-01T14:00:00+02:00", now),
            Ok(1_717_243_200_000)
        );
        assert_eq!(parse_time("1970-01-01T00:00:00Z", now), Ok(0));
        assert_eq!(parse_time("2000-02-29T00:00:00Z", now), Ok(951_782_400_000));
        for bad in [
            "",
            "yesterday",
            "-",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-06-01T25:00:00Z",
            "2024-06-01T12:00:00+2",
            "2024-06-01",
            "99999999999999999999",
            "1e3",
        ] {
            assert!(parse_time(bad, now).is_err(), "{bad:?}");
        }
    }
}
