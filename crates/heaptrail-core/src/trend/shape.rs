//! Cheap, robust descriptions of a series' shape that a rank test cannot see.
//!
//! * [`floor_rise`]: how much the *lowest* level of the recent half exceeds the lowest level of
//!   the older half. Leaked memory never comes back, so a leak lifts the floor; a batch buffer,
//!   a sawtooth or temporary batches with rising peaks keep returning to the same base.
//! * [`noise_scale`]: the size of the window-to-window noise, from the interquartile range of the
//!   first differences (a trend shifts the differences but does not widen them; a rare big drop
//!   does not count).
//! * [`residual_scale`]: the spread around the Sen line (median absolute deviation of the
//!   residuals): includes slow wandering that window-to-window differences miss.

/// `min(recent half) − min(older half)`; the recent half is the last `⌈n/2⌉` values.
pub fn floor_rise(values: &[u64]) -> f64 {
    let n = values.len();
    if n < 2 {
        return 0.0;
    }
    let split = n / 2;
    let old = values[..split].iter().copied().min().unwrap_or(0);
    let new = values[split..].iter().copied().min().unwrap_or(0);
    new as f64 - old as f64
}

/// Robust standard deviation of independent noise around the trend: `IQR(Δx) / 1.349 / √2`
/// (for normal noise the differences have standard deviation `σ√2` and IQR `1.349·σ√2`).
pub fn noise_scale(values: &[u64], scratch: &mut Vec<f64>) -> f64 {
    if values.len() < 3 {
        return 0.0;
    }
    scratch.clear();
    scratch.extend(values.windows(2).map(|w| w[1] as f64 - w[0] as f64));
    scratch.sort_unstable_by(f64::total_cmp);
    let q = |f: f64| {
        let pos = f * (scratch.len() - 1) as f64;
        let (lo, frac) = (pos.floor() as usize, pos.fract());
        let hi = (lo + 1).min(scratch.len() - 1);
        scratch[lo] + (scratch[hi] - scratch[lo]) * frac
    };
    (q(0.75) - q(0.25)) / 1.349 * std::f64::consts::FRAC_1_SQRT_2
}

/// Robust standard deviation of the residuals around the line of slope `slope` (bytes/second):
/// `1.4826 · MAD(x − slope·t)`.
pub fn residual_scale(values: &[u64], times: &[f64], slope: f64, scratch: &mut Vec<f64>) -> f64 {
    if values.len() < 3 {
        return 0.0;
    }
    scratch.clear();
    let t0 = times[0];
    scratch.extend(values.iter().zip(times).map(|(&x, &t)| x as f64 - slope * (t - t0)));
    let med = super::sen_slope::median(scratch);
    for r in scratch.iter_mut() {
        *r = (*r - med).abs();
    }
    1.4826 * super::sen_slope::median(scratch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_of_a_leak_rises_and_of_a_sawtooth_does_not() {
        let leak: Vec<u64> = (0..20).map(|i| 1000 + 10 * i + (i % 3) * 15).collect();
        assert!(floor_rise(&leak) > 0.0);
        let saw: Vec<u64> = (0..20).map(|i| 1000 + 100 * (i % 5)).collect();
        assert_eq!(floor_rise(&saw), 0.0);
    }

    #[test]
    fn noise_scale_ignores_trend_and_rare_drops() {
        let line: Vec<u64> = (0..20).map(|i| 1000 + 10 * i).collect();
        assert_eq!(noise_scale(&line, &mut Vec::new()), 0.0);
        let mut saw = line.clone();
        saw[10] = 0;
        assert_eq!(noise_scale(&saw, &mut Vec::new()), 0.0);
        let noisy: Vec<u64> = (0..20).map(|i| 1000 + if i % 2 == 0 { 50 } else { 0 }).collect();
        assert!(noise_scale(&noisy, &mut Vec::new()) > 30.0);
    }
}
