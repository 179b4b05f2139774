//! Human-readable sizes exactly as the standard library's `tracemalloc._format_size` writes them
//! (`"5002 B"`, `"+4.9 KiB"`, `"12.3 MiB"`), so `str()` of heaptrail objects matches the stdlib.
//!
//! Rust's `{:.N}` float formatting rounds the exact binary value half-to-even, like C's `%.Nf`
//! that Python uses (`2.5 -> "2"`, `3.5 -> "4"`, `0.25 -> "0.2"`), and prints `-0`/`+0` the same
//! way; only NaN is spelled differently, so it is special-cased.

const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];

/// `_format_size(size, sign)`: below 100 (and not bytes) one decimal; below 10 KiB-of-the-unit
/// (or in TiB) no decimal; otherwise move to the next unit.
pub fn format_size(size: f64, sign: bool) -> String {
    let mut size = size;
    for unit in UNITS {
        if size.abs() < 100.0 && unit != "B" {
            return format!("{} {unit}", fixed(size, 1, sign));
        }
        if size.abs() < 10.0 * 1024.0 || unit == "TiB" {
            return format!("{} {unit}", fixed(size, 0, sign));
        }
        size /= 1024.0;
    }
    unreachable!("the TiB branch always returns")
}

/// Python's `"%.{decimals}f"` / `"%+.{decimals}f"`.
fn fixed(value: f64, decimals: usize, sign: bool) -> String {
    if value.is_nan() {
        // Python prints NaN as "nan" whatever its sign bit; "%+f" gives "+nan".
        return if sign { "+nan".into() } else { "nan".into() };
    }
    if sign {
        format!("{value:+.decimals$}")
    } else {
        format!("{value:.decimals$}")
    }
}

#[cfg(test)]
mod tests {
    use super::format_size as f;

    #[test]
    fn bytes() {
        assert_eq!(f(0.0, false), "0 B");
        assert_eq!(f(66.0, false), "66 B");
        assert_eq!(f(5002.0, false), "5002 B");
        assert_eq!(f(10239.0, false), "10239 B");
        assert_eq!(f(5000.0, true), "+5000 B");
        assert_eq!(f(-66.0, true), "-66 B");
        assert_eq!(f(0.0, true), "+0 B");
        assert_eq!(f(-0.0, true), "-0 B");
        // Averages are floats: "%.0f" rounds half to even.
        assert_eq!(f(2501.0, false), "2501 B");
        assert_eq!(f(2.5, false), "2 B");
        assert_eq!(f(3.5, false), "4 B");
        assert_eq!(f(0.5, false), "0 B");
        assert_eq!(f(-0.5, true), "-0 B");
        assert_eq!(f(10.5, false), "10 B");
    }

    #[test]
    fn larger_units() {
        // Values checked against CPython 3.13's tracemalloc._format_size.
        assert_eq!(f(10240.0, false), "10.0 KiB");
        assert_eq!(f(-10240.0, true), "-10.0 KiB");
        assert_eq!(f(10240.0, true), "+10.0 KiB");
        assert_eq!(f(102399.0, false), "100.0 KiB"); // 99.999 rounds up but stays in this branch
        assert_eq!(f(102400.0, false), "100 KiB");
        assert_eq!(f(1536.0 * 1024.0, false), "1536 KiB");
        assert_eq!(f(10.0 * 1024.0 * 1024.0, false), "10.0 MiB");
        assert_eq!(f(123456789.0, false), "118 MiB");
        assert_eq!(f(1e12, false), "931 GiB");
        assert_eq!(f(1e15, false), "909 TiB");
        assert_eq!(f(1e18, false), "909495 TiB");
        assert_eq!(f(-1e18, true), "-909495 TiB");
        assert_eq!(f(10.25 * 1024.0 * 1024.0, false), "10.2 MiB"); // half-even on an exact tie
    }

    #[test]
    fn non_finite() {
        assert_eq!(f(f64::INFINITY, false), "inf TiB");
        assert_eq!(f(f64::NEG_INFINITY, true), "-inf TiB");
        assert_eq!(f(f64::INFINITY, true), "+inf TiB");
        assert_eq!(f(f64::NAN, false), "nan TiB");
        assert_eq!(f(f64::NAN, true), "+nan TiB");
    }
}
