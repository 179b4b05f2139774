//! `heaptrail._native`: the CPython extension. This file holds the one `#[pymodule]` export
//! list (and the tracemalloc-API functions it exports directly).
//!
//! `engine/`: what runs inside the allocator hooks and keeps the live traces.
//! * `engine::allocator_hooks`: PyMem hooks on the RAW, MEM and OBJ domains (and 3.13's
//!   reference tracer callbacks).
//! * `engine::frames`: the Rust side of the C shim (`csrc/`, the only version-specific code):
//!   frame capture, code object fields, free lists.
//! * `engine::gil`: `MainGil`, the proof that the main interpreter's GIL is held, and
//!   `GilCell`, state reached only with it.
//! * `engine::block_headers`: traces of MEM/OBJ blocks in a header in front of the block,
//!   and the radix bitmap of blocks that have one.
//! * `engine::live_blocks`: the live address -> (size, traceback) table and its counters.
//! * `engine::traceback_interner`: captured tracebacks interned to small ids.
//! * `engine::code_registry`: the code objects tracebacks name, held, classified, resolved
//!   to lines.
//! * `engine::sampler`: sampled mode's per-thread byte counter and free filter.
//! * `engine::tracer`: the global tracing state: the `Tracer` tables, what the hooks call,
//!   the tracemalloc API's operations, snapshots, fork safety.
//!
//! `python_api/`: the `#[pyfunction]`/`#[pyclass]` modules.
//! * `python_api::snapshot_table`: `TraceTable`, a core snapshot seen from Python.
//! * `python_api::trend_detector`: the `TrendDetector` binding.
//! * `python_api::watch_report`: the watcher's window written as its JSON line, through the
//!   core's schema.
//! * `python_api::holders`: who holds a site's memory, in a forked child.
//! * `python_api::leak_entries`: leak grouping by holder, and the report's verdict and
//!   pattern names.
//! * `python_api::export`: pprof, collapsed stacks, JSON.
//! * `python_api::html`: the HTML report.
//! * `python_api::fleet`: many processes' watch reports summed up (`heaptrail report DIR`).
//! * `python_api::errors`: exceptions heaptrail raises besides the built-in ones.
//! * `python_api::remote_call`: `heaptrail attach`'s pending call queued into another process
//!   (ptrace).
//! * `python_api::retainers`: the old in-process holder walk (`_find_holders`).
//! * `python_api::testing_hooks`: `heaptrail._native.testing`, what only tests and
//!   benchmarks call.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![deny(clippy::missing_safety_doc)]

mod engine;
mod python_api;

