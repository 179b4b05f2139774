//! Hamed & Rao (1998) correction of the Mann–Kendall variance for serially correlated data.
//!
//! Live memory of a site is rarely independent from one window to the next (a queue that drains
//! slowly, a cache whose size follows load). Positive autocorrelation makes Mann–Kendall see
//! trends that are not there. Hamed–Rao detrends the series with Sen's slope, ranks the residuals,
//! and inflates `Var(S)` by
//! `n/n* = 1 + 2 / (n(n−1)(n−2)) · Σ_k (n−k)(n−k−1)(n−k−2) ρ_k`,
//! summing only the lags `k` whose rank autocorrelation `ρ_k` is significant at 5%
//! (`|ρ_k| > 1.96/√n`).
//!
//! heaptrail uses the *conservative* variant: the factor is clamped to `≥ 1`, so the correction can
//! only make a trend less significant (negative autocorrelation does not manufacture leaks).
//!
//! Short windows (a recent suffix of the history) cannot show their own correlation; for them
//! [`lag1_factor`] estimates it from the samples that precede the window.

/// Variance inflation factor for `values` at `times` detrended with `slope` (bytes/second).
/// `scratch` is reused between calls.
pub fn variance_factor(
    values: &[u64],
    times: &[f64],
    slope: f64,
    scratch: &mut Vec<(f64, usize)>,
) -> f64 {
    let n = values.len();
    if !(4..=MAX_N).contains(&n) {
        return 1.0;
    }
    let mut ranks = [0.0f64; MAX_N];
    let Some((ranks, denom)) = centred_ranks(values, times, slope, scratch, &mut ranks) else {
        return 1.0;
    };
    let bound = 1.96 / (n as f64).sqrt();
    let nf = n as f64;
    let mut sum = 0.0;
    for k in 1..n - 2 {
        let rho = lag_correlation(ranks, k, denom);
        if rho.abs() > bound {
            let m = (n - k) as f64;
            sum += m * (m - 1.0) * (m - 2.0) * rho;
        }
    }
    (1.0 + 2.0 / (nf * (nf - 1.0) * (nf - 2.0)) * sum).max(1.0)
}

/// Variance inflation `(1 + φ)/(1 − φ)` of an AR(1) process, with `φ` the lag-1 rank
/// autocorrelation of `values` detrended with `slope`, clamped to `[0, 0.9]`, with no
/// significance screening. Used for short windows, with `values` the samples *before* the
/// window: ten samples cannot show their own serial correlation, but a wandering series shows it
/// in its longer past (and a leak that started after a flat stretch does not).
pub fn lag1_factor(
    values: &[u64],
    times: &[f64],
    slope: f64,
    scratch: &mut Vec<(f64, usize)>,
) -> f64 {
    let n = values.len();
    if !(4..=MAX_N).contains(&n) {
        return 1.0;
    }
    let mut ranks = [0.0f64; MAX_N];
    let Some((ranks, denom)) = centred_ranks(values, times, slope, scratch, &mut ranks) else {
        return 1.0;
    };
    let phi = lag_correlation(ranks, 1, denom).clamp(0.0, 0.9);
    (1.0 + phi) / (1.0 - phi)
}

const MAX_N: usize = 1024;

/// Ranks of the detrended values (average rank for ties) minus their mean, in `out`, with their
/// sum of squares (the denominator of every lag correlation); `None` if they are all equal.
fn centred_ranks<'a>(
    values: &[u64],
    times: &[f64],
    slope: f64,
    scratch: &mut Vec<(f64, usize)>,
    out: &'a mut [f64; MAX_N],
) -> Option<(&'a [f64], f64)> {
    let n = values.len();
    scratch.clear();
    scratch.extend(
        super::shape::detrended(values, times, slope)
            .enumerate()
            .map(|(i, r)| (r, i)),
    );
    scratch.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let ranks = &mut out[..n];
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && scratch[j].0 == scratch[i].0 {
            j += 1;
        }
        let avg = (i + j - 1) as f64 / 2.0 + 1.0;
        for item in &scratch[i..j] {
            ranks[item.1] = avg;
        }
        i = j;
    }
    let mean = (n as f64 + 1.0) / 2.0;
    for r in ranks.iter_mut() {
        *r -= mean;
    }
    if ranks.iter().all(|&r| r == 0.0) {
        return None;
    }
    let denom = ranks.iter().map(|r| r * r).sum();
    Some((ranks, denom))
}

fn lag_correlation(ranks: &[f64], k: usize, denom: f64) -> f64 {
    let n = ranks.len();
    ranks[..n - k]
        .iter()
        .zip(&ranks[k..])
        .map(|(a, b)| a * b)
        .sum::<f64>()
        / denom
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn independent_noise_needs_little_or_no_correction() {
        // A fixed, visibly uncorrelated sequence.
        let x: [u64; 20] = [5, 9, 2, 7, 4, 8, 1, 6, 3, 10, 4, 9, 2, 8, 5, 7, 3, 9, 1, 6];
        let t: Vec<f64> = (0..20).map(|i| i as f64).collect();
        let f = variance_factor(&x, &t, 0.0, &mut Vec::new());
        assert!(f < 1.5, "{f}");
    }

    #[test]
    fn smooth_wandering_gets_a_large_correction() {
        // A slow oscillation: neighbours are alike.
        let x: Vec<u64> = (0..30)
            .map(|i| (1000.0 + 300.0 * (i as f64 / 5.0).sin()) as u64)
            .collect();
        let t: Vec<f64> = (0..30).map(|i| i as f64).collect();
        let f = variance_factor(&x, &t, 0.0, &mut Vec::new());
        assert!(f > 2.0, "{f}");
    }

    #[test]
    fn lag1_factor_sees_wandering_not_noise() {
        let t: Vec<f64> = (0..20).map(|i| i as f64).collect();
        let x: [u64; 20] = [5, 9, 2, 7, 4, 8, 1, 6, 3, 10, 4, 9, 2, 8, 5, 7, 3, 9, 1, 6];
        assert_eq!(lag1_factor(&x, &t, 0.0, &mut Vec::new()), 1.0);
        let wander: Vec<u64> = (0..20)
            .map(|i| (1000.0 + 300.0 * (i as f64 / 3.0).sin()) as u64)
            .collect();
        assert!(lag1_factor(&wander, &t, 0.0, &mut Vec::new()) > 3.0);
    }

    #[test]
    fn never_below_one_and_safe_on_constants() {
        let t: Vec<f64> = (0..10).map(|i| i as f64).collect();
        assert_eq!(variance_factor(&[3; 10], &t, 0.0, &mut Vec::new()), 1.0);
        let alt: Vec<u64> = (0..10).map(|i| if i % 2 == 0 { 1 } else { 9 }).collect();
        assert_eq!(variance_factor(&alt, &t, 0.0, &mut Vec::new()), 1.0);
    }
}
