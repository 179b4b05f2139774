//! Leak verdicts from per-site time series: which allocation sites really grow (not warm-up,
//! not noise, not churn), and what kind of growth the whole process shows.
//!
//! The watcher feeds one *window* at a time (a snapshot reduced to per-site totals) into a
//! [`TrendDetector`]; each window returns a [`WindowReport`] with a [`Verdict`] per site and a
//! [`ProcessVerdict`] for the process.
//!
//! # Statistics
//! * [`mann_kendall`]: the Mann–Kendall trend test (tie-corrected; exact for `n ≤ 10` without
//!   ties, normal approximation with continuity correction otherwise), one-sided for increase.
//! * [`sen_slope`]: Sen's slope, the median of pairwise slopes — the growth rate reported.
//! * [`autocorrelation`]: the Hamed–Rao variance correction for serially correlated series
//!   (conservative: it can only weaken a trend).
//! * [`shape`]: floor rise (leaked memory never comes back) and a robust noise scale.
//!
//! # Site verdicts
//! Every tracked site has one sample per window (0 when it is absent); the last `history`
//! samples are kept. A site's *tested window* is all of them, except after it became `Fixed`:
//! then it restarts at the `fixed_after` flat samples, so renewed growth is judged on post-fix
//! data. Its *recent window* is the last `max(min_windows, n/3)` samples of the tested one.
//! With the defaults (history 30, min_windows 6) that is 6–10 samples.
//!
//! A site is a **leak** when all of these hold ([`evidence::Evidence::is_leak`]):
//! 1. it has been seen for at least `min_windows` windows;
//! 2. Mann–Kendall over the tested window, Hamed–Rao corrected, gives `p ≤ leak_p`;
//! 3. Mann–Kendall over the recent window gives `p ≤ suspect_p` — the growth continues now
//!    (a warm-up that flattened fails here);
//! 4. the recent Sen slope is at least `min_rate` bytes/s and the growth it implies over the
//!    recent window is at least `min_growth_bytes`;
//! 5. the recent Sen slope is at least half the tested window's: growth that is fading fast (a
//!    saturating warm-up) is not a leak yet;
//! 6. the floor rises: the minimum of the recent half of the tested window exceeds the minimum of
//!    its older half — sawtooth buffers and temporary batches, even with rising peaks, keep
//!    returning to their base;
//! 7. the growth over the tested window (its Sen slope × duration) exceeds 2 noise standard
//!    deviations (robust scale from window-to-window differences): large noise around a level
//!    does not make a leak however the ranks fall.
//!
//! Once a leak, a site stays a leak while 2 holds, the floor still rises and the recent window
//! still grows (`S > 0`, rate ≥ `min_rate/4`): hysteresis against flicker.
//!
//! **Suspect**: 2 and 3 at `suspect_p`, 5, and a quarter of the thresholds of 4 — or any leak
//! that fails the floor or noise conditions. **Fixed**, **WarmingUp**, **Plateau**: see
//! [`site_verdict`], which also lists the order the rules are applied in and the confidences.
//!
//! A site whose last `history` samples are all 0 is forgotten after being reported.
//!
//! Known limits (no trend test can do better with the same data): growth that lasts at least
//! `min_windows` windows at a steady rate and then stops is called a leak, then `Fixed`; a site
//! that grows with load (a daily cycle seen through a 30-window history) looks like a leak
//! until the load falls; a leak that grows in rare large steps with long flat stretches between
//! them may alternate between `Leak` and `Fixed`.
//!
//! # Process verdict
//! See [`process_verdict`].

pub mod autocorrelation;
pub mod config;
pub mod detector;
pub mod evidence;
pub mod mann_kendall;
pub mod process_verdict;
pub mod sen_slope;
pub mod shape;
pub mod site_verdict;
pub mod verdict;

#[cfg(test)]
mod scenarios;

pub use config::TrendConfig;
pub use detector::{SiteReport, SiteSample, TrendDetector, WindowReport};
pub use process_verdict::{ProcessSample, ProcessVerdict};
pub use verdict::Verdict;
