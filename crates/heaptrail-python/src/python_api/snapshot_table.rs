//! `heaptrail._native.TraceTable`: a core [`Snapshot`] seen from Python.
//!
//! To Python it looks like the list of raw trace tuples that stdlib `_tracemalloc._get_traces()`
//! returns — `(domain, size, frames, total_nframe)` with `frames` a tuple of
//! `(filename, lineno)`, most recent first — but the tuples are built only when asked for, and
//! grouping, diffing, filtering and file I/O run in Rust on the interned tables.

use heaptrail_core::diff::compare_to;
use heaptrail_core::filter::{filter_traces, FrameFilter, TraceFilter};
use heaptrail_core::fnmatch::{normalize_filename, Pattern};
use heaptrail_core::group::{statistics, KeyFrame, KeyType};
use heaptrail_core::model::TOTAL_NFRAME_UNKNOWN;
use heaptrail_core::sites::{
    name_sites_from_source, site_statistics, site_statistics_from_totals, SiteRules,
};
use heaptrail_core::{snapshot_file, Snapshot, SnapshotBuilder};
use parking_lot::Mutex;
use pyo3::exceptions::{PyIndexError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PySlice, PyString, PyTuple};
use rustc_hash::FxHashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::python_api::errors::{os_error, SnapshotFileError};
use crate::engine::tracer::OwnWork;

#[pyclass(module = "heaptrail._native", frozen, sequence)]
pub struct TraceTable {
    snapshot: Arc<Snapshot>,
    /// A totals table (`_get_traceback_totals`, for the watcher's `sites()`): `(bytes,
    /// blocks)` live per traceback of `snapshot`, which then holds no traces.
    per_traceback: Option<Arc<Vec<(u64, u64)>>>,
    /// Python objects already built, so equal tracebacks are the *same* tuple (as in stdlib).
    cache: Mutex<PyCache>,
}

#[derive(Default)]
struct PyCache {
    filenames: Vec<Option<Py<PyString>>>,
    tracebacks: Vec<Option<Py<PyTuple>>>,
}

impl TraceTable {
    pub fn new(snapshot: Snapshot) -> Self {
        TraceTable {
            snapshot: Arc::new(snapshot),
            per_traceback: None,
            cache: Mutex::new(PyCache::default()),
        }
    }

    /// A totals table: tracebacks only, with their live `(bytes, blocks)`.
    pub fn with_totals(snapshot: Snapshot, per_traceback: Vec<(u64, u64)>) -> Self {
        TraceTable {
            per_traceback: Some(Arc::new(per_traceback)),
            ..TraceTable::new(snapshot)
        }
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// `(bytes, blocks)` live per traceback: a totals table's own, else summed from the traces.
    pub fn totals(&self) -> Arc<Vec<(u64, u64)>> {
        match &self.per_traceback {
            Some(per_tb) => per_tb.clone(),
            None => Arc::new(self.snapshot.per_traceback()),
        }
    }

    fn filename_obj(&self, py: Python<'_>, cache: &mut PyCache, id: u32) -> Py<PyString> {
        let s = &self.snapshot;
        if cache.filenames.len() < s.filenames.len() {
            cache.filenames.resize_with(s.filenames.len(), || None);
        }
        cache.filenames[id as usize]
            .get_or_insert_with(|| PyString::new(py, &s.filenames[id as usize]).unbind())
            .clone_ref(py)
    }

    fn traceback_obj(&self, py: Python<'_>, cache: &mut PyCache, id: u32) -> PyResult<Py<PyTuple>> {
        let s = &self.snapshot;
        if cache.tracebacks.len() < s.tracebacks.len() {
            cache.tracebacks.resize_with(s.tracebacks.len(), || None);
        }
        if let Some(t) = &cache.tracebacks[id as usize] {
            return Ok(t.clone_ref(py));
        }
        let mut frames = Vec::with_capacity(s.tracebacks[id as usize].frames.len());
        for &f in s.tracebacks[id as usize].frames.iter() {
            let frame = s.frame(f);
            let name = self.filename_obj(py, cache, frame.filename);
            frames.push(PyTuple::new(
                py,
                [
                    name.into_any(),
                    frame.lineno.into_pyobject(py)?.into_any().unbind(),
                ],
            )?);
        }
        let t = PyTuple::new(py, frames)?.unbind();
        cache.tracebacks[id as usize] = Some(t.clone_ref(py));
        Ok(t)
    }

    fn raw_trace<'py>(&self, py: Python<'py>, index: usize) -> PyResult<Bound<'py, PyTuple>> {
        let trace = self.snapshot.traces[index];
        let tb = self.snapshot.traceback(trace.traceback);
        let frames = self.traceback_obj(py, &mut self.cache.lock(), trace.traceback)?;
        let total: Py<PyAny> = if tb.total_nframe == TOTAL_NFRAME_UNKNOWN {
            py.None()
        } else {
            tb.total_nframe.into_pyobject(py)?.into_any().unbind()
        };
        PyTuple::new(
            py,
            [
                trace.domain.into_pyobject(py)?.into_any().unbind(),
                trace.size.into_pyobject(py)?.into_any().unbind(),
                frames.into_any(),
                total,
            ],
        )
    }

    fn normalize_index(&self, index: isize) -> PyResult<usize> {
        let len = self.snapshot.traces.len() as isize;
        let i = if index < 0 { index + len } else { index };
        if i < 0 || i >= len {
            return Err(PyIndexError::new_err("trace index out of range"));
        }
        Ok(i as usize)
    }
}

