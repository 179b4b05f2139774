//! `heaptrail._native.testing`: hooks that only tests and benchmarks call, to look inside the
//! engine (kept apart so that the production module's surface is only what heaptrail uses).

use pyo3::prelude::*;

use crate::engine::gil::MainGil;
use crate::engine::{block_headers, frames, tracer};
use crate::python_api::holders;

pub fn register(parent: &Bound<'_, PyModule>) -> PyResult<()> {
    let m = PyModule::new(parent.py(), "testing")?;
    m.add_function(wrap_pyfunction!(_stack_depths, &m)?)?;
    m.add_function(wrap_pyfunction!(_block_headers, &m)?)?;
    m.add_function(wrap_pyfunction!(_last_analysis_stats, &m)?)?;
    parent.add_submodule(&m)
}

/// `(walked, reported)` depth of the calling thread's stack (tests of the depth shortcut).
#[pyfunction]
fn _stack_depths(py: Python<'_>) -> (i32, i32) {
    frames::stack_depths(MainGil::from_py(py))
}

/// `(in use, blocks carrying one, blocks counted as carrying one)`: whether new MEM/OBJ
/// blocks get a trace header, how many allocated blocks have one (from the bitmap), and the
/// count sampled mode's fast path relies on (must be equal).
#[pyfunction]
fn _block_headers(_py: Python<'_>) -> (bool, usize, usize) {
    (
        tracer::header_mode(),
        block_headers::marked_count(),
        block_headers::counted_marks(),
    )
}

/// Figures of the last `_analyse_holders` (JSON text: pause, walk and child times, the
/// child's memory), or None. For the benchmark.
#[pyfunction]
fn _last_analysis_stats() -> Option<String> {
    holders::last_stats()
}
