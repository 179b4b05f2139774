//! [`TrendDetector`]: per-site time series, fed one window at a time, judged every window.
//!
//! Storage: every tracked site gets one sample per window (0 when absent), so all sites share
//! one time axis and one ring position per window: sizes live in a single slab of
//! `history` slots per site, times in one ring. The whole-window Mann–Kendall statistic of each
//! site is kept incrementally ([`MkAccumulator`], `O(history)` per window); the costlier evidence
//! (Sen slopes, Hamed–Rao, shape) is only computed for sites that pass the cheap pre-test or
//! need it for the `Fixed` rules, so a window costs `O(sites · history)` plus a sort.

use super::config::TrendConfig;
use super::evidence::Scratch;
use super::mann_kendall::{statistic, tie_weight, MkAccumulator};
use super::process_verdict::{ProcessHistory, ProcessSample, ProcessVerdict};
use super::site_verdict::{assess, SiteMemory};
use super::verdict::Verdict;
use rustc_hash::FxHashMap;

/// Live memory of one site in one window (the caller's per-site totals).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SiteSample {
    /// Opaque, stable identity of the site (e.g. [`crate::sites::site_key`]).
    pub key: u64,
    pub size: u64,
    pub count: u64,
}

/// The verdict on one site in one window. Serialized with these field names for the watcher
/// (they are the report's `sites[]` field names).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct SiteReport {
    pub key: u64,
    pub verdict: Verdict,
    /// 0..1, see [`super::site_verdict`].
    pub confidence: f64,
    pub size: u64,
    /// Versus the previous window (a site first seen now: its whole size).
    pub size_diff: i64,
    pub count: u64,
    pub count_diff: i64,
    /// Sen slope over the recent window, bytes per second.
    pub bytes_per_second: f64,
    /// Windows since the site first appeared (this one included).
    pub windows: usize,
    /// `bytes_per_second ×` the recent window's duration, rounded.
    pub growth_bytes: i64,
}

/// Everything the detector says about one window.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct WindowReport {
    /// 1 for the first window observed.
    pub window: u64,
    pub process_verdict: ProcessVerdict,
    pub process_confidence: f64,
    /// Every tracked site, most severe verdict first, then by decreasing confidence, then by
    /// decreasing growth rate, then by key.
    pub sites: Vec<SiteReport>,
}

impl WindowReport {
    pub fn site(&self, key: u64) -> Option<&SiteReport> {
        self.sites.iter().find(|s| s.key == key)
    }
}

#[derive(Clone, Debug, Default)]
struct SiteState {
    key: u64,
    alive: bool,
    /// Window in which the site first appeared.
    first_window: u64,
    /// Samples kept (≤ history), the last `len` windows.
    len: usize,
    /// Samples in the tested window (a suffix of the kept ones).
    tested: usize,
    mk: MkAccumulator,
    memory: SiteMemory,
    /// Totals given for this window so far (the input may repeat a key).
    pending_size: u64,
    pending_count: u64,
    present_in: u64,
    count: u64,
    /// Consecutive windows with size 0.
    zero_run: usize,
    /// Trailing samples equal to the last one.
    run: usize,
}

/// Turns per-site totals, one window at a time, into leak verdicts. See [`super`] for the rules.
pub struct TrendDetector {
    config: TrendConfig,
    window: u64,
    /// Ring of window times: window `w` at `w % history`.
    times: Vec<f64>,
    index: FxHashMap<u64, u32>,
    sites: Vec<SiteState>,
    /// `history` sizes per site slot, window `w` at `slot * history + w % history`.
    sizes: Vec<u64>,
    free: Vec<u32>,
    process: ProcessHistory,
    /// Threads judging sites: 0 = automatic (see [`TrendDetector::set_threads`]).
    threads: usize,
    /// One per thread judging sites; buffers reused between windows.
    workers: Vec<Worker>,
    chrono_times: Vec<f64>,
}

/// Buffers of one thread judging sites.
#[derive(Default)]
struct Worker {
    scratch: Scratch,
    values: Vec<u64>,
    reports: Vec<SiteReport>,
    /// `reports` in report order: (sort key, index into `reports`).
    order: Vec<(SortKey, u32)>,
}

