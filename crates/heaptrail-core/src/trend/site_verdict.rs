//! The rules that turn one site's tested window into a [`Verdict`].
//!
//! Applied in this order (first match wins); `n` is the number of samples in the tested window,
//! `seen` the number of windows since the site first appeared:
//! 1. **Fixed is sticky.** A `Fixed` site stays `Fixed` unless the samples *since the fix* show
//!    a leak (→ `Leak`) or a suspect trend that also lifts the floor (→ `Suspect`).
//! 2. **Becoming fixed.** A site that was ever `Leak` and whose last `fixed_after` samples do not
//!    grow (Mann–Kendall `S ≤ 0`, i.e. flat or falling, or Sen slope below `min_rate`) is `Fixed`;
//!    its tested window restarts at those `fixed_after` samples, so renewed growth is judged on
//!    post-fix data only.
//! 3. **Warm-up.** `seen < min_windows`: `WarmingUp` if the last sample exceeds the first (a site
//!    seen once is warming up if it holds memory), else `Plateau`.
//! 4. **Trend.** With `n ≥ min_windows` and a whole-window Mann–Kendall `S > 0` significant at
//!    `suspect_p` (a cheap pre-test: the Hamed–Rao correction only ever raises p), the
//!    [`Evidence`] is computed and:
//!    * `Leak` if [`Evidence::is_leak`], or if the site was `Leak` in the previous window and
//!      [`Evidence::still_leaking`] (hysteresis);
//!    * `Suspect` if [`Evidence::is_suspect`];
//! 5. otherwise `Plateau`.
//!
//! Confidence: `1 − p_full` for `Leak`/`Suspect`; `seen / min_windows` for `WarmingUp`; the
//! uncorrected whole-window p-value of "increasing" for `Plateau` and `Fixed` (how compatible
//! the data is with no growth: 1 for a constant series).

use super::config::TrendConfig;
use super::evidence::{recent_rate, Evidence, Scratch};
use super::mann_kendall::{p_increasing, statistic, MkAccumulator};
use super::sen_slope::sen_slope;
use super::verdict::Verdict;

/// What the detector remembers about a site between windows.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SiteMemory {
    /// Verdict of the previous window.
    pub last: Option<Verdict>,
    /// The site has been `Leak` at least once.
    pub was_leak: bool,
}

/// The outcome for one site in one window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Assessment {
    pub verdict: Verdict,
    pub confidence: f64,
    /// Sen slope over the recent window, bytes per second.
    pub rate: f64,
    /// `rate ×` the recent window's duration, bytes.
    pub growth: f64,
    /// When set, the tested window must restart at its last `k` samples (the site became Fixed).
    pub restart: Option<usize>,
}

/// Applies the rules to a tested window `values` at `times` (oldest first) whose whole-window
/// Mann–Kendall state is `mk`, for a site first seen `seen` windows ago; updates `memory`.
pub fn assess(
    cfg: &TrendConfig,
    values: &[u64],
    times: &[f64],
    mk: MkAccumulator,
    seen: u64,
    memory: &mut SiteMemory,
    scratch: &mut Scratch,
) -> Assessment {
    let n = values.len();
    let (rate, growth) = recent_rate(cfg, values, times, scratch);
    let p_quick = p_increasing(n, mk.s, mk.tie_term, 1.0);
    let candidate = n >= cfg.min_windows && mk.s > 0 && p_quick <= cfg.suspect_p;
    let mut out = Assessment { verdict: Verdict::Plateau, confidence: p_quick, rate, growth, restart: None };
    let evidence = |scratch: &mut Scratch| Evidence::compute(cfg, values, times, mk.s, mk.tie_term, scratch);

    if memory.last == Some(Verdict::Fixed) {
        out.verdict = Verdict::Fixed;
        if candidate {
            let e = evidence(scratch);
            if e.is_leak(cfg) {
                out.verdict = Verdict::Leak;
            } else if e.is_suspect(cfg) && e.floor_rise > 0.0 {
                out.verdict = Verdict::Suspect;
            }
            if out.verdict != Verdict::Fixed {
                out.confidence = 1.0 - e.p_full;
            }
        }
    } else if memory.was_leak && n >= cfg.fixed_after && stopped(cfg, &values[n - cfg.fixed_after..], &times[n - cfg.fixed_after..], scratch) {
        let k = cfg.fixed_after;
        let (s, tie) = statistic(&values[n - k..]);
        out.verdict = Verdict::Fixed;
        out.confidence = p_increasing(k, s, tie, 1.0);
        out.restart = Some(k);
    } else if seen < cfg.min_windows as u64 {
        let growing = if n >= 2 { values[n - 1] > values[0] } else { values.first().is_some_and(|&v| v > 0) };
        if growing {
            out.verdict = Verdict::WarmingUp;
            out.confidence = seen as f64 / cfg.min_windows as f64;
        }
    } else if candidate {
        let e = evidence(scratch);
        if e.is_leak(cfg) || (memory.last == Some(Verdict::Leak) && e.still_leaking(cfg)) {
            out.verdict = Verdict::Leak;
            out.confidence = 1.0 - e.p_full;
        } else if e.is_suspect(cfg) {
            out.verdict = Verdict::Suspect;
            out.confidence = 1.0 - e.p_full;
        } else {
            out.confidence = e.p_full;
        }
    }
    memory.last = Some(out.verdict);
    memory.was_leak |= out.verdict == Verdict::Leak;
    out
}

/// The last `fixed_after` samples do not grow: flat or falling, or slower than `min_rate`.
fn stopped(cfg: &TrendConfig, values: &[u64], times: &[f64], scratch: &mut Scratch) -> bool {
    let (s, _) = statistic(values);
    s <= 0 || sen_slope(values, times, &mut scratch.floats) < cfg.min_rate
}
