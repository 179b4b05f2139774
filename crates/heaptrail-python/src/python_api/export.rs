//! `heaptrail._native.export_snapshot` / `export_snapshot_bytes`: a snapshot as a pprof heap
//! profile, folded stacks or JSON (see `heaptrail_core::export`). The work, source files read
//! for function names included, runs with the GIL released.

use std::path::PathBuf;

use heaptrail_core::export::live_profile::{self, SiteLabels};
use heaptrail_core::export::pprof::write_profile;
use heaptrail_core::export::{self, CollapsedValue, ExportOptions, Format};
use heaptrail_core::sites::SiteRules;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::python_api::errors::os_error;
use crate::python_api::snapshot_table::TraceTable;
use crate::engine::tracer::OwnWork;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(export_snapshot, m)?)?;
    m.add_function(wrap_pyfunction!(export_snapshot_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(heap_profile, m)?)?;
    m.add_function(wrap_pyfunction!(write_file_atomically, m)?)?;
    m.add("EXPORT_FORMATS", export::Format::NAMES.to_vec())?;
    Ok(())
}

fn options(value: &str, read_sources: bool, time_nanos: Option<i64>) -> PyResult<ExportOptions> {
    let collapsed_value = match value {
        "bytes" => CollapsedValue::Bytes,
        "blocks" => CollapsedValue::Blocks,
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown value {other:?} for folded stacks (expected bytes or blocks)"
            )))
        }
    };
    Ok(ExportOptions {
        read_sources,
        collapsed_value,
        time_nanos,
        duration_nanos: None,
    })
}

fn parse_format(format: &str) -> PyResult<Format> {
    format.parse().map_err(PyValueError::new_err)
}

/// Writes `table` to `path` in `format` ("pprof", "collapsed" or "json") and returns the
/// number of bytes written. An existing regular file is replaced atomically.
///
/// `value`: "bytes" or "blocks", what folded stacks count. `read_sources`: name functions from
/// the source files (read, never run). `time_nanos`: when the snapshot was taken (pprof).
#[pyfunction]
#[pyo3(signature = (table, format, path, *, value="bytes", read_sources=true, time_nanos=None))]
fn export_snapshot(
    py: Python<'_>,
    table: &TraceTable,
    format: &str,
    path: PathBuf,
    value: &str,
    read_sources: bool,
    time_nanos: Option<i64>,
) -> PyResult<u64> {
    let format = parse_format(format)?;
    let options = options(value, read_sources, time_nanos)?;
    let snapshot = table.snapshot();
    py.detach(|| export::write_file(&path, snapshot, format, &options))
        .map_err(|e| os_error(&e, &path))
}

/// The same export as `bytes` (for writing to a stream such as stdout).
#[pyfunction]
#[pyo3(signature = (table, format, *, value="bytes", read_sources=true, time_nanos=None))]
fn export_snapshot_bytes<'py>(
    py: Python<'py>,
    table: &TraceTable,
    format: &str,
    value: &str,
    read_sources: bool,
    time_nanos: Option<i64>,
) -> PyResult<Bound<'py, PyBytes>> {
    let format = parse_format(format)?;
    let options = options(value, read_sources, time_nanos)?;
    let snapshot = table.snapshot();
    let bytes = py.detach(|| export::export_to_vec(snapshot, format, &options));
    // The result is heaptrail's own work: not traced.
    let _own = OwnWork::begin();
    Ok(PyBytes::new(py, &bytes))
}

/// `(filename, line, [(key, value)])` per site: the labels of the samples whose site it is.
type SiteLabelRows = Vec<(String, u32, Vec<(String, String)>)>;

/// The live heap of `table` as a gzipped pprof heap profile whose samples carry their site's
/// labels (`labels`; a traceback's site is found by the watcher's rules: `library`, `include`,
/// `exclude`). With `base` (an earlier table), the growth from `base` to `table` over
/// `seconds` instead: a delta profile (see `heaptrail_core::export::live_profile`).
#[pyfunction]
#[pyo3(signature = (table, *, base=None, seconds=0.0, labels=Vec::new(), library=Vec::new(),
                    include=Vec::new(), exclude=Vec::new(), read_sources=true, time_nanos=None))]
#[allow(clippy::too_many_arguments)] // keyword-only arguments of one Python call
fn heap_profile<'py>(
    py: Python<'py>,
    table: &TraceTable,
    base: Option<PyRef<'py, TraceTable>>,
    seconds: f64,
    labels: SiteLabelRows,
    library: Vec<String>,
    include: Vec<String>,
    exclude: Vec<String>,
    read_sources: bool,
    time_nanos: Option<i64>,
) -> PyResult<Bound<'py, PyBytes>> {
    let site_labels = SiteLabels {
        rules: SiteRules::from_patterns(&library, &include, &exclude),
        by_site: labels
            .into_iter()
            .map(|(filename, lineno, pairs)| ((filename, lineno), pairs))
            .collect(),
    };
    let options = ExportOptions {
        time_nanos,
        read_sources,
        ..Default::default()
    };
    let after = (table.snapshot(), table.totals());
    let before = base.as_ref().map(|b| (b.snapshot(), b.totals()));
    let bytes = py.detach(|| {
        let profile = match &before {
            Some((snapshot, totals)) => live_profile::delta_profile(
                (snapshot, totals),
                (after.0, &after.1),
                seconds,
                &site_labels,
                &options,
            ),
            None => live_profile::heap_profile(after.0, &after.1, &site_labels, &options),
        };
        let mut out = Vec::new();
        write_profile(&profile, &mut out).expect("writing to a Vec cannot fail");
        out
    });
    let _own = OwnWork::begin();
    Ok(PyBytes::new(py, &bytes))
}

/// Writes `data` to `path`, replacing a regular file whole or not at all (see
/// `heaptrail_core::atomic_file`); returns the number of bytes written. Errors are `OSError`s
/// naming `path`.
#[pyfunction]
fn write_file_atomically(py: Python<'_>, path: PathBuf, data: &[u8]) -> PyResult<u64> {
    py.detach(|| heaptrail_core::atomic_file::write_bytes(&path, data))
        .map_err(|e| os_error(&e, &path))
}