/// One thread's share of a window: site slots, their rings, and the thread's buffers.
type Share<'a> = ((&'a mut [SiteState], &'a mut [u64]), &'a mut Worker);

/// Sites per thread below which judging them is not split over threads.
pub const SITES_PER_THREAD: usize = 4096;

impl TrendDetector {
    pub fn new(config: TrendConfig) -> Self {
        let config = config.sanitized();
        let h = config.history;
        TrendDetector {
            window: 0,
            times: vec![0.0; h],
            index: FxHashMap::default(),
            sites: Vec::new(),
            sizes: Vec::new(),
            free: Vec::new(),
            process: ProcessHistory::default(),
            threads: 0,
            workers: vec![Worker::default()],
            chrono_times: Vec::with_capacity(h),
            config,
        }
    }

    /// The settings in use (after [`TrendConfig::sanitized`]).
    pub fn config(&self) -> &TrendConfig {
        &self.config
    }

    /// Sampled mode's rate in force for the windows fed from now on, in bytes (0: exact
    /// figures): [`TrendConfig::sample_step_bytes`]. The tracer's mode can change under a
    /// long-lived detector (an `attach` that replaces a sampled watcher, say).
    pub fn set_sample_step(&mut self, bytes: f64) {
        self.config.sample_step_bytes = if bytes.is_finite() {
            bytes.max(0.0)
        } else {
            0.0
        };
    }

    /// Threads that judge sites in one window: 1 = the calling thread only; 0 (the default) =
    /// one per [`SITES_PER_THREAD`] tracked sites, up to the available parallelism (at most 8).
    /// Verdicts and reports do not depend on it.
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.min(64);
    }

    /// The thread setting (see [`Self::set_threads`]).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Windows observed so far.
    pub fn windows(&self) -> u64 {
        self.window
    }

    /// Sites currently tracked.
    pub fn tracked_sites(&self) -> usize {
        self.index.len()
    }

    /// Feeds one window. `time` in seconds (monotonic); sites absent from `sites` had size 0 in
    /// this window. A key given twice has its sizes and counts added.
    pub fn observe(
        &mut self,
        time: f64,
        process: ProcessSample,
        sites: &[SiteSample],
    ) -> WindowReport {
        let h = self.config.history;
        self.window += 1;
        let w = self.window;
        let pos = (w % h as u64) as usize;
        self.times[pos] = time;
        self.chrono_times.clear();
        let kept = (w as usize).min(h);
        for k in 0..kept {
            let wk = w - (kept - 1 - k) as u64;
            self.chrono_times.push(self.times[(wk % h as u64) as usize]);
        }

        for s in sites {
            let slot = match self.index.get(&s.key) {
                Some(&slot) => slot as usize,
                None => self.new_site(s.key, w),
            };
            let st = &mut self.sites[slot];
            st.pending_size = st.pending_size.saturating_add(s.size);
            st.pending_count = st.pending_count.saturating_add(s.count);
            st.present_in = w;
        }

        self.process.push(&self.config, time, process);

        // Judge every site, split over threads when there are many (sites are independent).
        let threads = self.threads_for(self.sites.len());
        if self.workers.len() < threads {
            self.workers.resize_with(threads, Worker::default);
        }
        for worker in &mut self.workers {
            worker.reports.clear();
            worker.order.clear();
        }
        let chunk = self.sites.len().div_ceil(threads).max(1);
        let (cfg, chrono) = (&self.config, &self.chrono_times[..]);
        let jobs = self
            .sites
            .chunks_mut(chunk)
            .zip(self.sizes.chunks_mut(chunk * h))
            .zip(self.workers.iter_mut());
        if threads <= 1 {
            for ((sites, sizes), worker) in jobs {
                judge_sites(cfg, chrono, w, pos, sites, sizes, worker);
            }
        } else {
            // Each share sits in a slot taken by whoever runs it: its thread, or the calling
            // thread if the thread cannot be started. The calling thread takes the first share.
            let slots: Vec<std::sync::Mutex<Option<_>>> =
                jobs.map(|job| std::sync::Mutex::new(Some(job))).collect();
            let run = |slot: &std::sync::Mutex<Option<Share>>| {
                let job = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(((sites, sizes), worker)) = job {
                    judge_sites(cfg, chrono, w, pos, sites, sizes, worker);
                }
            };
            std::thread::scope(|scope| {
                for slot in slots.iter().skip(1) {
                    if std::thread::Builder::new()
                        .spawn_scoped(scope, move || run(slot))
                        .is_err()
                    {
                        run(slot);
                    }
                }
                if let Some(first) = slots.first() {
                    run(first);
                }
            });
        }

        // Forget sites whose whole history is zeros (after reporting them once more).
        for slot in 0..self.sites.len() {
            let st = &mut self.sites[slot];
            if st.alive && st.zero_run >= h {
                st.alive = false;
                self.index.remove(&st.key);
                self.free.push(slot as u32);
            }
        }
        let sorted = merge_sorted(&self.workers[..threads]);
        // Sorted by severity, then confidence: the first site is the most confident leak, if any.
        let site_leak = sorted
            .first()
            .filter(|s| s.verdict == Verdict::Leak)
            .map(|s| s.confidence);
        let (process_verdict, process_confidence) =
            self.process
                .assess(&self.config, site_leak, &mut self.workers[0].scratch);
        WindowReport {
            window: w,
            process_verdict,
            process_confidence,
            sites: sorted,
        }
    }

    /// Threads to judge `n` site slots with (see [`Self::set_threads`]).
    fn threads_for(&self, n: usize) -> usize {
        let wanted = match self.threads {
            0 => {
                let cpus = std::thread::available_parallelism()
                    .map_or(1, |c| c.get())
                    .min(8);
                (n / SITES_PER_THREAD).clamp(1, cpus)
            }
            t => t,
        };
        wanted.min(n.max(1))
    }

    /// `(time, size)` of the samples kept for a site, oldest first.
    pub fn site_history(&self, key: u64) -> Option<Vec<(f64, u64)>> {
        let &slot = self.index.get(&key)?;
        let st = &self.sites[slot as usize];
        let h = self.config.history as u64;
        let base = slot as usize * self.config.history;
        Some(
            (0..st.len as u64)
                .map(|k| {
                    let wk = self.window - (st.len as u64 - 1 - k);
                    let i = (wk % h) as usize;
                    (self.times[i], self.sizes[base + i])
                })
                .collect(),
        )
    }

    fn new_site(&mut self, key: u64, w: u64) -> usize {
        let h = self.config.history;
        let slot = match self.free.pop() {
            Some(slot) => slot as usize,
            None => {
                self.sites.push(SiteState::default());
                self.sizes.resize(self.sizes.len() + h, 0);
                self.sites.len() - 1
            }
        };
        self.sites[slot] = SiteState {
            key,
            alive: true,
            first_window: w,
            ..SiteState::default()
        };
        self.index.insert(key, slot as u32);
        slot
    }
}

