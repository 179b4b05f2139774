//! Everything the verdict rules look at for one series, computed once.
//!
//! The series is a *tested window* (oldest first) of up to `history` samples. The rules use two
//! views of it:
//! * the **whole window**: Mann–Kendall with the Hamed–Rao correction → `p_full`; Sen slope →
//!   `full_rate`;
//! * the **recent window**, its last `max(min_windows, n/3)` samples: Mann–Kendall → `p_recent`;
//!   Sen slope → `rate` (what reports show as bytes per second) and `growth = rate × duration`.
//!
//! plus two shape measures ([`super::shape`]): `floor_rise` and `noise`.

use super::autocorrelation::variance_factor;
use super::config::TrendConfig;
use super::mann_kendall::{p_increasing, statistic};
use super::sen_slope::sen_slope;
use super::shape::{floor_rise, residual_scale};

/// The recent rate must be at least this fraction of the whole window's rate: growth that is
/// fading fast (a warm-up saturating) is not a leak yet.
pub const MIN_RATE_RATIO: f64 = 0.5;
/// A leak's growth over the whole window must exceed this many noise standard deviations.
pub const MIN_SIGNAL_TO_NOISE: f64 = 4.0;
/// ...and its growth over the recent window this many.
pub const MIN_RECENT_SIGNAL_TO_NOISE: f64 = 1.0;
/// The floor must rise by at least this share of the growth over the whole window (a clean
/// line lifts it by half).
pub const MIN_FLOOR_SHARE: f64 = 0.25;
/// `Suspect` thresholds are the leak thresholds (`min_rate`, `min_growth_bytes`) divided by this.
pub const SUSPECT_DIVISOR: f64 = 4.0;

/// Buffers reused from one series to the next.
#[derive(Default)]
pub struct Scratch {
    pub floats: Vec<f64>,
    pub ranks: Vec<(f64, usize)>,
}

