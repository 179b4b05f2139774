//! What kind of growth the whole process shows, from RSS, traced memory and the traced peak.
//!
//! Each window the detector keeps `(time, rss, traced, traced_peak)` for the last `history`
//! windows and, once it has `min_windows` of them, judges the three series with the same
//! tests as sites. A series **grows** when [`search`] finds a leak in it (same conditions and
//! thresholds as a site leak, without the two-window confirmation). "Rate" below is the Sen
//! slope over the recent window; the *rise* of a series is its Sen slope × the duration of the
//! window in which it grows (the suffix [`search`] found).
//!
//! **RSS climbs** when it grows *and* rises by at least [`RSS_MIN_RISE_BYTES`] (8 MiB) and
//! [`RSS_MIN_RISE_SHARE`] (5%) of its lowest value in that window. A trend test alone is not
//! enough: RSS moves in allocator units — pymalloc arenas of 1 MiB (CPython ≥ 3.10), glibc heap
//! growth and trimming, a dynamic mmap threshold (up to 32 MiB) that keeps freed mid-size
//! blocks resident — and heaptrail's own bookkeeping, which it does not trace, grows for its
//! first windows (trace tables, report history: +1.5 MiB in the first 30 s of a 17 MiB
//! service). One or two arenas taken by a warm-up or a burst of temporaries make a perfectly
//! monotone RSS series (16 → 17 MiB) that is no leak. 8 MiB is several arenas; the 5% share
//! keeps fragmentation noise of large heaps (tens of MiB over half an hour for a GiB-sized
//! process) from counting.
//!
//! Rules, first match wins:
//! 1. RSS climbs and traced memory does not explain it: traced memory does not grow, or grows
//!    at less than 25% of RSS's rate, and RSS's rise minus traced memory's rise over the same
//!    samples is itself at least the RSS threshold:
//!    * `TransientPeaks` if the traced *peak* rises (uncorrected whole-window Mann–Kendall
//!      p ≤ `suspect_p`, positive rate, traced rate below 25% of the peak's): big temporary
//!      batches push the allocator's high-water mark, nothing is kept by Python;
//!    * else `NativeGrowth`: memory taken outside Python's allocators (C extensions, `malloc`).
//! 2. `PythonGrowth`: traced memory grows, or a site is `Leak` this window (a leak small next
//!    to the noise of the process total — temporaries in flight at each snapshot — is still
//!    Python memory growing). With RSS flat, growing traced memory is always this verdict.
//! 3. `AllocatorRetention`: traced memory fell by more than 30% from its maximum over the window
//!    (by at least `min_growth_bytes`, judged on the largest of the last 3 samples so a single
//!    dip does not count) while RSS stayed within 10% of its maximum: freed memory kept by
//!    the allocator (fragmentation, free lists, arenas). The fall must also be more than that
//!    10% of RSS (a smaller one would leave RSS within 10% whether or not it was given back:
//!    1.8 MiB of batch freed in a 25 MiB process is no evidence of retention) and, in sampled
//!    mode, more than [`RETENTION_SAMPLED_SIGMAS`] standard errors of the traced estimate
//!    (√(traced·R)): on a small heap one sampled block freed is a fall of R.
//! 4. `Ok`.
//!
//! Rules 1 and 3 read RSS. Where it could not be read (no `/proc`: the caller passes 0), they
//! cannot be applied, and a verdict that is not `PythonGrowth` is `Unknown`, confidence 0:
//! neither `Ok` (native growth cannot be ruled out) nor `AllocatorRetention` (which a series of
//! zeros would otherwise "show" at full confidence).
//!
//! Confidence: `1 − p` of the deciding trend (`TransientPeaks`: the weaker of RSS and peak;
//! `PythonGrowth` from a site: that site's confidence); `Ok`: 0 before `min_windows` windows,
//! then the smaller uncorrected p-value of RSS and traced growth (how compatible they are with
//! no growth); `AllocatorRetention`: the share of the released traced bytes that RSS did not
//! give back.

