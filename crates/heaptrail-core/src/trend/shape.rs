//! Cheap, robust descriptions of a series' shape that a rank test cannot see.
//!
//! * [`floor_rise`]: how much the *lowest* level of the recent half exceeds the lowest level of
//!   the older half. Leaked memory never comes back, so a leak lifts the floor; a batch buffer,
//!   a sawtooth or temporary batches with rising peaks keep returning to the same base.
//! * [`line_beats_step`]: whether a straight line explains the window at least as well as the best
//!   single level shift (two flat segments). Leaks grow steadily; a cache filled once, a
//!   warm-up or a one-off allocation is a step, and noise after a step must not read as growth.
//! * [`residual_scale`]: the spread around the Sen line (median absolute deviation of the
//!   residuals), the noise a leak's growth must stand out of. (Window-to-window differences
//!   would miss slow wandering.)
//! * [`batch_cut`]: how far above the trend a sample must be to count as a temporary batch.

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

/// `true` if the line of slope `slope` (bytes/second, intercept fitted) leaves a sum of squared
/// residuals no larger than the best two-segment step function (each segment at least 2 samples
/// long, at its mean). Squared residuals on purpose: a robust fit would treat a warm-up's first
/// samples as outliers and let the line win. (Penalising the step for its extra parameter, as
/// BIC would, doubled false leaks after steps in the sweeps for little gain.) `O(n)` with
/// prefix sums.
pub fn line_beats_step(values: &[u64], times: &[f64], slope: f64) -> bool {
    let n = values.len();
    if n < 4 {
        return true;
    }
    // Everything relative to the first sample, for precision.
    let x0 = values[0] as f64;
    let t0 = times[0];
    let (mut s1, mut s2) = (0.0, 0.0);
    for (&x, &t) in values.iter().zip(times) {
        let r = (x as f64 - x0) - slope * (t - t0);
        s1 += r;
        s2 += r * r;
    }
    let sse_line = s2 - s1 * s1 / n as f64;
    let (total1, total2) = values.iter().fold((0.0, 0.0), |(a, b), &x| {
        let d = x as f64 - x0;
        (a + d, b + d * d)
    });
    let (mut a1, mut a2) = (0.0, 0.0);
    let mut best = f64::INFINITY;
    for (k, &x) in values.iter().enumerate().take(n - 2) {
        let d = x as f64 - x0;
        a1 += d;
        a2 += d * d;
        let left = (k + 1) as f64;
        if k == 0 {
            continue;
        }
        let right = n as f64 - left;
        let (b1, b2) = (total1 - a1, total2 - a2);
        best = best.min((a2 - a1 * a1 / left) + (b2 - b1 * b1 / right));
    }
    sse_line <= best
}

/// Samples more than this many robust standard deviations above the Sen line are temporary
/// batches (see [`batch_cut`]).
pub const BATCH_OUTLIER: f64 = 4.0;

/// The residual (value minus the line of slope `slope` through the first sample) above which a
/// sample is a temporary batch: `median + BATCH_OUTLIER · 1.4826 · MAD` of the residuals.
/// Only samples far *above* the trend are cut: memory in flight for one window says nothing about
/// what stays, while samples below it (a warm-up's start) are part of the shape.
pub fn batch_cut(values: &[u64], times: &[f64], slope: f64, scratch: &mut Vec<f64>) -> f64 {
    scratch.clear();
    scratch.extend(
        values
            .iter()
            .zip(times)
            .map(|(&x, &t)| residual(x, t, values[0], times[0], slope)),
    );
    let med = super::sen_slope::median(scratch);
    for r in scratch.iter_mut() {
        *r = (*r - med).abs();
    }
    med + BATCH_OUTLIER * 1.4826 * super::sen_slope::median(scratch)
}

/// `x − x0 − slope·(t − t0)`.
#[inline]
pub fn residual(x: u64, t: f64, x0: u64, t0: f64, slope: f64) -> f64 {
    (x as f64 - x0 as f64) - slope * (t - t0)
}

/// The residuals of `values` around the line of slope `slope` (bytes/second) through the first
/// sample's time: `x − slope·(t − t₀)`.
pub fn detrended<'a>(
    values: &'a [u64],
    times: &'a [f64],
    slope: f64,
) -> impl Iterator<Item = f64> + 'a {
    let t0 = times.first().copied().unwrap_or(0.0);
    values
        .iter()
        .zip(times)
        .map(move |(&x, &t)| x as f64 - slope * (t - t0))
}

/// Robust standard deviation of the residuals around the line of slope `slope` (bytes/second):
/// `1.4826 · MAD(x − slope·t)`.
pub fn residual_scale(values: &[u64], times: &[f64], slope: f64, scratch: &mut Vec<f64>) -> f64 {
    if values.len() < 3 {
        return 0.0;
    }
    scratch.clear();
    scratch.extend(detrended(values, times, slope));
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
    fn lines_and_steps() {
        let t: Vec<f64> = (0..12).map(|i| i as f64).collect();
        let line: Vec<u64> = (0..12).map(|i| 1000 + 100 * i + (i % 2) * 30).collect();
        assert!(line_beats_step(&line, &t, 100.0));
        let step: Vec<u64> = (0..12)
            .map(|i| if i < 5 { 1000 } else { 2000 } + (i % 3) * 20)
            .collect();
        assert!(!line_beats_step(&step, &t, 90.0));
    }

    #[test]
    fn batches_are_cut_and_warm_ups_are_not() {
        let t: Vec<f64> = (0..12).map(|i| i as f64).collect();
        let mut v: Vec<u64> = (0..12).map(|i| 1000 + 10 * i + (i % 3) * 4).collect();
        v[6] += 500;
        v[0] = 100;
        let cut = batch_cut(&v, &t, 10.0, &mut Vec::new());
        let cut_out: Vec<usize> = (0..12)
            .filter(|&i| residual(v[i], t[i], v[0], t[0], 10.0) > cut)
            .collect();
        assert_eq!(cut_out, [6]);
    }
}
