//! The rules that turn one site's tested window into a [`Verdict`].
//!
//! Applied in this order (first match wins); `n` is the number of samples in the tested window,
//! `seen` the number of windows since the site first appeared:
//! 1. **Fixed is sticky.** A site in the `Fixed` regime stays `Fixed` unless [`super::evidence::search`] finds a
//!    leak in the samples *since the fix*: `Suspect` while unconfirmed, `Leak` once confirmed
//!    (see 4), which ends the regime.
//! 2. **Becoming fixed.** A site that was ever `Leak` and whose last `fixed_after` windows did
//!    not grow (Mann–Kendall `S ≤ 0` over those windows' samples and the one before: flat or
//!    falling) is `Fixed`; its tested window restarts at those samples, so renewed growth is
//!    judged on post-fix data only. In sampled mode the flat stretch must also be long enough
//!    that the leak, were it still growing at its rate, would have moved the estimate
//!    ([`sampled_flat_seconds`]).
//! 3. **Warm-up.** `seen < min_windows`: `WarmingUp` if the last sample exceeds the first (a site
//!    seen once is warming up if it holds memory), else `Plateau`. Also `WarmingUp` (instead of
//!    `Plateau` in 6) while the tested window is shorter than `min_leak_windows` and growing.
//! 4. **Leak.**
//!    * *Hysteresis*: a site that was `Leak` in the previous window stays `Leak` while
//!      [`still_leaking`] holds (cheap, weaker conditions, so a noisy leak does not flicker),
//!      or, in sampled mode, while [`sampled_still_rising`] does (its last rise is recent).
//!    * Otherwise [`super::evidence::search`] looks for a window (the tested one or a recent suffix) meeting
//!      every leak condition ([`super::evidence::Evidence::leak_conditions`]). The site is
//!      `Leak` when that happens in at least [`CONFIRM_WINDOWS`] of the last [`CONFIRM_SPAN`]
//!      windows (this one included), `Suspect` the first time. One window before a leak can be
//!      called, the search runs with [`TrendConfig::early`] settings: that evidence can confirm
//!      the next window's, so a leak present from the start is named at window
//!      `min_leak_windows` (9), not 10.
//! 5. **Suspect**: the whole window (or a searched suffix) is suspect
//!    ([`super::evidence::Evidence::is_suspect`]) — which includes every site still growing
//!    steadily at `min_rate/4` or more, whatever its size, so that it stays in the report.
//! 6. otherwise `Plateau`.
//!
//! Confidence: `1 − p` (Mann–Kendall, corrected) of the window that decided, for `Leak` and
//! `Suspect` (uncorrected whole-window p under hysteresis); `seen / min_windows` for
//! `WarmingUp`; the uncorrected whole-window p-value of "increasing" for `Plateau` and `Fixed`
//! (how compatible the data is with no growth: 1 for a constant series).

use super::config::TrendConfig;
use super::evidence::{recent_rate, search_with_p, Scratch, SUSPECT_DIVISOR};
use super::mann_kendall::{p_increasing, statistic, MkAccumulator};
use super::shape::floor_rise;
use super::verdict::Verdict;

/// What the detector remembers about a site between windows.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SiteMemory {
    /// Verdict of the previous window.
    pub last: Option<Verdict>,
    /// The site has been `Leak` at least once.
    pub was_leak: bool,
    /// In the `Fixed` regime (shown as `Fixed`, or `Suspect` while a relapse is unconfirmed).
    pub fixed: bool,
    /// Bit `k` set: every leak condition held `k + 1` windows ago.
    pub leak_bits: u32,
    /// Bytes per second the site grew at, over its tested window, the last time it was `Leak`.
    pub leak_rate: f64,
}

/// Sampled mode: a site growing at r bytes/s gains a sample point about every R/r seconds,
/// at random (Poisson), so it shows no change for `t` seconds with probability e^(−r·t/R).
/// `Fixed` waits until that is below 0.1%: t ≥ ln(1000)·R/r. (1% was too often: a leak
/// watched for an hour has hundreds of gaps between sample points, and each long one would
/// call it fixed.) So confirming a real fix takes longer in sampled mode: ~7 R/r seconds, 90 s
/// for a 40 KB/s leak at the default rate, ~27 minutes for the slowest leak it can see when
/// watched every minute.
pub const SAMPLED_FLAT_MISS_LN: f64 = 6.907_755_278_982_137; // ln(1000)

