//! `heaptrail._native.TrendDetector`: the core's leak verdicts, fed by the Python watcher.

use heaptrail_core::trend::{ProcessSample, SiteSample, TrendConfig, TrendDetector as Core};
use parking_lot::Mutex;
use pyo3::prelude::*;

#[pyclass(module = "heaptrail._native", frozen)]
pub struct TrendDetector {
    inner: Mutex<Core>,
}

#[pymethods]
impl TrendDetector {
    #[new]
    #[pyo3(signature = (history=None, min_windows=None, leak_p=None, suspect_p=None,
                        min_growth_bytes=None, min_rate=None, fixed_after=None, warm_skip=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        history: Option<usize>,
        min_windows: Option<usize>,
        leak_p: Option<f64>,
        suspect_p: Option<f64>,
        min_growth_bytes: Option<f64>,
        min_rate: Option<f64>,
        fixed_after: Option<usize>,
        warm_skip: Option<usize>,
    ) -> Self {
        let d = TrendConfig::default();
        let config = TrendConfig {
            history: history.unwrap_or(d.history),
            min_windows: min_windows.unwrap_or(d.min_windows),
            leak_p: leak_p.unwrap_or(d.leak_p),
            suspect_p: suspect_p.unwrap_or(d.suspect_p),
            min_growth_bytes: min_growth_bytes.unwrap_or(d.min_growth_bytes),
            min_rate: min_rate.unwrap_or(d.min_rate),
            fixed_after: fixed_after.unwrap_or(d.fixed_after),
            warm_skip: warm_skip.or(d.warm_skip),
            sample_step_bytes: d.sample_step_bytes, // per window: `observe(sample_rate=...)`
        };
        TrendDetector {
            inner: Mutex::new(Core::new(config.sanitized())),
        }
    }

    /// Feeds one window. `time` is monotonic seconds; `sites` a list of `(key, size, count)`;
    /// `sample_rate` sampled mode's rate in bytes the figures were estimated at (0: exact),
    /// which the fixed and retention rules allow for (their sizes move in steps of it).
    /// Returns a dict `{window, process_verdict, process_confidence, sites}` whose `sites` are
    /// dicts `{key, verdict, confidence, size, size_diff, count, count_diff,
    /// bytes_per_second, windows, growth_bytes}` (the report's field names), most severe
    /// first.
    #[pyo3(signature = (time, rss_bytes, traced_bytes, traced_peak_bytes, sites, sample_rate=0))]
    #[allow(clippy::too_many_arguments)] // the Python signature, one argument per figure
    fn observe<'py>(
        &self,
        py: Python<'py>,
        time: f64,
        rss_bytes: u64,
        traced_bytes: u64,
        traced_peak_bytes: u64,
        sites: Vec<(u64, u64, u64)>,
        sample_rate: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let samples: Vec<SiteSample> = sites
            .into_iter()
            .map(|(key, size, count)| SiteSample { key, size, count })
            .collect();
        let process = ProcessSample {
            rss_bytes,
            traced_bytes,
            traced_peak_bytes,
        };
        let report = py.detach(|| {
            let mut detector = self.inner.lock();
            detector.set_sample_step(sample_rate as f64);
            detector.observe(time, process, &samples)
        });
        pythonize::pythonize(py, &report).map_err(PyErr::from)
    }

    /// `[(time, size), ...]` kept for a site, or None.
    fn site_history(&self, key: u64) -> Option<Vec<(f64, u64)>> {
        self.inner.lock().site_history(key)
    }
}