use super::config::TrendConfig;
use super::evidence::{recent_rate, search, Evidence, Scratch};
use super::mann_kendall::{p_increasing, statistic};
use super::sen_slope::sen_slope;
use std::collections::VecDeque;

/// Whole-process memory figures at the end of one window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessSample {
    /// Resident set size.
    pub rss_bytes: u64,
    /// Memory currently traced (allocated through Python's allocators).
    pub traced_bytes: u64,
    /// Peak of traced memory (since start, or since the previous window if the caller resets it).
    pub traced_peak_bytes: u64,
}

/// The kind of growth the process shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessVerdict {
    Ok,
    PythonGrowth,
    NativeGrowth,
    TransientPeaks,
    AllocatorRetention,
    /// RSS could not be read, and traced memory does not grow.
    Unknown,
}

impl ProcessVerdict {
    /// Every process verdict, `ok` first, then the kinds of growth, `unknown` last.
    pub const ALL: [ProcessVerdict; 6] = [
        ProcessVerdict::Ok,
        ProcessVerdict::PythonGrowth,
        ProcessVerdict::NativeGrowth,
        ProcessVerdict::TransientPeaks,
        ProcessVerdict::AllocatorRetention,
        ProcessVerdict::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProcessVerdict::Ok => "ok",
            ProcessVerdict::PythonGrowth => "python-growth",
            ProcessVerdict::NativeGrowth => "native-growth",
            ProcessVerdict::TransientPeaks => "transient-peaks",
            ProcessVerdict::AllocatorRetention => "allocator-retention",
            ProcessVerdict::Unknown => "unknown",
        }
    }
}