use engine::{frames, sampler, tracer};
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
use python_api::remote_call;
use python_api::{
    errors, export, fleet, holders, html, leak_entries, retainers, testing_hooks,
    trend_detector, watch_report,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use python_api::snapshot_table::TraceTable;

/// Starts tracing Python memory allocations, keeping up to `nframe` frames per traceback;
/// `sample` > 0: sampled mode, a sample point every `sample` bytes on average.
#[pyfunction]
#[pyo3(signature = (nframe=1, sample=0))]
fn start(py: Python<'_>, nframe: i64, sample: u64) -> PyResult<()> {
    if !(1..=tracer::MAX_NFRAME as i64).contains(&nframe) {
        return Err(PyValueError::new_err(format!(
            "the number of frames must be in range [1; {}]",
            tracer::MAX_NFRAME
        )));
    }
    tracer::start(py, nframe as usize, sample).map_err(pyo3::exceptions::PyRuntimeError::new_err)
}

/// The sample rate in force (mean bytes between sample points), 0 in exact mode.
#[pyfunction]
fn get_sample_rate() -> u64 {
    sampler::rate().map_or(0, |r| r.bytes())
}

/// Stops tracing and clears all traces.
#[pyfunction]
fn stop(py: Python<'_>) {
    tracer::stop(py)
}

#[pyfunction]
fn is_tracing() -> bool {
    tracer::is_tracing()
}

#[pyfunction]
fn clear_traces(py: Python<'_>) {
    tracer::clear(py)
}

#[pyfunction]
fn get_traceback_limit() -> usize {
    tracer::traceback_limit()
}

#[pyfunction]
fn get_traced_memory(py: Python<'_>) -> (u64, u64) {
    tracer::traced_memory(py)
}

#[pyfunction]
fn reset_peak(py: Python<'_>) {
    tracer::reset_peak(py)
}

#[pyfunction]
fn get_tracemalloc_memory(py: Python<'_>) -> usize {
    tracer::own_memory(py)
}

/// Number of live traced blocks.
#[pyfunction]
fn get_trace_count(py: Python<'_>) -> usize {
    tracer::trace_count(py)
}

/// Frames `((filename, lineno), ...)`, most recent first, where `obj` was allocated, or None.
#[pyfunction]
fn _get_object_traceback<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyTuple>>> {
    // SAFETY: we hold the GIL and a reference to `obj`.
    let addr = unsafe { frames::object_block_address(obj.as_ptr()) };
    let Some(frames) = tracer::block_traceback(py, addr) else {
        return Ok(None);
    };
    let items = frames
        .iter()
        .map(|(name, lineno)| (name.as_ref(), *lineno).into_pyobject(py))
        .collect::<PyResult<Vec<_>>>()?;
    Ok(Some(PyTuple::new(py, items)?))
}

/// The live traces as a `TraceTable` (behaves like stdlib's list of raw trace tuples).
#[pyfunction]
fn _get_traces(py: Python<'_>) -> TraceTable {
    TraceTable::new(tracer::take_snapshot(py).unwrap_or_default())
}

/// The live bytes and blocks per traceback, as a `TraceTable` whose only use is `sites()`:
/// the watcher's window, at a pause that does not grow with the number of live blocks.
#[pyfunction]
fn _get_traceback_totals(py: Python<'_>) -> TraceTable {
    let (snapshot, per_tb) = tracer::take_totals(py).unwrap_or_default();
    TraceTable::with_totals(snapshot, per_tb)
}

/// Lets go now of the tracebacks no live block uses and of the code objects only they named,
/// or only heaptrail references (see `tracer::release_unused`; the pytest plugin calls it
/// before each window).
#[pyfunction]
fn _release_unused_tracebacks(py: Python<'_>) {
    tracer::release_unused(py)
}

/// Lets go of the code objects only heaptrail references, and of what they own (see
/// `tracer::release_orphans`; the watcher calls it before each window: cheap, one reference
/// count read per held code object).
#[pyfunction]
fn _release_orphaned_code(py: Python<'_>) {
    tracer::release_orphans(py)
}

/// Seconds the last snapshot held the GIL (the pause it imposed on the application).
#[pyfunction]
fn _last_snapshot_pause() -> f64 {
    tracer::last_snapshot_pause()
}

/// What a file is, from its first bytes: "heaptrail" (a snapshot file), "pickle" (a stdlib
/// tracemalloc dump) or "unknown"; the same test the snapshot loader applies.
#[pyfunction]
fn _sniff_file(prefix: &[u8]) -> &'static str {
    use heaptrail_core::snapshot_file::{sniff, FileKind};
    match sniff(prefix) {
        FileKind::Heaptrail => "heaptrail",
        FileKind::Pickle => "pickle",
        _ => "unknown",
    }
}

/// The objects holding the most references to live blocks allocated through
/// `filename:lineno`: a list of `(object, references)`, most first.
#[pyfunction]
#[pyo3(signature = (filename, lineno, limit=3))]
fn _find_holders<'py>(
    py: Python<'py>,
    filename: &str,
    lineno: u32,
    limit: usize,
) -> PyResult<Vec<(Bound<'py, PyAny>, usize)>> {
    retainers::find_holders(py, filename, lineno, limit)
}

