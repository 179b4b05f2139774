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
    let n = values.len();
    if n <= SMALL_N {
        return sen_slope_small(values, times);
    }
    scratch.clear();
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

/// Inverse time differences of every pair of a small window, kept while the detector judges all
/// sites of one window (they share their times): slopes then cost a multiplication instead of a
/// division. (The result can differ from [`sen_slope`] in the last bit.)
#[derive(Debug, Default)]
pub struct PairTable {
    key: (usize, usize, u64, u64),
    inverse: Vec<f64>,
}

/// [`sen_slope`] through a [`PairTable`] for windows of at most 16 samples (larger windows fall
/// back to [`sen_slope`]).
pub fn sen_slope_cached(
    values: &[u64],
    times: &[f64],
    table: &mut PairTable,
    scratch: &mut Vec<f64>,
) -> f64 {
    let n = values.len();
    if !(2..=SMALL_N).contains(&n) {
        return sen_slope(values, times, scratch);
    }
    let key = (
        times.as_ptr() as usize,
        n,
        times[0].to_bits(),
        times[n - 1].to_bits(),
    );
    if table.key != key {
        table.key = key;
        table.inverse.clear();
        for i in 0..n {
            for j in i + 1..n {
                let dt = times[j] - times[i];
                table
                    .inverse
                    .push(if dt > 0.0 { 1.0 / dt } else { f64::NAN });
            }
        }
    }
    let mut keys = [0i64; SMALL_N * (SMALL_N - 1) / 2];
    let (mut m, mut p) = (0, 0);
    for (i, &xi) in values.iter().enumerate() {
        let xi = xi as f64;
        for &xj in &values[i + 1..] {
            let inv = table.inverse[p];
            p += 1;
            if !inv.is_nan() {
                keys[m] = order_key((xj as f64 - xi) * inv);
                m += 1;
            }
        }
    }
    median_of_keys(&mut keys[..m])
}

/// Windows up to this many samples are handled on the stack ([`sen_slope_small`]).
const SMALL_N: usize = 16;

/// [`sen_slope`] for at most [`SMALL_N`] samples: slopes go straight into a stack array as
/// integers that order like the floats, and are selected there. The detector computes the
/// recent rate of every changing site in every window, so this is the hot path.
fn sen_slope_small(values: &[u64], times: &[f64]) -> f64 {
    let n = values.len();
    let mut keys = [0i64; SMALL_N * (SMALL_N - 1) / 2];
    let mut m = 0;
    for i in 0..n {
        let (xi, ti) = (values[i] as f64, times[i]);
        for j in i + 1..n {
            let dt = times[j] - ti;
            if dt > 0.0 {
                keys[m] = order_key((values[j] as f64 - xi) / dt);
                m += 1;
            }
        }
    }
    median_of_keys(&mut keys[..m])
}

/// Median of order keys (see [`order_key`]) as a float; 0 when empty.
fn median_of_keys(keys: &mut [i64]) -> f64 {
    let m = keys.len();
    if m == 0 {
        return 0.0;
    }
    let hi = select(keys, m / 2);
    median_from_middle(&keys[..m / 2], hi, m)
}

/// The median of `m` order keys, given the upper middle one (`hi`, the `m/2`-th smallest) and
/// the keys below it: for an even count, the mean of `hi` and the largest of those below.
fn median_from_middle(below: &[i64], hi: i64, m: usize) -> f64 {
    let hi = from_order_key(hi);
    if m % 2 == 1 {
        return hi;
    }
    let lo = below
        .iter()
        .copied()
        .max()
        .map(from_order_key)
        .unwrap_or(hi);
    (lo + hi) / 2.0
}

