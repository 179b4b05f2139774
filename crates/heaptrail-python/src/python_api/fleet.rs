//! The fleet summary (`heaptrail report DIR`, `heaptrail html DIR`): the core reads and sums up
//! the watch reports (`heaptrail_core::fleet`) and renders the text, the JSON document and the
//! page; Python finds the files and prints. Reading and rendering run with the GIL released.

use std::path::PathBuf;

use heaptrail_core::fleet::{read_fleet, text, Fleet, SCHEMA};
use heaptrail_core::html::{fleet_page, PageOptions};
use pyo3::prelude::*;

/// Many processes' watch reports, read and summed up.
#[pyclass(module = "heaptrail._native", frozen)]
pub struct FleetSummary {
    fleet: Fleet,
}

#[pymethods]
impl FleetSummary {
    /// Windows read, over all files (0: nothing usable was read).
    #[getter]
    fn windows(&self) -> u64 {
        self.fleet.windows
    }

    /// Processes seen.
    #[getter]
    fn processes(&self) -> usize {
        self.fleet.processes.len()
    }

    /// `[(path, reason)]` of the files that gave nothing.
    #[getter]
    fn skipped_files(&self) -> Vec<(String, String)> {
        self.fleet
            .skipped_files
            .iter()
            .map(|s| (s.path.clone(), s.reason.clone()))
            .collect()
    }

    /// What was skipped inside the files read, `path: line N: ...`.
    #[getter]
    fn warnings(&self) -> Vec<String> {
        self.fleet.warnings.clone()
    }

    /// The summary for a terminal, the first `limit` leaks (0: all).
    fn text(&self, py: Python<'_>, limit: usize) -> String {
        py.detach(|| text::render(&self.fleet, limit))
    }

    /// The `heaptrail.fleet/1` document, the first `limit` leaks (0: all).
    fn json(&self, py: Python<'_>, limit: usize) -> String {
        py.detach(|| self.fleet.to_json(limit))
    }

    /// The self-contained HTML page, `limit` rows of leaks.
    fn html(&self, py: Python<'_>, title: &str, subtitle: &str, limit: usize) -> String {
        py.detach(|| {
            fleet_page(
                &self.fleet,
                &PageOptions {
                    title,
                    subtitle,
                    limit,
                },
            )
        })
    }
}

/// Reads the watch report files at `paths` (rotated copies `FILE.N` join their `FILE`). Never
/// raises for a bad file: it is in `skipped_files`, with the reason.
#[pyfunction]
fn _read_fleet(py: Python<'_>, paths: Vec<PathBuf>) -> FleetSummary {
    FleetSummary {
        fleet: py.detach(|| read_fleet(&paths)),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_read_fleet, m)?)?;
    m.add_class::<FleetSummary>()?;
    m.add("FLEET_SCHEMA", SCHEMA)?;
    Ok(())
}