/// Who holds each candidate site's memory, found in a forked copy-on-write child (see
/// `holders.rs`): one result dict per `(filename, lineno)`, in order. Never raises for runtime
/// failures (fork, timeout): they are in each result's `error`.
#[pyfunction]
#[pyo3(signature = (candidates, library, include, exclude, timeout=30.0))]
fn _analyse_holders<'py>(
    py: Python<'py>,
    candidates: Vec<(String, u32)>,
    library: Vec<String>,
    include: Vec<String>,
    exclude: Vec<String>,
    timeout: f64,
) -> PyResult<Bound<'py, pyo3::types::PyList>> {
    holders::analyse_holders(py, candidates, library, include, exclude, timeout)
}

/// Excludes the calling thread's allocations from tracing (for heaptrail's own threads and
/// the result objects its analysis builds). Returns the previous setting.
#[pyfunction]
#[pyo3(signature = (ignored=true))]
fn _ignore_current_thread(ignored: bool) -> bool {
    tracer::set_thread_ignored(ignored)
}

/// Which files are library code, for tracebacks whose captured frames are all library code
/// while the stack goes deeper than the frame limit: their last frame is replaced by the
/// innermost user frame further down. fnmatch patterns as the watcher computes them (see
/// `TraceTable.sites`); all empty: no rules (tracebacks exactly as tracemalloc's). In force
/// until `stop()`.
#[pyfunction]
#[pyo3(signature = (library, include=Vec::new(), exclude=Vec::new()))]
fn _set_user_code_rules(
    py: Python<'_>,
    library: Vec<String>,
    include: Vec<String>,
    exclude: Vec<String>,
) {
    tracer::set_user_code_rules(py, &library, &include, &exclude)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(start, m)?)?;
    m.add_function(wrap_pyfunction!(stop, m)?)?;
    m.add_function(wrap_pyfunction!(is_tracing, m)?)?;
    m.add_function(wrap_pyfunction!(get_sample_rate, m)?)?;
    m.add("DEFAULT_SAMPLE_RATE", heaptrail_core::sampling::DEFAULT_RATE)?;
    m.add_function(wrap_pyfunction!(clear_traces, m)?)?;
    m.add_function(wrap_pyfunction!(get_traceback_limit, m)?)?;
    m.add_function(wrap_pyfunction!(get_traced_memory, m)?)?;
    m.add_function(wrap_pyfunction!(reset_peak, m)?)?;
    m.add_function(wrap_pyfunction!(get_tracemalloc_memory, m)?)?;
    m.add_function(wrap_pyfunction!(get_trace_count, m)?)?;
    m.add_function(wrap_pyfunction!(_get_object_traceback, m)?)?;
    m.add_function(wrap_pyfunction!(_get_traces, m)?)?;
    m.add_function(wrap_pyfunction!(_get_traceback_totals, m)?)?;
    m.add_function(wrap_pyfunction!(_ignore_current_thread, m)?)?;
    m.add_function(wrap_pyfunction!(_find_holders, m)?)?;
        {
        m.add_function(wrap_pyfunction!(_analyse_holders, m)?)?;
        }
    m.add_function(wrap_pyfunction!(_last_snapshot_pause, m)?)?;
    m.add_function(wrap_pyfunction!(_release_unused_tracebacks, m)?)?;
    m.add_function(wrap_pyfunction!(_release_orphaned_code, m)?)?;
    m.add_function(wrap_pyfunction!(_sniff_file, m)?)?;
    m.add_function(wrap_pyfunction!(_set_user_code_rules, m)?)?;
    export::register(m)?;
    fleet::register(m)?;
    html::register(m)?;
    leak_entries::register(m)?;
    watch_report::register(m)?;
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    remote_call::register(m)?;
    m.add_class::<TraceTable>()?;
    m.add_class::<trend_detector::TrendDetector>()?;
    m.add(
        "SnapshotFileError",
        m.py().get_type::<errors::SnapshotFileError>(),
    )?;
    m.add("MAX_NFRAME", tracer::MAX_NFRAME)?;
    // The one version number: the workspace's Cargo.toml (maturin gives it to the wheel too).
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    testing_hooks::register(m)?;
    Ok(())
}