/// The `k`-th smallest of `a` (0-based); afterwards `a[..k]` holds the smaller ones.
/// Quickselect with a median-of-three pivot and a branch-free partition: for the few dozen
/// elements of a recent window's slopes, about 1.5x faster than `select_nth_unstable`.
fn select(a: &mut [i64], k: usize) -> i64 {
    let (mut lo, mut hi) = (0usize, a.len() - 1);
    loop {
        if hi - lo < 6 {
            for i in lo + 1..=hi {
                let v = a[i];
                let mut j = i;
                while j > lo && a[j - 1] > v {
                    a[j] = a[j - 1];
                    j -= 1;
                }
                a[j] = v;
            }
            return a[k];
        }
        let mid = lo + (hi - lo) / 2;
        if a[mid] < a[lo] {
            a.swap(mid, lo);
        }
        if a[hi] < a[lo] {
            a.swap(hi, lo);
        }
        if a[hi] < a[mid] {
            a.swap(hi, mid);
        }
        let pivot = a[mid];
        a.swap(mid, hi);
        let mut store = lo;
        for i in lo..hi {
            let x = a[i];
            a.swap(i, store);
            store += (x < pivot) as usize;
        }
        a.swap(store, hi);
        match k.cmp(&store) {
            std::cmp::Ordering::Equal => return a[k],
            std::cmp::Ordering::Less => hi = store - 1,
            std::cmp::Ordering::Greater => lo = store + 1,
        }
    }
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
    // The floats are rewritten in place as order keys and viewed as i64 (bytemuck checks that
    // the two types have the same size and alignment), then mapped back.
    for x in v.iter_mut() {
        *x = f64::from_bits(order_key(*x) as u64);
    }
    let keys: &mut [i64] = bytemuck::cast_slice_mut(v);
    let mid = m / 2;
    // select_nth_unstable, not `select`: this median runs over up to n(n−1)/2 slopes of long
    // windows, where its linear worst case matters more than `select`'s speed on small ones.
    let (below, &mut hi, _) = keys.select_nth_unstable(mid);
    let result = median_from_middle(below, hi, m);
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
    fn small_and_large_paths_agree() {
        let mut state = 12345u64;
        for n in 2..40 {
            let t: Vec<f64> = (0..n).map(|i| i as f64 * 3.0 + (i % 3) as f64).collect();
            let x: Vec<u64> = (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state % 1000
                })
                .collect();
            let mut slopes = Vec::new();
            for i in 0..n {
                for j in i + 1..n {
                    slopes.push((x[j] as f64 - x[i] as f64) / (t[j] - t[i]));
                }
            }
            slopes.sort_by(f64::total_cmp);
            let m = slopes.len();
            let expected = if m % 2 == 1 {
                slopes[m / 2]
            } else {
                (slopes[m / 2 - 1] + slopes[m / 2]) / 2.0
            };
            assert_eq!(sen_slope(&x, &t, &mut Vec::new()), expected, "n = {n}");
        }
    }

    #[test]
    fn cached_pairs_agree_with_division() {
        let t: Vec<f64> = (0..10)
            .map(|i| 7.0 * i as f64 + 0.5 * (i % 2) as f64)
            .collect();
        let x: Vec<u64> = (0..10)
            .map(|i| 5000 + 300 * i + (i * 7919) % 1000)
            .collect();
        let mut table = PairTable::default();
        let a = sen_slope_cached(&x, &t, &mut table, &mut Vec::new());
        let b = sen_slope(&x, &t, &mut Vec::new());
        assert!((a - b).abs() <= 1e-9 * b.abs(), "{a} vs {b}");
        // A different time axis of the same length refreshes the table.
        let t2: Vec<f64> = t.iter().map(|v| v * 2.0).collect();
        let c = sen_slope_cached(&x, &t2, &mut table, &mut Vec::new());
        assert!((c - b / 2.0).abs() <= 1e-9 * b.abs());
    }

    #[test]
    fn select_matches_sorting() {
        let mut state = 99u64;
        for len in 1..80 {
            for _ in 0..20 {
                let v: Vec<i64> = (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        (state % 50) as i64 - 25
                    })
                    .collect();
                let mut sorted = v.clone();
                sorted.sort();
                for k in [0, len / 2, len - 1] {
                    let mut a = v.clone();
                    assert_eq!(select(&mut a, k), sorted[k]);
                    assert!(a[..k].iter().all(|&x| x <= sorted[k]));
                }
            }
        }
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
        assert_eq!(median(&mut [-4.5, 1.0, -3.0, 2.0, 0.0, -0.0]), 0.0);
        assert_eq!(median(&mut [-1e300, -2.0, 7.0]), -2.0);
        assert_eq!(median(&mut []), 0.0);
        let mut v = [5.0, -1.0, 3.0];
        median(&mut v);
        v.sort_by(f64::total_cmp);
        assert_eq!(v, [-1.0, 3.0, 5.0], "values are kept");
    }
}