/// How long a sampled site that leaked at `rate` bytes/s must stay flat before it can be
/// called `Fixed` (0 in exact mode, or when the rate is unknown).
pub fn sampled_flat_seconds(cfg: &TrendConfig, rate: f64) -> f64 {
    if cfg.sample_step_bytes > 0.0 && rate > 0.0 {
        SAMPLED_FLAT_MISS_LN * cfg.sample_step_bytes / rate
    } else {
        0.0
    }
}

/// The windows (at least `fixed_after`) whose flat stretch would make a leak at `rate` fixed:
/// the fewest trailing windows spanning [`sampled_flat_seconds`]; None if the tested window is
/// not that long yet.
fn fixed_span(cfg: &TrendConfig, times: &[f64], rate: f64) -> Option<usize> {
    let n = times.len();
    let needed = sampled_flat_seconds(cfg, rate);
    (cfg.fixed_after..n).find(|&k| times[n - 1] - times[n - 1 - k] >= needed)
}

/// The rate a leaking site grew at over its tested window (its last sample over its first,
/// per second); the recent Sen slope `recent` when that is not positive.
fn leak_rate(values: &[u64], times: &[f64], recent: f64) -> f64 {
    let n = values.len();
    let span = times[n - 1] - times[0];
    let whole = if n >= 2 && span > 0.0 {
        (values[n - 1] as f64 - values[0] as f64) / span
    } else {
        0.0
    };
    if whole > 0.0 {
        whole
    } else {
        recent
    }
}

/// A site is called `Leak` when the leak conditions hold now and in at least
/// `CONFIRM_WINDOWS − 1` of the `CONFIRM_SPAN − 1` previous windows (else it is `Suspect`): one
/// chance alignment of noise is not enough. (Skipping the confirmation when p ≤ `leak_p²` found
/// clean leaks one window earlier but let serially correlated noise through: such series get
/// tiny p-values.)
pub const CONFIRM_WINDOWS: u32 = 2;
pub const CONFIRM_SPAN: u32 = 3;

fn confirmed(memory: &SiteMemory) -> bool {
    let previous = (memory.leak_bits & ((1 << (CONFIRM_SPAN - 1)) - 1)).count_ones();
    previous + 1 >= CONFIRM_WINDOWS
}

/// The verdict for leak evidence found this window: `Leak` once confirmed, `Suspect` before.
fn leak_verdict(memory: &SiteMemory) -> Verdict {
    if confirmed(memory) {
        Verdict::Leak
    } else {
        Verdict::Suspect
    }
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
    let mut out = Assessment {
        verdict: Verdict::Plateau,
        confidence: p_quick,
        rate,
        growth,
        restart: None,
    };
    let mut leak_now = false;
    // Kept a leak between sample points: the rate it leaked at stays the one last measured.
    let mut kept_between_samples = false;
    let span = if memory.was_leak && !memory.fixed {
        fixed_span(cfg, times, memory.leak_rate)
    } else {
        None
    };

    if memory.fixed {
        // Sticky: only a renewed leak, measured since the fix, leaves Fixed.
        out.verdict = Verdict::Fixed;
        let found = search_with_p(cfg, values, times, mk.s, mk.tie_term, p_quick, scratch);
        if let Some(e) = found.leak {
            leak_now = true;
            out.verdict = leak_verdict(memory);
            out.confidence = 1.0 - e.p_full;
            memory.fixed = out.verdict != Verdict::Leak;
        }
    } else if let Some(k) = span.filter(|&k| stopped(&values[n - k - 1..])) {
        let (s, tie) = statistic(&values[n - k - 1..]);
        out.verdict = Verdict::Fixed;
        out.confidence = p_increasing(k + 1, s, tie, 1.0);
        out.restart = Some(k + 1);
        memory.fixed = true;
    } else if seen < cfg.min_windows as u64 {
        let growing = if n >= 2 {
            values[n - 1] > values[0]
        } else {
            values.first().is_some_and(|&v| v > 0)
        };
        if growing {
            out.verdict = Verdict::WarmingUp;
            out.confidence = seen as f64 / cfg.min_windows as f64;
        }
    } else if memory.last == Some(Verdict::Leak)
        && still_leaking(cfg, values, times, p_quick, rate)
    {
        out.verdict = Verdict::Leak;
        out.confidence = 1.0 - p_quick;
        leak_now = true;
    } else if memory.last == Some(Verdict::Leak)
        && sampled_still_rising(cfg, values, times, memory.leak_rate)
    {
        // Re-measured over a tested window ending in this flat stretch, the rate it leaked at
        // would shrink, and the wait it sets would grow with every flat window.
        out.verdict = Verdict::Leak;
        out.confidence = 1.0 - p_quick;
        out.rate = memory.leak_rate;
        leak_now = true;
        kept_between_samples = true;
    } else {
        let mut found = search_with_p(cfg, values, times, mk.s, mk.tie_term, p_quick, scratch);
        if found.leak.is_none() && n + 1 == cfg.min_leak_windows() {
            // One window before a leak can be called: evidence on one warm-up sample fewer
            // can only be the first of the two confirming windows (see TrendConfig::early).
            let early = cfg.early();
            found.leak =
                search_with_p(&early, values, times, mk.s, mk.tie_term, p_quick, scratch).leak;
        }
        if let Some(e) = found.leak {
            leak_now = true;
            out.verdict = leak_verdict(memory);
            out.confidence = 1.0 - e.p_full;
        } else if let Some(e) = found.suspect {
            out.verdict = Verdict::Suspect;
            out.confidence = 1.0 - e.p_full;
        } else if let Some(e) = found.whole {
            out.confidence = e.p_full;
        }
        if out.verdict == Verdict::Plateau
            && n < cfg.min_leak_windows()
            && values[n - 1] > values[0]
        {
            // Too few samples to judge yet, and growing: still warming up, not a plateau.
            out.verdict = Verdict::WarmingUp;
            out.confidence = n as f64 / cfg.min_leak_windows() as f64;
        }
    }
    memory.leak_bits = (memory.leak_bits << 1) | leak_now as u32;
    memory.last = Some(out.verdict);
    if out.verdict == Verdict::Leak {
        memory.was_leak = true;
        if !kept_between_samples {
            memory.leak_rate = leak_rate(values, times, rate);
        }
        if out.rate <= 0.0 {
            // A leak whose recent window did not move (a sampled estimate between sample
            // points, a leak in bursts) is reported at its tested window's rate, never as
            // "growing +0 B/s".
            out.rate = memory.leak_rate;
        }
    }
    out
}

