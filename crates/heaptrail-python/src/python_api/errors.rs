//! Exceptions heaptrail raises besides the built-in ones.

use pyo3::create_exception;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::PyErr;
use std::io;
use std::path::Path;

create_exception!(
    _native,
    SnapshotFileError,
    PyValueError,
    "A snapshot file is not a valid heaptrail snapshot (wrong type, truncated, corrupt or hostile)."
);

/// `OSError(errno, strerror, filename)` for an I/O error on `path`, so that Python raises
/// `FileNotFoundError`, `PermissionError`, ... as `open()` would (the one conversion heaptrail
/// uses for files it reads and writes).
pub fn os_error(e: &io::Error, path: &Path) -> PyErr {
    let text = e.to_string();
    // io::Error's text ends in " (os error N)"; the errno is passed on separately.
    let strerror = match text.find(" (os error ") {
        Some(pos) => text[..pos].to_owned(),
        None => text,
    };
    PyOSError::new_err((
        e.raw_os_error().unwrap_or(0),
        strerror,
        path.display().to_string(),
    ))
}
