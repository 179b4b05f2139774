//! Settings of the [`TrendDetector`](super::TrendDetector).

/// How much evidence the detector wants before it names a leak.
#[derive(Clone, Debug, PartialEq)]
pub struct TrendConfig {
    /// Windows kept per site (and for the process series). Default 30.
    pub history: usize,
    /// Windows a site must be seen before it can be anything but `WarmingUp`/`Plateau`; also the
    /// shortest "recent" window and the windows the process needs before any verdict. Default 6.
    pub min_windows: usize,
    /// One-sided Mann–Kendall p-value for "leak". Default 0.01.
    pub leak_p: f64,
    /// p-value for "suspect". Default 0.10.
    pub suspect_p: f64,
    /// Minimum growth, in bytes, over the window that shows the leak (its Sen slope × its
    /// duration) to call a leak; a quarter of it for "suspect" (or a rising floor). Default
    /// 32 KiB.
    ///
    /// It is measured over the whole evidence window, not over the recent window: the recent
    /// window spans 5–9 intervals, so a byte threshold on it was a rate threshold that scaled
    /// with `1/interval` (64 KiB on it needed ≥ 3.6–6.5 KiB/s at 2 s windows but 110–220 B/s at
    /// 60 s windows). How fast a site must grow to matter is `min_rate`'s job; this one only
    /// asks the evidence to be about more than a few objects. 32 KiB lets a 2 KiB/s leak be
    /// named at a 2 s interval as soon as the statistics allow (window 10–11), and is still
    /// above what a bounded small structure (a registry, a small cache) adds while it fills.
    pub min_growth_bytes: f64,
    /// Minimum Sen slope over the recent window, bytes per second, to call a leak; a quarter of
    /// it for "suspect". Default 64.
    pub min_rate: f64,
    /// K: a leak whose last K windows do not grow becomes "fixed". Default 5.
    pub fixed_after: usize,
    /// Samples at the start of a tested window the recent window never includes (see
    /// [`Self::warm_skip`]). Default `None`: `⌈min_windows/2⌉`.
    pub warm_skip: Option<usize>,
    /// Sampled mode's rate R in bytes (0: exact figures, the default). A sampled site's size
    /// moves in steps of about R (a sample point in a block much smaller than R stands for R
    /// bytes), so a site still growing at r bytes/s can show no change for a while: about R/r
    /// seconds on average. The rules that read "no change" as "no growth" wait that out
    /// ([`super::site_verdict`]'s `Fixed`; [`super::process_verdict`]'s retention).
    pub sample_step_bytes: f64,
}

impl Default for TrendConfig {
    fn default() -> Self {
        TrendConfig {
            history: 30,
            min_windows: 6,
            leak_p: 0.01,
            suspect_p: 0.10,
            min_growth_bytes: 32.0 * 1024.0,
            min_rate: 64.0,
            fixed_after: 5,
            warm_skip: None,
            sample_step_bytes: 0.0,
        }
    }
}

impl TrendConfig {
    /// The same settings forced into a usable range: `3 ≤ history ≤ 1024`,
    /// `2 ≤ min_windows ≤ history`, `2 ≤ fixed_after < history`, `0 < leak_p ≤ suspect_p ≤ 0.5`,
    /// non-negative thresholds (NaN: the default p-value, 0 for thresholds).
    pub fn sanitized(&self) -> TrendConfig {
        let history = self.history.clamp(3, 1024);
        let clamp_p = |p: f64, default: f64| {
            if p.is_nan() {
                default
            } else {
                p.clamp(1e-12, 0.5)
            }
        };
        let leak_p = clamp_p(self.leak_p, 0.01);
        let non_negative = |x: f64| if x.is_nan() { 0.0 } else { x.max(0.0) };
        TrendConfig {
            history,
            min_windows: self.min_windows.clamp(2, history),
            leak_p,
            suspect_p: clamp_p(self.suspect_p, 0.10).max(leak_p),
            min_growth_bytes: non_negative(self.min_growth_bytes),
            min_rate: non_negative(self.min_rate),
            fixed_after: self.fixed_after.clamp(2, history - 1),
            warm_skip: self
                .warm_skip
                .map(|k| k.clamp(1, self.min_windows.clamp(2, history))),
            sample_step_bytes: non_negative(self.sample_step_bytes),
        }
    }

    /// Length of the "recent" window for a tested window of `n` samples:
    /// `max(min_windows, n/3)`, but never reaching back into the first [`Self::warm_skip`]
    /// samples (at least 2 when `n ≥ 2`).
    pub fn recent_len(&self, n: usize) -> usize {
        self.min_windows
            .max(n / 3)
            .min(n.saturating_sub(self.warm_skip()))
            .max(n.min(2))
    }

    /// Samples at the start of a tested window the recent window never includes:
    /// `⌈min_windows/2⌉` unless set. A leak needs `min_windows` recent samples beyond them.
    pub fn warm_skip(&self) -> usize {
        self.warm_skip.unwrap_or(self.min_windows.div_ceil(2))
    }

    /// The settings used, one window before a leak can first be called, to look for the
    /// evidence that confirms it one window later: one warm-up sample fewer skipped. It only
    /// ever counts as the first of the two confirming windows, never as a leak on its own, so
    /// a leak present from the start is named at window `min_leak_windows` instead of one
    /// later, without calling leaks on fewer samples.
    pub fn early(&self) -> TrendConfig {
        TrendConfig {
            warm_skip: Some(self.warm_skip().saturating_sub(1).max(1)),
            ..self.clone()
        }
    }

    /// The shortest tested window that can be a leak: `min_windows + warm_skip`.
    pub fn min_leak_windows(&self) -> usize {
        self.min_windows + self.warm_skip()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_sanitizing() {
        let c = TrendConfig::default();
        assert_eq!((c.history, c.min_windows, c.fixed_after), (30, 6, 5));
        assert_eq!(c.sanitized(), c);
        let bad = TrendConfig {
            history: 1,
            min_windows: 99,
            leak_p: 0.5,
            suspect_p: 0.1,
            min_rate: f64::NAN,
            ..c
        };
        let s = bad.sanitized();
        assert_eq!((s.history, s.min_windows), (3, 3));
        assert!(s.suspect_p >= s.leak_p);
        assert_eq!(s.min_rate, 0.0);
        assert_eq!(c.recent_len(30), 10);
        assert_eq!(c.recent_len(12), 6);
        assert_eq!(c.recent_len(8), 5);
        assert_eq!(c.recent_len(4), 2);
        assert_eq!(c.recent_len(1), 1);
        assert_eq!(c.min_leak_windows(), 9);
    }
}
