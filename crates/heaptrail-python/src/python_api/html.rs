//! `heaptrail html`: the pages are rendered by `heaptrail_core::html` with the GIL released, so
//! the command's progress display keeps running and other threads are not held up.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use heaptrail_core::html::{read_report, report_page, snapshot_page, PageOptions, ReportError};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::python_api::snapshot_table::TraceTable;

/// The HTML page of a snapshot: totals, flame graph, the `limit` largest lines.
#[pyfunction]
#[pyo3(signature = (table, title, subtitle, limit))]
fn _render_snapshot_html(
    py: Python<'_>,
    table: &TraceTable,
    title: &str,
    subtitle: &str,
    limit: usize,
) -> String {
    let snapshot = table.snapshot();
    py.detach(|| {
        snapshot_page(
            snapshot,
            &PageOptions {
                title,
                subtitle,
                limit,
            },
        )
    })
}

/// The HTML page of the watcher report at `path` (JSON Lines, `heaptrail.watch/2` or `/1`), and the
/// warnings about lines skipped. `pid` keeps one process. ValueError when the file is not a
/// report (or has no window of `pid`); OSError when it cannot be read.
#[pyfunction]
#[pyo3(signature = (path, title, subtitle, limit, pid=None))]
fn _render_report_html(
    py: Python<'_>,
    path: PathBuf,
    title: &str,
    subtitle: &str,
    limit: usize,
    pid: Option<u32>,
) -> PyResult<(String, Vec<String>)> {
    py.detach(|| {
        let file = File::open(&path)?;
        let report =
            read_report(BufReader::with_capacity(1 << 20, file), pid).map_err(|e| match e {
                ReportError::Io(e) => PyErr::from(e),
                e => PyValueError::new_err(e.to_string()),
            })?;
        if let (Some(pid), true) = (pid, report.runs.is_empty()) {
            let pids: Vec<String> = report.pids.iter().map(u32::to_string).collect();
            return Err(PyValueError::new_err(format!(
                "no window of process {pid} in the report (its processes: {})",
                pids.join(", ")
            )));
        }
        let html = report_page(
            &report,
            &PageOptions {
                title,
                subtitle,
                limit,
            },
        );
        Ok((html, report.warnings))
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_render_snapshot_html, m)?)?;
    m.add_function(wrap_pyfunction!(_render_report_html, m)?)?;
    Ok(())
}