/// Python tuple `(frames, ...)` for a statistic key: `((filename, lineno), ...)`.
fn key_frames<'py>(
    py: Python<'py>,
    names: &mut FxHashMap<*const u8, Py<PyString>>,
    frames: &[KeyFrame],
) -> PyResult<Bound<'py, PyTuple>> {
    let mut out = Vec::with_capacity(frames.len());
    for (name, lineno) in frames {
        let s = names
            .entry(name.as_ptr())
            .or_insert_with(|| PyString::new(py, name).unbind())
            .clone_ref(py);
        out.push(PyTuple::new(
            py,
            [s.into_any(), lineno.into_pyobject(py)?.into_any().unbind()],
        )?);
    }
    PyTuple::new(py, out)
}

/// The core's key type named by `key_type` (any object, as tracemalloc accepts), with the
/// standard library's message, which shows the argument's `repr()`, when it names none. The
/// rule on `cumulative` is the core's (`group_by`).
fn parse_key_type(key_type: &Bound<'_, PyAny>) -> PyResult<KeyType> {
    key_type
        .extract::<&str>()
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| match key_type.repr() {
            Ok(repr) => PyValueError::new_err(format!("unknown key_type: {repr}")),
            Err(e) => e,
        })
}

/// Builds a snapshot from stdlib-style raw traces.
fn snapshot_from_raw(traces: &Bound<'_, PyAny>, traceback_limit: u32) -> PyResult<Snapshot> {
    let mut b = SnapshotBuilder::new(traceback_limit);
    // stdlib interns traceback tuples: converting each distinct tuple object once makes
    // conversion of a million traces cheap.
    let mut by_object: FxHashMap<(usize, u32), u32> = FxHashMap::default();
    // Holds every distinct frames object seen, so its address cannot be reused mid-loop by a
    // different tuple (the input may be a generator).
    let mut keep_alive = Vec::new();
    let mut ids = Vec::new();
    if let Ok(n) = traces.len() {
        b.reserve_traces(n);
    }
    for (index, item) in traces.try_iter()?.enumerate() {
        let item = item?;
        let bad = || {
            PyTypeError::new_err(format!(
                "trace {index}: expected (domain, size, frames, total_nframe), got {}",
                item.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        };
        let tuple = item.cast::<PyTuple>().map_err(|_| bad())?;
        if tuple.len() != 3 && tuple.len() != 4 {
            return Err(bad());
        }
        let domain: u32 = tuple.get_item(0)?.extract().map_err(|_| bad())?;
        let size: u64 = tuple.get_item(1)?.extract().map_err(|_| bad())?;
        let frames = tuple.get_item(2)?;
        let total = if tuple.len() == 4 {
            let t = tuple.get_item(3)?;
            if t.is_none() {
                TOTAL_NFRAME_UNKNOWN
            } else {
                t.extract::<u32>().map_err(|_| bad())?
            }
        } else {
            TOTAL_NFRAME_UNKNOWN
        };
        let key = (frames.as_ptr() as usize, total);
        let tb = match by_object.get(&key) {
            Some(&tb) => tb,
            None => {
                ids.clear();
                for frame in frames.try_iter().map_err(|_| bad())? {
                    let (name, lineno): (String, u32) = frame?.extract().map_err(|_| bad())?;
                    let fid = b.intern_filename(&name);
                    ids.push(b.intern_frame(fid, lineno));
                }
                let tb = b.intern_traceback(&ids, total);
                by_object.insert(key, tb);
                keep_alive.push(frames);
                tb
            }
        };
        b.push_trace(domain, size, tb);
    }
    drop(keep_alive);
    Ok(b.finish())
}

/// Filter specs from the Python shell: `("frame", inclusive, pattern, lineno, all_frames,
/// domain)` or `("domain", inclusive, domain)`.
fn parse_filters(specs: &Bound<'_, PyAny>) -> PyResult<Vec<TraceFilter>> {
    let mut out = Vec::new();
    for spec in specs.try_iter()? {
        let spec = spec?;
        let kind: String = spec.get_item(0)?.extract()?;
        match kind.as_str() {
            "frame" => {
                let (_, inclusive, pattern, lineno, all_frames, domain): (
                    String,
                    bool,
                    String,
                    Option<i64>,
                    bool,
                    Option<u64>,
                ) = spec.extract()?;
                out.push(TraceFilter::Frame(FrameFilter {
                    inclusive,
                    pattern: Pattern::new(&normalize_filename(&pattern)),
                    lineno,
                    all_frames,
                    domain,
                }));
            }
            "domain" => {
                let (_, inclusive, domain): (String, bool, u64) = spec.extract()?;
                out.push(TraceFilter::Domain { inclusive, domain });
            }
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown filter kind {other:?}"
                )))
            }
        }
    }
    Ok(out)
}