/// Appends this window's sample to each alive site of a chunk, judges it, and reports it into
/// `worker.reports`. `sizes` holds the chunk's rings (`history` per slot).
fn judge_sites(
    cfg: &TrendConfig,
    chrono: &[f64],
    w: u64,
    pos: usize,
    sites: &mut [SiteState],
    sizes: &mut [u64],
    worker: &mut Worker,
) {
    let h = cfg.history;
    for (st, ring) in sites.iter_mut().zip(sizes.chunks_mut(h)) {
        if st.alive {
            let report = judge_site(cfg, chrono, w, pos, st, ring, worker);
            worker.reports.push(report);
        }
    }
    // Each thread sorts its own share; the shares are merged afterwards.
    worker.order.extend(
        worker
            .reports
            .iter()
            .enumerate()
            .map(|(i, r)| (sort_key(r), i as u32)),
    );
    worker.order.sort_unstable();
}

/// Appends this window's sample to one site (ring `ring`), judges it, and reports it.
fn judge_site(
    cfg: &TrendConfig,
    chrono: &[f64],
    w: u64,
    pos: usize,
    st: &mut SiteState,
    ring: &mut [u64],
    worker: &mut Worker,
) -> SiteReport {
    let h = cfg.history;
    let (size, count) = if st.present_in == w {
        (st.pending_size, st.pending_count)
    } else {
        (0, 0)
    };
    st.pending_size = 0;
    st.pending_count = 0;

    // The tested window before this sample, oldest first.
    let values = &mut worker.values;
    values.clear();
    let m = st.tested;
    let start = ((w - m as u64) % h as u64) as usize; // window w - m
    let first = (h - start).min(m);
    values.extend_from_slice(&ring[start..start + first]);
    values.extend_from_slice(&ring[..m - first]);
    let prev_size = if st.len > 0 {
        *values.last().unwrap_or(&0)
    } else {
        0
    };
    let prev_count = st.count;
    let constant = m > 0 && st.run >= m && size == prev_size;
    if m == h {
        if !constant {
            st.mk.pop_front(values);
        }
        values.remove(0);
    }
    if constant {
        // A constant window stays constant: S = 0, one group of ties (no O(n) update).
        st.mk = MkAccumulator {
            s: 0,
            tie_term: tie_weight(values.len() as u64 + 1),
        };
    } else {
        st.mk.push(values, size);
    }
    values.push(size);
    debug_assert_eq!((st.mk.s, st.mk.tie_term), statistic(values));
    ring[pos] = size;
    st.run = if m > 0 && size == prev_size {
        st.run + 1
    } else {
        1
    };
    st.len = (st.len + 1).min(h);
    st.tested = values.len();
    st.count = count;
    st.zero_run = if size == 0 { st.zero_run + 1 } else { 0 };

    let n = st.tested;
    let times = &chrono[chrono.len() - n..];
    let seen = w - st.first_window + 1;
    let a = assess(
        cfg,
        values,
        times,
        st.mk,
        seen,
        &mut st.memory,
        &mut worker.scratch,
    );
    if let Some(k) = a.restart {
        let (s, tie) = statistic(&values[n - k..]);
        st.mk = MkAccumulator { s, tie_term: tie };
        st.tested = k;
    }
    SiteReport {
        key: st.key,
        verdict: a.verdict,
        confidence: a.confidence.clamp(0.0, 1.0),
        size,
        size_diff: signed_diff(size, prev_size),
        count,
        count_diff: signed_diff(count, prev_count),
        bytes_per_second: a.rate,
        windows: seen as usize,
        growth_bytes: a.growth.round() as i64,
    }
}

