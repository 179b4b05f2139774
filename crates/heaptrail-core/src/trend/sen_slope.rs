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
/// Reorders `v`.
pub fn median(v: &mut [f64]) -> f64 {
    let m = v.len();
    if m == 0 {
        return 0.0;
    }
    let mid = m / 2;
    let (below, &mut hi, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    if m % 2 == 1 {
        hi
    } else {
        let lo = below.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo + hi) / 2.0
    }
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
        assert_eq!(median(&mut []), 0.0);
    }
}
