//! Sen's slope: the median of the pairwise slopes `(x_j − x_i) / (t_j − t_i)`, `i < j`.
//!
//! A robust rate (bytes per second): up to ~29% of the points can be arbitrary without moving it
//! much, unlike a least-squares fit that one freed batch buffer drags around. `O(n²)` pairs and a
//! linear-time selection; windows are at most `history` samples (30 by default).
//! Pairs whose times are not increasing are skipped; with no usable pair the slope is 0.

/// Sen's slope of `values` observed at `times` (same length, oldest first). `scratch` is reused
/// between calls to avoid allocating.
pub fn sen_slope(values: &[u64], times: &[f64], scratch: &mut Vec<f64>) -> f64 {
    debug_assert_eq!(values.len(), times.len());
    scratch.clear();
    let n = values.len();
    for i in 0..n {
        let (xi, ti) = (values[i] as f64, times[i]);
        for j in i + 1..n {
            let dt = times[j] - ti;
            if dt > 0.0 {
                scratch.push((values[j] as f64 - xi) / dt);
            }
        }
    }
    median(scratch)
}

/// Median (mean of the two middle values for an even count); 0 for an empty slice.
/// Reorders `v` (NaNs, which callers never produce, order by IEEE total order).
pub fn median(v: &mut [f64]) -> f64 {
    let m = v.len();
    if m == 0 {
        return 0.0;
    }
    // Select on integers that order like the floats (IEEE 754 total order): several times
    // faster than comparing floats through a closure, and this runs for every changing site.
    // SAFETY-free reinterpretation: f64 and i64 have the same size; we map in place and back.
    for x in v.iter_mut() {
        *x = f64::from_bits(order_key(*x) as u64);
    }
    let keys: &mut [i64] = bytemuck_i64(v);
    let mid = m / 2;
    let (below, &mut hi, _) = keys.select_nth_unstable(mid);
    let hi = from_order_key(hi);
    let result = if m % 2 == 1 {
        hi
    } else {
        let lo = below.iter().copied().max().map(from_order_key).unwrap_or(hi);
        (lo + hi) / 2.0
    };
    for x in keys.iter_mut() {
        *x = from_order_key(*x).to_bits() as i64;
    }
    result
}

/// An `i64` that orders like `x` in IEEE 754 total order.
#[inline]
fn order_key(x: f64) -> i64 {
    let bits = x.to_bits() as i64;
    bits ^ (((bits >> 63) as u64) >> 1) as i64
}

#[inline]
fn from_order_key(k: i64) -> f64 {
    f64::from_bits((k ^ (((k >> 63) as u64) >> 1) as i64) as u64)
}

/// Views a slice of `f64` (holding order keys as bits) as `i64`.
fn bytemuck_i64(v: &mut [f64]) -> &mut [i64] {
    // SAFETY: f64 and i64 have the same size and alignment, and every bit pattern is valid for
    // both; the lifetime and length are carried over.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<i64>(), v.len()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_line() {
        let t: Vec<f64> = (0..10).map(|i| i as f64 * 2.0).collect();
        let x: Vec<u64> = (0..10).map(|i| 1000 + 50 * i).collect();
        assert_eq!(sen_slope(&x, &t, &mut Vec::new()), 25.0);
    }

    #[test]
    fn robust_to_an_outlier() {
        let t: Vec<f64> = (0..9).map(|i| i as f64).collect();
        let mut x: Vec<u64> = (0..9).map(|i| 100 + 10 * i).collect();
        x[4] = 1_000_000;
        assert_eq!(sen_slope(&x, &t, &mut Vec::new()), 10.0);
    }

    #[test]
    fn decreasing_and_degenerate() {
        let t = [0.0, 1.0, 2.0];
        assert_eq!(sen_slope(&[30, 20, 10], &t, &mut Vec::new()), -10.0);
        assert_eq!(sen_slope(&[5], &[0.0], &mut Vec::new()), 0.0);
        assert_eq!(sen_slope(&[5, 9], &[1.0, 1.0], &mut Vec::new()), 0.0);
    }

    #[test]
    fn median_even_and_odd() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut [-4.5, 1.0, -3.0, 2.0, 0.0, -0.0]), -0.0 / 2.0 + 0.0);
        assert_eq!(median(&mut [-1e300, -2.0, 7.0]), -2.0);
        assert_eq!(median(&mut []), 0.0);
        let mut v = [5.0, -1.0, 3.0];
        median(&mut v);
        v.sort_by(f64::total_cmp);
        assert_eq!(v, [-1.0, 3.0, 5.0], "values are kept");
    }
}
