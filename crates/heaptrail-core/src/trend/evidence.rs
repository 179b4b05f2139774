//! Everything the leak rules look at for one window of samples, and the search over recent
//! suffixes of a site's history.
//!
//! For a window of `m` samples (oldest first), [`Evidence::compute_with_past`] first leaves out
//! *temporary batches* — single samples more than 4 robust standard deviations above the
//! window's Sen line with a normal sample on each side ([`super::shape::batch_cut`]) — then
//! measures:
//! * `p_full`: one-sided Mann–Kendall p-value of "increasing" over the window, its variance
//!   inflated by the larger of the Hamed–Rao factor of the window and, for a suffix of the
//!   history, the lag-1 factor of the samples before it ([`super::autocorrelation`]);
//! * `p_recent`, `rate`, `growth`: Mann–Kendall p-value and Sen slope over the *recent window*
//!   (its last `max(min_windows, m/3)` samples, never its first `⌈min_windows/2⌉`), and
//!   `rate ×` the recent window's duration;
//! * `full_rate`, `full_growth`: Sen slope over the window and `full_rate ×` its duration (the
//!   growth the evidence is about, which `min_growth_bytes` applies to);
//! * `floor_rise`, `noise`, `linear`, `new_high` ([`super::shape`]).
//!
//! [`Evidence::leak_conditions`] lists the leak conditions; [`search`] tries the whole tested
//! window and its last 2/3, 1/2 and 1/3 (those of at least `min_leak_windows` samples) so that a
//! leak starting after a long flat stretch is judged on the samples where it happens.

use super::autocorrelation::{lag1_factor, variance_factor};
use super::config::TrendConfig;
use super::mann_kendall::{p_increasing, statistic};
use super::sen_slope::{sen_slope, sen_slope_cached, PairTable};
use super::shape::{batch_cut, floor_rise, line_beats_step, residual, residual_scale};

/// The recent rate must be at least this fraction of the whole window's rate: growth that is
/// fading fast (a warm-up saturating) is not a leak yet.
pub const MIN_RATE_RATIO: f64 = 0.5;
/// A leak's growth over the whole window must exceed this many noise standard deviations.
pub const MIN_SIGNAL_TO_NOISE: f64 = 6.0;
/// ...and its growth over the recent window this many.
pub const MIN_RECENT_SIGNAL_TO_NOISE: f64 = 1.0;
/// The floor must rise by at least this share of the growth over the whole window (a clean
/// line lifts it by half).
pub const MIN_FLOOR_SHARE: f64 = 0.25;
/// Fewest samples before a suffix from which its serial correlation is estimated.
pub const MIN_PAST: usize = 8;
/// `Suspect` thresholds are the leak thresholds (`min_rate`, `min_growth_bytes`) divided by this.
pub const SUSPECT_DIVISOR: f64 = 4.0;

/// Buffers reused from one series to the next.
#[derive(Default)]
pub struct Scratch {
    pub floats: Vec<f64>,
    pub ranks: Vec<(f64, usize)>,
    pub values: Vec<u64>,
    pub times: Vec<f64>,
    pub pairs: PairTable,
}

