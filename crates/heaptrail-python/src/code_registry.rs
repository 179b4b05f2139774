//! Keeping code objects alive, and turning captured frames into filenames and line numbers.
//!
//! A captured frame names its code object by address. Were the code object freed, the address
//! could be reused by another one and the frame would silently point at the wrong line, so
//! every code object that appears in an interned traceback is held (one reference) until the
//! traces are cleared.

use crate::frames::{frame_lineno, RawFrame};
use heaptrail_core::Filename;
use pyo3::ffi;
use pyo3::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::Arc;

#[derive(Default)]
pub struct CodeRegistry {
    held: FxHashSet<usize>,
}

impl CodeRegistry {
    pub fn is_held(&self, code: *mut ffi::PyCodeObject) -> bool {
        code.is_null() || self.held.contains(&(code as usize))
    }

    /// Takes a reference to `code` unless one is already held.
    ///
    /// # Safety
    /// The calling thread holds the GIL and `code` is alive (it is on the thread's stack).
    pub unsafe fn hold(&mut self, code: *mut ffi::PyCodeObject) {
        if !code.is_null() && self.held.insert(code as usize) {
            ffi::Py_INCREF(code.cast());
        }
    }

    /// Empties the registry, handing back the references to drop with [`release`] once the
    /// trace store's lock is no longer held (dropping a code object frees memory, which
    /// re-enters the allocator hooks).
    pub fn take(&mut self) -> Vec<usize> {
        self.held.drain().collect()
    }

    pub fn heap_bytes(&self) -> usize {
        self.held.capacity() * (std::mem::size_of::<usize>() + 1)
    }
}

/// Drops references taken by [`CodeRegistry::hold`].
pub fn release(_py: Python<'_>, codes: Vec<usize>) {
    for code in codes {
        // SAFETY: we own one reference to each of these objects and hold the GIL.
        unsafe { ffi::Py_DECREF(code as *mut ffi::PyObject) };
    }
}

/// Caches `(code, instruction) -> (filename, line)`. Only used with the GIL held; must be
/// cleared whenever the registry releases its code objects (addresses may then be reused).
#[derive(Default)]
pub struct LineResolver {
    filenames: FxHashMap<usize, Filename>,
    lines: FxHashMap<(usize, i64), u32>,
}

impl LineResolver {
    pub fn clear(&mut self) {
        self.filenames.clear();
        self.lines.clear();
    }

    /// Filename and line of a captured frame.
    ///
    /// # Safety
    /// `frame.code` is null or a code object held by the [`CodeRegistry`].
    pub unsafe fn resolve(&mut self, py: Python<'_>, frame: RawFrame) -> (Filename, u32) {
        if frame.code.is_null() {
            return (unknown_filename(), 0);
        }
        let key = frame.code as usize;
        let filename = self
            .filenames
            .entry(key)
            .or_insert_with(|| code_filename(py, frame.code))
            .clone();
        let lineno = *self
            .lines
            .entry((key, frame.lasti))
            .or_insert_with(|| frame_lineno(frame));
        (filename, lineno)
    }
}

fn unknown_filename() -> Filename {
    Arc::from("<unknown>")
}

/// `code.co_filename`, or "<unknown>" if it is not a string (as tracemalloc reports it).
unsafe fn code_filename(py: Python<'_>, code: *mut ffi::PyCodeObject) -> Filename {
    let code = Bound::from_borrowed_ptr(py, code.cast());
    match code
        .getattr("co_filename")
        .and_then(|f| f.extract::<String>())
    {
        Ok(name) => Arc::from(name),
        Err(_) => unknown_filename(),
    }
}