/// Hysteresis: a site that was `Leak` in the previous window stays `Leak` while its tested
/// window still has an (uncorrected) Mann–Kendall p ≤ `leak_p`, its recent window still grows
/// (`S > 0`, Sen slope ≥ `min_rate/4`, and at least [`STILL_LEAKING_FADE`] of the whole
/// window's average rate) and its floor still rises — weaker than the leak conditions, so a
/// noisy leak does not flicker, and cheap, since leaking sites are judged every window.
pub fn still_leaking(
    cfg: &TrendConfig,
    values: &[u64],
    times: &[f64],
    p_quick: f64,
    rate: f64,
) -> bool {
    let n = values.len();
    p_quick <= cfg.leak_p
        && rate >= cfg.min_rate / SUSPECT_DIVISOR
        && rate >= STILL_LEAKING_FADE * leak_rate(values, times, 0.0)
        && floor_rise(values) > 0.0
        && statistic(&values[n - cfg.recent_len(n)..]).0 > 0
}

/// Sampled mode's hysteresis: a sampled estimate rises only at sample points, so a leak's
/// recent window is often flat (its Sen slope 0) while the leak goes on, and the tests of
/// [`still_leaking`] fail at random. A sampled site that was `Leak` stays one while its last
/// rise is more recent than [`sampled_flat_seconds`] for the rate it leaked at (the same wait
/// `Fixed` uses, so the site goes from `Leak` to `Fixed`, not to "no leak" in between) and it
/// has not fallen by more than one step from its highest value.
fn sampled_still_rising(cfg: &TrendConfig, values: &[u64], times: &[f64], rate: f64) -> bool {
    let n = values.len();
    let wait = sampled_flat_seconds(cfg, rate);
    if wait <= 0.0 || n < 2 {
        return false;
    }
    let Some(last_rise) = (1..n).rev().find(|&i| values[i] > values[i - 1]) else {
        return false;
    };
    let high = values.iter().copied().max().unwrap_or(0) as f64;
    times[n - 1] - times[last_rise] < wait && values[n - 1] as f64 >= high - cfg.sample_step_bytes
}

/// A leak stays one only while its recent rate is at least this share of its tested window's
/// average: a warm-up that was taken for a leak while it still grew fast (each window adding
/// two thirds of the one before, say) stops being one as it flattens, instead of staying a
/// leak while its whole window's trend stays significant. (The first call asks for half:
/// condition 5 of the module documentation, "not fading"; this is weaker, so that a noisy leak
/// does not flicker.)
pub const STILL_LEAKING_FADE: f64 = 0.25;

/// The last `fixed_after` windows did not grow: Mann–Kendall `S ≤ 0` (flat or falling) over
/// their samples and the one before them.
fn stopped(values: &[u64]) -> bool {
    statistic(values).0 <= 0
}