fn signed_diff(new: u64, old: u64) -> i64 {
    (new as i128 - old as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// Orders reports: most severe first, then decreasing confidence, then decreasing growth rate,
/// then increasing key.
type SortKey = (u64, u64, u64);

fn sort_key(r: &SiteReport) -> SortKey {
    // Integer keys that order like the floats (IEEE total order), inverted for "decreasing".
    fn descending(x: f64) -> u64 {
        let bits = x.to_bits();
        let ordered = if bits >> 63 == 1 {
            !bits
        } else {
            bits | (1 << 63)
        };
        !ordered
    }
    // Confidence is in [0, 1], so its bits fit in 62; the lowest one is dropped to make room
    // for the severity (adjacent doubles then tie and are ordered by rate).
    let conf = (1u64 << 62) - 1 - r.confidence.clamp(0.0, 1.0).to_bits();
    let first = (u64::from(4 - r.verdict.severity()) << 61) | (conf >> 1);
    (first, descending(r.bytes_per_second), r.key)
}

/// Merges the workers' sorted reports into one sorted list.
fn merge_sorted(workers: &[Worker]) -> Vec<SiteReport> {
    let total = workers.iter().map(|w| w.reports.len()).sum();
    let mut out = Vec::with_capacity(total);
    let mut heads = vec![0usize; workers.len()];
    for _ in 0..total {
        let mut best: Option<(usize, &(SortKey, u32))> = None;
        for (i, w) in workers.iter().enumerate() {
            if let Some(entry) = w.order.get(heads[i]) {
                if best.as_ref().map(|(_, b)| entry.0 < b.0).unwrap_or(true) {
                    best = Some((i, entry));
                }
            }
        }
        let (i, entry) = best.expect("counted");
        out.push(workers[i].reports[entry.1 as usize]);
        heads[i] += 1;
    }
    out
}

impl std::fmt::Debug for TrendDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrendDetector")
            .field("config", &self.config)
            .field("window", &self.window)
            .field("tracked_sites", &self.index.len())
            .finish()
    }
}