/// Sen slope over the recent window and the growth it implies over that window's duration.
/// Cheap (at most `recent_len²/2` pairs); 0 when the recent window is constant.
pub fn recent_rate(cfg: &TrendConfig, values: &[u64], times: &[f64], scratch: &mut Scratch) -> (f64, f64) {
    let n = values.len();
    let r = cfg.recent_len(n);
    if r < 2 {
        return (0.0, 0.0);
    }
    let (rv, rt) = (&values[n - r..], &times[n - r..]);
    if rv.iter().all(|&v| v == rv[0]) {
        return (0.0, 0.0);
    }
    let rate = sen_slope(rv, rt, &mut scratch.floats);
    (rate, rate * (rt[r - 1] - rt[0]))
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Evidence {
    /// Samples in the whole (tested) window.
    pub n: usize,
    /// One-sided Mann–Kendall p-value of "increasing" over the whole window, Hamed–Rao corrected.
    pub p_full: f64,
    /// Same, over the recent window (no correction: too few samples to estimate correlation).
    pub p_recent: f64,
    /// Mann–Kendall S over the recent window.
    pub s_recent: i64,
    /// Sen slope over the recent window, bytes per second.
    pub rate: f64,
    /// `rate ×` the recent window's duration, bytes.
    pub growth: f64,
    /// Sen slope over the whole window, bytes per second.
    pub full_rate: f64,
    /// `full_rate ×` the whole window's duration, bytes.
    pub full_growth: f64,
    /// Sen slope over the older half of the window (its first `⌈n/2⌉` samples), bytes per second.
    pub early_rate: f64,
    /// Lowest value of the recent half minus lowest value of the older half, bytes.
    pub floor_rise: f64,
    /// Robust standard deviation of the values around the whole window's Sen line, bytes.
    pub noise: f64,
}

impl Evidence {
    /// Computes the evidence for `values` at `times` whose Mann–Kendall statistic over the whole
    /// window is `s` with tie sum `tie_term` (kept incrementally by the caller).
    pub fn compute(cfg: &TrendConfig, values: &[u64], times: &[f64], s: i64, tie_term: i64, scratch: &mut Scratch) -> Evidence {
        let n = values.len();
        let r = cfg.recent_len(n);
        let (rate, growth) = recent_rate(cfg, values, times, scratch);
        let full_rate = sen_slope(values, times, &mut scratch.floats);
        let full_growth = full_rate * (times[n - 1] - times[0]);
        let half = n.div_ceil(2);
        let early_rate = sen_slope(&values[..half], &times[..half], &mut scratch.floats);
        let factor = variance_factor(values, times, full_rate, &mut scratch.ranks);
        let p_full = p_increasing(n, s, tie_term, factor);
        let (s_recent, tie_recent) = statistic(&values[n - r..]);
        let p_recent = p_increasing(r, s_recent, tie_recent, 1.0);
        Evidence {
            n,
            p_full,
            p_recent,
            s_recent,
            rate,
            growth,
            full_rate,
            full_growth,
            early_rate,
            floor_rise: floor_rise(values),
            noise: residual_scale(values, times, full_rate, &mut scratch.floats),
        }
    }

    /// The growth is recent, not fading, lifts the floor and stands out of the noise.
    fn sustained(&self) -> bool {
        self.floor_rise >= MIN_FLOOR_SHARE * self.full_growth
            && self.floor_rise > 0.0
            && self.rate >= MIN_RATE_RATIO * self.full_rate.max(self.early_rate)
            && self.full_growth >= MIN_SIGNAL_TO_NOISE * self.noise
            && self.growth >= MIN_RECENT_SIGNAL_TO_NOISE * self.noise
    }

    /// All the conditions of a leak (see the module documentation of [`super`]).
    pub fn is_leak(&self, cfg: &TrendConfig) -> bool {
        self.n >= cfg.min_leak_windows()
            && self.p_full <= cfg.leak_p
            && self.p_recent <= cfg.suspect_p
            && self.rate >= cfg.min_rate
            && self.growth >= cfg.min_growth_bytes
            && self.sustained()
    }

    /// Weaker conditions that keep a site already called a leak in that state (hysteresis, so
    /// a noisy leak does not flicker): the whole-window trend is still at leak level, the floor
    /// still rises, and the recent window still grows.
    pub fn still_leaking(&self, cfg: &TrendConfig) -> bool {
        self.p_full <= cfg.leak_p
            && self.s_recent > 0
            && self.rate >= cfg.min_rate / SUSPECT_DIVISOR
            && self.floor_rise > 0.0
    }

    /// Growth worth watching: significant at `suspect_p` over the whole window and the recent
    /// one, not fading, and at least a quarter of the leak thresholds.
    pub fn is_suspect(&self, cfg: &TrendConfig) -> bool {
        self.p_full <= cfg.suspect_p
            && self.p_recent <= cfg.suspect_p
            && self.rate > 0.0
            && self.rate >= MIN_RATE_RATIO * self.full_rate
            && self.rate >= cfg.min_rate / SUSPECT_DIVISOR
            && self.growth >= cfg.min_growth_bytes / SUSPECT_DIVISOR
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(f: impl Fn(usize) -> f64, n: usize) -> (Vec<u64>, Vec<f64>) {
        let v = (0..n).map(|i| f(i).max(0.0) as u64).collect();
        let t = (0..n).map(|i| 10.0 * i as f64).collect();
        (v, t)
    }

    fn ev(v: &[u64], t: &[f64]) -> Evidence {
        let (s, tie) = statistic(v);
        Evidence::compute(&TrendConfig::default(), v, t, s, tie, &mut Scratch::default())
    }

    #[test]
    fn a_clean_line_is_a_leak() {
        let (v, t) = series(|i| 1e6 + 1e5 * i as f64, 20);
        let e = ev(&v, &t);
        assert!(e.is_leak(&TrendConfig::default()), "{e:?}");
        assert!((e.rate - 1e4).abs() < 1e-6);
    }

    #[test]
    fn a_saturated_warm_up_is_not() {
        let (v, t) = series(|i| 1e7 * (1.0 - (-(i as f64) / 1.5).exp()), 12);
        let e = ev(&v, &t);
        assert!(!e.is_leak(&TrendConfig::default()), "{e:?}");
    }

    #[test]
    fn a_sawtooth_does_not_lift_the_floor() {
        let (v, t) = series(|i| 1e6 + 2e5 * (i % 7) as f64, 30);
        let e = ev(&v, &t);
        assert!(!e.is_leak(&TrendConfig::default()), "{e:?}");
        assert_eq!(e.floor_rise, 0.0);
    }
}