#[pymethods]
impl TraceTable {
    /// Builds a table from raw stdlib traces: an iterable of `(domain, size, frames,
    /// total_nframe)` tuples, `frames` being `((filename, lineno), ...)` most recent first.
    #[staticmethod]
    #[pyo3(signature = (traces, traceback_limit=1, sample_rate=0))]
    fn from_raw(traces: &Bound<'_, PyAny>, traceback_limit: u32, sample_rate: u64) -> PyResult<Self> {
        let mut snapshot = snapshot_from_raw(traces, traceback_limit)?;
        snapshot.sample_rate = sample_rate;
        Ok(Self::new(snapshot))
    }

    /// Reads a heaptrail snapshot file. Returns `(table, metadata_json)`.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<(Self, String)> {
        let (snapshot, metadata) =
            py.detach(|| snapshot_file::read_file(&path))
                .map_err(|e| match e {
                    snapshot_file::FormatError::Io { path, source } => os_error(&source, &path),
                    other => SnapshotFileError::new_err(other.to_string()),
                })?;
        Ok((Self::new(snapshot), metadata))
    }

    /// Writes this table (with `traceback_limit`) and the metadata JSON to `path`.
    fn dump(
        &self,
        py: Python<'_>,
        path: PathBuf,
        traceback_limit: u32,
        metadata: &str,
    ) -> PyResult<()> {
        let mut snapshot = (*self.snapshot).clone();
        snapshot.traceback_limit = traceback_limit;
        py.detach(|| snapshot_file::write_file(&path, &snapshot, metadata))
            .map_err(|e| os_error(&e, &path))
    }

    #[getter]
    fn traceback_limit(&self) -> u32 {
        self.snapshot.traceback_limit
    }

    /// Sampled mode's rate when the snapshot was taken (mean bytes between sample points), 0
    /// for an exact snapshot.
    #[getter]
    fn sample_rate(&self) -> u64 {
        self.snapshot.sample_rate
    }

    /// Sum of the sizes of all traces (estimated bytes in a sampled snapshot).
    #[getter]
    fn total_size(&self) -> u64 {
        self.snapshot.total_size()
    }

    fn __len__(&self) -> usize {
        self.snapshot.traces.len()
    }

    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        index: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let Ok(slice) = index.cast::<PySlice>() {
            let ind = slice.indices(self.snapshot.traces.len() as isize)?;
            let mut items = Vec::with_capacity(ind.slicelength);
            let mut i = ind.start;
            for _ in 0..ind.slicelength {
                items.push(self.raw_trace(py, i as usize)?);
                i += ind.step;
            }
            return Ok(PyList::new(py, items)?.into_any());
        }
        let i = self.normalize_index(index.extract()?)?;
        Ok(self.raw_trace(py, i)?.into_any())
    }

    fn __contains__(&self, py: Python<'_>, item: &Bound<'_, PyAny>) -> PyResult<bool> {
        for i in 0..self.snapshot.traces.len() {
            if self.raw_trace(py, i)?.eq(item)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Equal to another table with the same traces in the same order, or to a list/tuple of
    /// the same raw trace tuples.
    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        if let Ok(other) = other.cast::<TraceTable>() {
            return Ok(same_traces(&self.snapshot, &other.get().snapshot));
        }
        let Ok(len) = other.len() else {
            return Ok(false);
        };
        if !(other.is_instance_of::<PyList>() || other.is_instance_of::<PyTuple>())
            || len != self.snapshot.traces.len()
        {
            return Ok(false);
        }
        for (i, item) in other.try_iter()?.enumerate() {
            if !self.raw_trace(py, i)?.eq(item?)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn __repr__(&self) -> String {
        format!("<heaptrail TraceTable len={}>", self.snapshot.traces.len())
    }

    /// A copy (tables are immutable, so this shares the data).
    fn copy(&self) -> Self {
        TraceTable {
            snapshot: self.snapshot.clone(),
            per_traceback: self.per_traceback.clone(),
            cache: Mutex::new(PyCache::default()),
        }
    }

    /// Grouped statistics, sorted like `tracemalloc.Snapshot.statistics`:
    /// a list of `(frames, size, count)`.
    #[pyo3(signature = (key_type, cumulative=false))]
    fn statistics<'py>(
        &self,
        py: Python<'py>,
        key_type: &Bound<'py, PyAny>,
        cumulative: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let key = parse_key_type(key_type)?;
        let snapshot = self.snapshot.clone();
        let stats = py
            .detach(|| statistics(&snapshot, key, cumulative))
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        // The result objects are heaptrail's own work: not traced (and not slowed by tracing).
        let _own = OwnWork::begin();
        let mut names = FxHashMap::default();
        let mut rows = Vec::with_capacity(stats.len());
        for s in &stats {
            let frames = key_frames(py, &mut names, &s.frames)?;
            rows.push((frames, s.size, s.count).into_pyobject(py)?);
        }
        PyList::new(py, rows)
    }

    /// Differences against an older table, sorted like `tracemalloc.Snapshot.compare_to`:
    /// a list of `(frames, size, size_diff, count, count_diff)`.
    #[pyo3(signature = (old, key_type, cumulative=false))]
    fn compare_to<'py>(
        &self,
        py: Python<'py>,
        old: &Bound<'py, TraceTable>,
        key_type: &Bound<'py, PyAny>,
        cumulative: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let key = parse_key_type(key_type)?;
        let (new_s, old_s) = (self.snapshot.clone(), old.get().snapshot.clone());
        let diffs = py
            .detach(|| compare_to(&new_s, &old_s, key, cumulative))
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let _own = OwnWork::begin();
        let mut names = FxHashMap::default();
        let mut rows = Vec::with_capacity(diffs.len());
        for d in &diffs {
            let frames = key_frames(py, &mut names, &d.frames)?;
            rows.push((frames, d.size, d.size_diff, d.count, d.count_diff).into_pyobject(py)?);
        }
        PyList::new(py, rows)
    }

    /// Live memory per site in the user's code (see `heaptrail_core::sites`), biggest first:
    /// a list of dicts `{key, filename, lineno, size, count, frames, function}`, `frames` being
    /// the biggest traceback at the site, most recent first, and `function` the qualified name
    /// of the code running the site's line in it (as recorded, else from the source; None when
    /// unknown). Patterns use fnmatch syntax.
    #[pyo3(signature = (library=vec![], include=vec![], exclude=vec![], limit=None))]
    fn sites<'py>(
        &self,
        py: Python<'py>,
        library: Vec<String>,
        include: Vec<String>,
        exclude: Vec<String>,
        limit: Option<usize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let rules = SiteRules::from_patterns(&library, &include, &exclude);
        let snapshot = self.snapshot.clone();
        let totals = self.per_traceback.clone();
        let sites = py.detach(|| {
            let mut sites = match totals {
                Some(per_tb) => site_statistics_from_totals(&snapshot, &per_tb, &rules),
                None => site_statistics(&snapshot, &rules),
            };
            sites.truncate(limit.unwrap_or(usize::MAX));
            name_sites_from_source(&mut sites);
            sites
        });
        let _own = OwnWork::begin();
        let mut cache = self.cache.lock();
        let mut rows = Vec::with_capacity(sites.len());
        for s in &sites {
            let frames = self.traceback_obj(py, &mut cache, s.traceback)?;
            let row = PyDict::new(py);
            row.set_item(pyo3::intern!(py, "key"), s.key)?;
            row.set_item(pyo3::intern!(py, "filename"), &*s.filename)?;
            row.set_item(pyo3::intern!(py, "lineno"), s.lineno)?;
            row.set_item(pyo3::intern!(py, "size"), s.size)?;
            row.set_item(pyo3::intern!(py, "count"), s.count)?;
            row.set_item(pyo3::intern!(py, "frames"), frames)?;
            row.set_item(pyo3::intern!(py, "function"), s.function.as_deref())?;
            rows.push(row);
        }
        PyList::new(py, rows)
    }

    /// A new table with only the traces that pass `filters` (see `parse_filters`).
    fn filter(&self, py: Python<'_>, filters: &Bound<'_, PyAny>) -> PyResult<Self> {
        let filters = parse_filters(filters)?;
        let snapshot = self.snapshot.clone();
        Ok(Self::new(py.detach(|| filter_traces(&snapshot, &filters))))
    }
}

fn same_traces(a: &Snapshot, b: &Snapshot) -> bool {
    if a.traces.len() != b.traces.len() {
        return false;
    }
    // Tables are interned independently: compare through the text of each traceback.
    let tb_eq = |ta: u32, tb: u32| {
        let (x, y) = (a.traceback(ta), b.traceback(tb));
        x.total_nframe == y.total_nframe
            && x.frames.len() == y.frames.len()
            && x.frames.iter().zip(y.frames.iter()).all(|(&fa, &fb)| {
                a.frame(fa).lineno == b.frame(fb).lineno && a.filename(fa) == b.filename(fb)
            })
    };
    let mut memo: FxHashMap<(u32, u32), bool> = FxHashMap::default();
    a.traces.iter().zip(b.traces.iter()).all(|(x, y)| {
        x.domain == y.domain
            && x.size == y.size
            && *memo
                .entry((x.traceback, y.traceback))
                .or_insert_with(|| tb_eq(x.traceback, y.traceback))
    })
}
