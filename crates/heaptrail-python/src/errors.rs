//! Exceptions heaptrail raises besides the built-in ones.

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;

create_exception!(
    _native,
    SnapshotFileError,
    PyValueError,
    "A snapshot file is not a valid heaptrail snapshot (wrong type, truncated, corrupt or hostile)."
);
