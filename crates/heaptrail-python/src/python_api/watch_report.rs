//! The watch report's writer side: the watcher's window (a dict) becomes its JSON line through
//! the core's `watch_report::WindowReport`, the type `heaptrail html` reads with, so a field the
//! schema does not have is an error here instead of a silent drift between writer and reader.

use heaptrail_core::watch_report::{encode_window, WindowReport};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// The JSON line (no newline) of a window report dict; ValueError if it does not fit the
/// `heaptrail.watch/2` schema.
#[pyfunction]
fn _encode_window(report: &Bound<'_, PyAny>) -> PyResult<String> {
    let window: WindowReport = pythonize::depythonize(report)
        .map_err(|e| PyValueError::new_err(format!("not a watch report window: {e}")))?;
    encode_window(&window).map_err(PyValueError::new_err)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_encode_window, m)?)?;
    m.add("WATCH_SCHEMA", heaptrail_core::watch_report::SCHEMA)?;
    Ok(())
}
