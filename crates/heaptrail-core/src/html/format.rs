//! How the page writes numbers: sizes like the standard library (`12.3 MiB`), rates, elapsed
//! times, counts with thousands separators, UTC dates.

use crate::size_format::format_size;

/// `"12.3 MiB"`.
pub fn size(bytes: f64) -> String {
    format_size(bytes, false)
}

/// `"+1.2 KiB"`: a change.
pub fn change(bytes: f64) -> String {
    format_size(bytes, true)
}

/// `"+1.2 KiB/s"`.
pub fn rate(bytes_per_second: f64) -> String {
    format!("{}/s", format_size(bytes_per_second, true))
}

/// `1234567` -> `"1,234,567"`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let head = match digits.len() % 3 {
        0 => 3,
        h => h,
    };
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    out.push_str(&digits[..head]);
    for group in digits.as_bytes()[head..].chunks(3) {
        out.push(',');
        // ASCII digits.
        out.extend(group.iter().map(|&b| b as char));
    }
    out
}

/// `x` with one decimal, or none when it is whole.
fn short(x: f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// Units of [`elapsed`]: seconds below 2 minutes, minutes below 2 hours, hours below 2 days,
/// then days.
fn time_unit(seconds: f64) -> (f64, &'static str) {
    if seconds < 120.0 {
        (1.0, "s")
    } else if seconds < 7200.0 {
        (60.0, "min")
    } else if seconds < 172800.0 {
        (3600.0, "h")
    } else {
        (86400.0, "d")
    }
}

/// A duration for headers and tooltips: `"45 s"`, `"2.5 min"`, `"3 h"`, `"2 d"`.
pub fn elapsed(seconds: f64) -> String {
    elapsed_on_scale(seconds, seconds)
}

/// `seconds` in the unit [`elapsed`] would use for `scale`: the ticks of an axis share the
/// unit of its end.
pub fn elapsed_on_scale(seconds: f64, scale: f64) -> String {
    if !seconds.is_finite() || !scale.is_finite() {
        return "?".into();
    }
    let (unit, name) = time_unit(scale);
    format!("{} {name}", short(seconds / unit))
}

/// A unix time as `"2024-05-01 13:45:07 UTC"` (proleptic Gregorian calendar).
pub fn utc(unix: f64) -> String {
    if !unix.is_finite() || unix.abs() > 1e13 {
        return "?".into();
    }
    let secs = unix.floor() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Days since 1970-01-01 to a civil date (Howard Hinnant's days_from_civil, inverted).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(size(5.0 * 1048576.0 + 300000.0), "5413 KiB");
        assert_eq!(size(50.0 * 1048576.0), "50.0 MiB");
        assert_eq!(change(-2048.0), "-2048 B");
        assert_eq!(rate(15360.0), "+15.0 KiB/s");
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1234567), "1,234,567");
    }

    #[test]
    fn durations() {
        assert_eq!(elapsed(0.0), "0 s");
        assert_eq!(elapsed(1.5), "1.5 s");
        assert_eq!(elapsed(75.0), "75 s");
        assert_eq!(elapsed(150.0), "2.5 min");
        assert_eq!(elapsed(5400.0), "90 min");
        assert_eq!(elapsed(9000.0), "2.5 h");
        assert_eq!(elapsed(3.0 * 86400.0), "3 d");
        assert_eq!(elapsed(f64::NAN), "?");
        assert_eq!(elapsed_on_scale(36.0 * 3600.0, 2.5 * 86400.0), "1.5 d");
        assert_eq!(elapsed_on_scale(0.0, 600.0), "0 min");
    }

    #[test]
    fn dates() {
        assert_eq!(utc(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951782400.0), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1700000000.9), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc(-1.0), "1969-12-31 23:59:59 UTC");
        assert_eq!(utc(f64::INFINITY), "?");
    }
}
