//! Calendar arithmetic for `date` (days since 1970-01-01) and `timestamp`
//! (microseconds since the epoch, UTC) without a date-time dependency in guests.

/// Microseconds in a day.
pub const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number: (year, month, day).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

/// Parses `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Option<i32> {
    let mut parts = s.trim().splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || d == 0 || d > 31 {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // Reject 2023-02-30 and the like: the round trip must agree.
    (civil_from_days(days) == (y, m, d)).then(|| i32::try_from(days).ok())?
}

/// Parses `YYYY-MM-DD`, `YYYY-MM-DD HH:MM:SS[.ffffff]` or the same with `T` and a
/// trailing `Z`, as UTC microseconds.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim().trim_end_matches('Z');
    let (date, clock) = match s.split_once(['T', ' ']) {
        Some((d, c)) => (d, Some(c)),
        None => (s, None),
    };
    let mut micros = i64::from(parse_date(date)?) * MICROS_PER_DAY;
    if let Some(clock) = clock {
        let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
        let mut it = hms.splitn(3, ':');
        let h: i64 = it.next()?.parse().ok()?;
        let m: i64 = it.next()?.parse().ok()?;
        let sec: i64 = it.next().unwrap_or("0").parse().ok()?;
        if h > 23
            || m > 59
            || sec > 60
            || frac.len() > 6
            || !frac.bytes().all(|c| c.is_ascii_digit())
        {
            return None;
        }
        let frac_us: i64 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<6}").parse().ok()?
        };
        micros += ((h * 60 + m) * 60 + sec) * 1_000_000 + frac_us;
    }
    Some(micros)
}

/// `YYYY-MM-DD`.
pub fn format_date(days: i32) -> String {
    let (y, m, d) = civil_from_days(i64::from(days));
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`.
pub fn format_timestamp(micros: i64) -> String {
    let days = micros.div_euclid(MICROS_PER_DAY);
    let rest = micros.rem_euclid(MICROS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let secs = rest / 1_000_000;
    let us = rest % 1_000_000;
    let (h, mi, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if us == 0 {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2000-01-01"), Some(10_957));
        assert_eq!(parse_date("2023-02-30"), None);
        assert_eq!(format_date(-1), "1969-12-31");
        for d in [-700_000, -1, 0, 59, 10_957, 19_782, 2_000_000] {
            assert_eq!(parse_date(&format_date(d)), Some(d));
        }
        let t = parse_timestamp("2024-03-01T12:34:56.789Z").unwrap();
        assert_eq!(format_timestamp(t), "2024-03-01T12:34:56.789000Z");
        assert_eq!(
            parse_timestamp("2024-03-01 00:00:00"),
            parse_timestamp("2024-03-01")
        );
    }
}
