//! The Python-facing layer: `#[pyfunction]`s and `#[pyclass]`es over the engine and over
//! heaptrail-core.

pub mod errors;
pub mod export;
pub mod fleet;
pub mod holders;
pub mod html;
pub mod leak_entries;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod remote_call;
pub mod retainers;
pub mod snapshot_table;
pub mod testing_hooks;
pub mod trend_detector;
pub mod watch_report;