/// Sen slope over the recent window and the growth it implies over that window's duration.
/// Cheap (at most `recent_len²/2` pairs); 0 when the recent window is constant.
pub fn recent_rate(
    cfg: &TrendConfig,
    values: &[u64],
    times: &[f64],
    scratch: &mut Scratch,
) -> (f64, f64) {
    let n = values.len();
    let r = cfg.recent_len(n);
    if r < 2 {
        return (0.0, 0.0);
    }
    let (rv, rt) = (&values[n - r..], &times[n - r..]);
    if rv.iter().all(|&v| v == rv[0]) {
        return (0.0, 0.0);
    }
    let rate = sen_slope_cached(rv, rt, &mut scratch.pairs, &mut scratch.floats);
    (rate, rate * (rt[r - 1] - rt[0]))
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Evidence {
    /// Samples in the whole (tested) window.
    pub n: usize,
    /// Samples left out as temporary batches; the other fields describe the rest.
    pub batches: usize,
    /// The p-value `p_full` must reach for a leak: `leak_p`, divided by the number of windows
    /// tested when [`search`] tries several suffixes (Bonferroni).
    pub leak_alpha: f64,
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
    /// Lowest value of the recent half minus lowest value of the older half, bytes.
    pub floor_rise: f64,
    /// Robust standard deviation of the values around the whole window's Sen line, bytes.
    pub noise: f64,
    /// The whole window's Sen line fits at least as well as the best single level shift.
    pub linear: bool,
    /// For a window with samples before it (a suffix of the history): the median of its last 3
    /// samples exceeds every earlier sample — the memory reached a level never seen before,
    /// which a series wandering in a range does not. `true` without earlier samples.
    pub new_high: bool,
}

impl Evidence {
    /// Computes the evidence for `values` at `times` whose Mann–Kendall statistic over the whole
    /// window is `s` with tie sum `tie_term` (kept incrementally by the caller).
    ///
    /// Temporary batches — single samples far above the whole window's Sen line
    /// ([`super::shape::batch_cut`]) with a normal sample on each side — are left out first; if
    /// there are any, the statistics are computed again on the remaining samples.
    pub fn compute(
        cfg: &TrendConfig,
        values: &[u64],
        times: &[f64],
        s: i64,
        tie_term: i64,
        scratch: &mut Scratch,
    ) -> Evidence {
        Self::compute_with_past(cfg, values, times, s, tie_term, (&[], &[]), scratch)
    }

    /// [`Self::compute`] for a window preceded by `past` (values, times): when it holds at least
    /// [`MIN_PAST`] samples, its serial correlation ([`lag1_factor`]) also inflates the window's
    /// Mann–Kendall variance.
    pub fn compute_with_past(
        cfg: &TrendConfig,
        values: &[u64],
        times: &[f64],
        s: i64,
        tie_term: i64,
        past: (&[u64], &[f64]),
        scratch: &mut Scratch,
    ) -> Evidence {
        let new_high = match past.0.iter().max() {
            Some(&high) if values.len() >= 3 => {
                let mut last = [
                    values[values.len() - 3],
                    values[values.len() - 2],
                    values[values.len() - 1],
                ];
                last.sort_unstable();
                last[1] > high
            }
            _ => true,
        };
        let past_factor = if past.0.len() >= MIN_PAST {
            let slope = sen_slope(past.0, past.1, &mut scratch.floats);
            lag1_factor(past.0, past.1, slope, &mut scratch.ranks)
        } else {
            1.0
        };
        let n = values.len();
        let full_rate = sen_slope(values, times, &mut scratch.floats);
        if n >= cfg.min_windows {
            let cut = batch_cut(values, times, full_rate, &mut scratch.floats);
            let high =
                |i: usize| residual(values[i], times[i], values[0], times[0], full_rate) > cut;
            // Only isolated excursions with a sample on each side: a high run, or a high first
            // sample, may be the top of a sawtooth whose drop is the evidence.
            let is_batch = |i: usize| i > 0 && i + 1 < n && high(i) && !high(i - 1) && !high(i + 1);
            if (0..n).any(is_batch) {
                let mut kept_values = std::mem::take(&mut scratch.values);
                let mut kept_times = std::mem::take(&mut scratch.times);
                kept_values.clear();
                kept_times.clear();
                for i in (0..n).filter(|&i| !is_batch(i)) {
                    kept_values.push(values[i]);
                    kept_times.push(times[i]);
                }
                let (s, tie) = statistic(&kept_values);
                let full_rate = sen_slope(&kept_values, &kept_times, &mut scratch.floats);
                let mut e = Self::compute_on(
                    cfg,
                    &kept_values,
                    &kept_times,
                    s,
                    tie,
                    full_rate,
                    past_factor,
                    scratch,
                );
                e.n = n;
                e.batches = n - kept_values.len();
                e.new_high = new_high;
                scratch.values = kept_values;
                scratch.times = kept_times;
                return e;
            }
        }
        let mut e = Self::compute_on(
            cfg,
            values,
            times,
            s,
            tie_term,
            full_rate,
            past_factor,
            scratch,
        );
        e.new_high = new_high;
        e
    }

    #[allow(clippy::too_many_arguments)]
    fn compute_on(
        cfg: &TrendConfig,
        values: &[u64],
        times: &[f64],
        s: i64,
        tie_term: i64,
        full_rate: f64,
        past_factor: f64,
        scratch: &mut Scratch,
    ) -> Evidence {
        let n = values.len();
        let r = cfg.recent_len(n);
        let (rate, growth) = recent_rate(cfg, values, times, scratch);
        let full_growth = full_rate * (times[n - 1] - times[0]);
        let factor = variance_factor(values, times, full_rate, &mut scratch.ranks).max(past_factor);
        let p_full = p_increasing(n, s, tie_term, factor);
        let (s_recent, tie_recent) = statistic(&values[n - r..]);
        let p_recent = p_increasing(r, s_recent, tie_recent, 1.0);
        Evidence {
            n,
            batches: 0,
            leak_alpha: cfg.leak_p,
            p_full,
            p_recent,
            s_recent,
            rate,
            growth,
            full_rate,
            full_growth,
            floor_rise: floor_rise(values),
            noise: residual_scale(values, times, full_rate, &mut scratch.floats),
            linear: line_beats_step(values, times, full_rate),
            new_high: true,
        }
    }

    /// Each leak condition and whether it holds, in the order of the module documentation of
    /// [`super`] (useful to explain why a growing site is not called a leak).
    pub fn leak_conditions(&self, cfg: &TrendConfig) -> [(&'static str, bool); 10] {
        [
            ("enough windows", self.n >= cfg.min_leak_windows()),
            ("whole-window trend", self.p_full <= self.leak_alpha),
            ("recent trend", self.p_recent <= cfg.suspect_p),
            (
                "rate and growth",
                self.rate >= cfg.min_rate && self.full_growth >= cfg.min_growth_bytes,
            ),
            ("not fading", self.rate >= MIN_RATE_RATIO * self.full_rate),
            (
                "floor rises",
                self.floor_rise > 0.0 && self.floor_rise >= MIN_FLOOR_SHARE * self.full_growth,
            ),
            (
                "above noise",
                self.full_growth >= MIN_SIGNAL_TO_NOISE * self.noise
                    && self.growth >= MIN_RECENT_SIGNAL_TO_NOISE * self.noise,
            ),
            ("steady, not a step", self.linear),
            ("growing", self.full_rate > 0.0),
            ("new high", self.new_high),
        ]
    }

    /// All the conditions of a leak (see the module documentation of [`super`]).
    pub fn is_leak(&self, cfg: &TrendConfig) -> bool {
        self.leak_conditions(cfg).iter().all(|c| c.1)
    }

    /// Growth worth watching: significant at `suspect_p` over the whole window and the recent
    /// one, not fading, a recent rate of at least `min_rate / 4`, and either not a step with a
    /// growth over the recent window of at least `min_growth_bytes / 4`, or the *shape* of a
    /// leak ([`Self::grows_steadily`]; its floor, noise and new-high conditions stand in for
    /// the line-versus-step test, which a site first seen mid-window — a low first sample —
    /// fails). A site still growing steadily is `Suspect` however small its growth, so it
    /// stays in every report.
    pub fn is_suspect(&self, cfg: &TrendConfig) -> bool {
        self.p_full <= cfg.suspect_p
            && self.p_recent <= cfg.suspect_p
            && self.rate > 0.0
            && self.rate >= MIN_RATE_RATIO * self.full_rate
            && self.rate >= cfg.min_rate / SUSPECT_DIVISOR
            && ((self.linear && self.growth >= cfg.min_growth_bytes / SUSPECT_DIVISOR)
                || self.grows_steadily())
    }

    /// The shape conditions of a leak, without its sizes: the floor rises by a quarter of the
    /// growth (6), the growth stands 6 σ above the noise and the recent one 1 σ (7), and the
    /// last samples are a new high (10). Noise, sawtooth buffers, batches and a plateau after
    /// a warm-up do not meet them, a small steady growth does.
    pub fn grows_steadily(&self) -> bool {
        self.floor_rise > 0.0
            && self.floor_rise >= MIN_FLOOR_SHARE * self.full_growth
            && self.full_growth >= MIN_SIGNAL_TO_NOISE * self.noise
            && self.growth >= MIN_RECENT_SIGNAL_TO_NOISE * self.noise
            && self.new_high
    }
}

/// Suffix lengths tried by [`search`]: the whole window and its last 2/3, 1/2 and 1/3 (rounded
/// up), those of at least `min_leak_windows` samples, longest first.
pub fn suffix_lengths(cfg: &TrendConfig, n: usize) -> impl Iterator<Item = usize> {
    let min = cfg.min_leak_windows();
    let mut lengths = [n, (2 * n).div_ceil(3), n.div_ceil(2), n.div_ceil(3)];
    for i in 1..lengths.len() {
        if lengths[i] == lengths[i - 1] {
            lengths[i] = 0;
        }
    }
    lengths.into_iter().filter(move |&m| m >= min && m > 0)
}

/// What [`search`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Search {
    /// Evidence of the first suffix that meets every leak condition.
    pub leak: Option<Evidence>,
    /// Evidence of the first window (suffix, or the whole window) that meets the suspect
    /// conditions.
    pub suspect: Option<Evidence>,
    /// Evidence of the whole window, when it was computed.
    pub whole: Option<Evidence>,
}

/// Looks for a leak in the whole window and in its recent suffixes ([`suffix_lengths`]): a leak
/// that started after a long flat stretch is a clean trend in a suffix while the whole window is
/// a hockey stick that fails the single-regime conditions (floor, line versus step,
/// autocorrelation). `s` and `tie_term` are the whole window's Mann–Kendall state.
///
/// Cost control: a suffix is only examined if it can be a new high and its uncorrected
/// Mann–Kendall p-value is at most `leak_p` (every later correction only raises it); the whole
/// window is examined for `Suspect` if that p-value is at most `suspect_p`.
pub fn search(
    cfg: &TrendConfig,
    values: &[u64],
    times: &[f64],
    s: i64,
    tie_term: i64,
    scratch: &mut Scratch,
) -> Search {
    let p_whole = if s > 0 {
        p_increasing(values.len(), s, tie_term, 1.0)
    } else {
        1.0
    };
    search_with_p(cfg, values, times, s, tie_term, p_whole, scratch)
}

/// [`search`] when the caller already has the whole window's uncorrected p-value `p_whole`.
pub fn search_with_p(
    cfg: &TrendConfig,
    values: &[u64],
    times: &[f64],
    s: i64,
    tie_term: i64,
    p_whole: f64,
    scratch: &mut Scratch,
) -> Search {
    let n = values.len();
    let mut out = Search::default();
    let alpha = cfg.leak_p / suffix_lengths(cfg, n).count().max(1) as f64;
    // A suffix can only be a leak if its last samples are a new high (cheap test first).
    let last3 = if n >= 3 {
        let mut l = [values[n - 3], values[n - 2], values[n - 1]];
        l.sort_unstable();
        l[1]
    } else {
        0
    };
    for m in suffix_lengths(cfg, n) {
        if m < n && values[..n - m].iter().any(|&x| x >= last3) {
            continue;
        }
        let (v, t) = (&values[n - m..], &times[n - m..]);
        let (sm, tm, pm) = if m == n {
            (s, tie_term, p_whole)
        } else {
            let (sm, tm) = statistic(v);
            (
                sm,
                tm,
                if sm > 0 {
                    p_increasing(m, sm, tm, 1.0)
                } else {
                    1.0
                },
            )
        };
        if pm > cfg.leak_p {
            continue;
        }
        let past = (&values[..n - m], &times[..n - m]);
        let mut e = Evidence::compute_with_past(cfg, v, t, sm, tm, past, scratch);
        e.leak_alpha = alpha;
        if m == n {
            out.whole = Some(e);
        }
        if e.is_leak(cfg) {
            out.leak = Some(e);
            return out;
        }
        if out.suspect.is_none() && e.is_suspect(cfg) {
            out.suspect = Some(e);
        }
    }
    if out.whole.is_none()
        && n >= cfg.min_windows
        && p_whole <= cfg.suspect_p
        && may_be_suspect(cfg, values, times, scratch)
    {
        out.whole = Some(Evidence::compute(cfg, values, times, s, tie_term, scratch));
    }
    if out.suspect.is_none() {
        out.suspect = out.whole.filter(|e| e.is_suspect(cfg));
    }
    out
}

/// Cheap necessary conditions of [`Evidence::is_suspect`] on the raw samples (the recent
/// window's trend and rate), so that most noisy sites skip the full evidence.
/// (`Suspect` is therefore decided on samples with temporary batches included.)
fn may_be_suspect(cfg: &TrendConfig, values: &[u64], times: &[f64], scratch: &mut Scratch) -> bool {
    let n = values.len();
    let r = cfg.recent_len(n);
    let (s, tie) = statistic(&values[n - r..]);
    if s <= 0 || p_increasing(r, s, tie, 1.0) > cfg.suspect_p {
        return false;
    }
    recent_rate(cfg, values, times, scratch).0 >= cfg.min_rate / SUSPECT_DIVISOR
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
        Evidence::compute(
            &TrendConfig::default(),
            v,
            t,
            s,
            tie,
            &mut Scratch::default(),
        )
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