/// Written by its name: the report's `process_verdict` field.
impl serde::Serialize for ProcessVerdict {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for ProcessVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Traced memory counts as flat next to a series growing `r` bytes/s if its rate is below this
/// fraction of `r`.
pub const FLAT_RATIO: f64 = 0.25;
/// Retention: traced memory must have fallen below this fraction of its maximum...
pub const RETENTION_TRACED_FRACTION: f64 = 0.7;
/// ...while RSS stayed above this fraction of its maximum.
pub const RETENTION_RSS_FRACTION: f64 = 0.9;
/// Sampled mode: the fall must exceed this many standard errors of the traced estimate.
pub const RETENTION_SAMPLED_SIGMAS: f64 = 4.0;

/// RSS must rise by at least this many bytes over the window where it grows to be called a
/// climb (see the module documentation)...
pub const RSS_MIN_RISE_BYTES: f64 = 8.0 * 1024.0 * 1024.0;
/// ...and by at least this share of its lowest value in that window.
pub const RSS_MIN_RISE_SHARE: f64 = 0.05;

/// The last `history` process samples.
#[derive(Clone, Debug, Default)]
pub struct ProcessHistory {
    samples: VecDeque<(f64, ProcessSample)>,
}

impl ProcessHistory {
    pub fn push(&mut self, cfg: &TrendConfig, time: f64, sample: ProcessSample) {
        if self.samples.len() == cfg.history {
            self.samples.pop_front();
        }
        self.samples.push_back((time, sample));
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The verdict and its confidence for the samples kept. `site_leak`: the confidence of the
    /// most confident site called `Leak` this window, if any.
    pub fn assess(
        &self,
        cfg: &TrendConfig,
        site_leak: Option<f64>,
        scratch: &mut Scratch,
    ) -> (ProcessVerdict, f64) {
        let n = self.samples.len();
        if n < cfg.min_windows {
            return (ProcessVerdict::Ok, 0.0);
        }
        let times: Vec<f64> = self.samples.iter().map(|s| s.0).collect();
        let series = |f: fn(&ProcessSample) -> u64| -> Vec<u64> {
            self.samples.iter().map(|s| f(&s.1)).collect()
        };
        let (rss, traced, peak) = (
            series(|s| s.rss_bytes),
            series(|s| s.traced_bytes),
            series(|s| s.traced_peak_bytes),
        );
        let t = Trend::of(cfg, &traced, &times, scratch);
        if rss.contains(&0) {
            // RSS unknown (0 is never a real process's resident size): only rule 2 applies.
            if let Some(te) = t.leak {
                return (ProcessVerdict::PythonGrowth, 1.0 - te.p_full);
            }
            if let Some(confidence) = site_leak {
                return (ProcessVerdict::PythonGrowth, confidence);
            }
            return (ProcessVerdict::Unknown, 0.0);
        }
        let r = Trend::of(cfg, &rss, &times, scratch);
        let traced_flat_vs_rss = t.leak.is_none() || t.rate < FLAT_RATIO * r.rate;
        let rss_climb = r.leak.filter(|re| {
            // The samples where RSS grows: its rise there, and traced memory's over the same.
            let m = re.n;
            let (rss_m, traced_m, times_m) = (&rss[n - m..], &traced[n - m..], &times[n - m..]);
            let low = *rss_m.iter().min().unwrap_or(&0) as f64;
            let needed = RSS_MIN_RISE_BYTES.max(RSS_MIN_RISE_SHARE * low);
            let span = times_m[m - 1] - times_m[0];
            let traced_rise = (sen_slope(traced_m, times_m, &mut scratch.floats) * span).max(0.0);
            re.full_growth >= needed && re.full_growth - traced_rise >= needed
        });
        if let (Some(re), true) = (rss_climb, traced_flat_vs_rss) {
            let p = Trend::of(cfg, &peak, &times, scratch);
            let peak_rises = p.p <= cfg.suspect_p && p.rate > 0.0 && t.rate < FLAT_RATIO * p.rate;
            if peak_rises {
                return (ProcessVerdict::TransientPeaks, 1.0 - re.p_full.max(p.p));
            }
            return (ProcessVerdict::NativeGrowth, 1.0 - re.p_full);
        }
        if let Some(te) = t.leak {
            return (ProcessVerdict::PythonGrowth, 1.0 - te.p_full);
        }
        if let Some(confidence) = site_leak {
            return (ProcessVerdict::PythonGrowth, confidence);
        }
        let t_max = *traced.iter().max().unwrap_or(&0) as f64;
        let t_now = *traced[n.saturating_sub(3)..].iter().max().unwrap_or(&0) as f64;
        let r_max = *rss.iter().max().unwrap_or(&0) as f64;
        let r_now = *rss.last().unwrap_or(&0) as f64;
        let released = t_max - t_now;
        let sampling_noise = RETENTION_SAMPLED_SIGMAS * (t_max * cfg.sample_step_bytes).sqrt();
        if t_now < RETENTION_TRACED_FRACTION * t_max
            && released >= cfg.min_growth_bytes
            && released > (1.0 - RETENTION_RSS_FRACTION) * r_max
            && released > sampling_noise
            && r_now >= RETENTION_RSS_FRACTION * r_max
        {
            let kept = (1.0 - (r_max - r_now) / released).clamp(0.0, 1.0);
            return (ProcessVerdict::AllocatorRetention, kept);
        }
        (ProcessVerdict::Ok, r.p.min(t.p))
    }
}

/// One process series judged like a site.
struct Trend {
    /// Evidence of a leak-like growth ([`search`] over the window and its suffixes).
    leak: Option<Evidence>,
    /// Uncorrected whole-window Mann–Kendall p-value of "increasing".
    p: f64,
    /// Sen slope over the recent window, bytes per second.
    rate: f64,
}

impl Trend {
    fn of(cfg: &TrendConfig, values: &[u64], times: &[f64], scratch: &mut Scratch) -> Trend {
        let (s, tie) = statistic(values);
        Trend {
            leak: search(cfg, values, times, s, tie, scratch).leak,
            p: p_increasing(values.len(), s, tie, 1.0),
            rate: recent_rate(cfg, values, times, scratch).0,
        }
    }
}
