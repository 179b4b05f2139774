//! The previous, in-process holder walk (`_native._find_holders`), kept only as the reference
//! `benches/bench_stall.py --old` measures the forked analysis against (`holders.rs` is what
//! the watcher uses): it holds the GIL for the whole walk, seconds on a big heap.
//!
//! "Who holds it": the containers that keep a leaking site's blocks alive.
//!
//! Every object the garbage collector tracks is visited with its type's `tp_traverse` (the
//! same walk the collector does), counting how many of its direct references point at a block
//! allocated through the leaking line. The containers with the most such references are the
//! retainers a user must look at (the dict used as an unbounded cache, the list of listeners).
//!
//! The collector does not track containers that can never be part of a cycle — a dict of
//! strings to bytes, the typical cache — so `gc.get_objects()` misses them. Untracked
//! containers met during the walk are walked too.

use crate::engine::frames::object_block_address;
use crate::engine::tracer;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyList;
use rustc_hash::FxHashSet;
use std::os::raw::{c_int, c_void};

struct Visit<'a> {
    blocks: &'a FxHashSet<usize>,
    hits: usize,
    /// Untracked containers seen, to walk later (each once).
    untracked: &'a mut Vec<*mut ffi::PyObject>,
    seen: &'a mut FxHashSet<usize>,
}

extern "C" fn visit(child: *mut ffi::PyObject, arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Visit` passed to tp_traverse below; `child` is a live object the
    // container references (tp_traverse contract), and we hold the GIL.
    unsafe {
        let v = &mut *(arg as *mut Visit);
        if child.is_null() {
            return 0;
        }
        if v.blocks.contains(&object_block_address(child)) {
            v.hits += 1;
        }
        if ffi::PyObject_IS_GC(child) != 0
            && ffi::PyObject_GC_IsTracked(child) == 0
            && v.seen.insert(child as usize)
        {
            v.untracked.push(child);
        }
    }
    0
}

/// Walks one object's references; returns how many point at `blocks`.
///
/// # Safety
/// GIL held; `obj` is alive for the duration of the call.
unsafe fn references_into(
    obj: *mut ffi::PyObject,
    blocks: &FxHashSet<usize>,
    untracked: &mut Vec<*mut ffi::PyObject>,
    seen: &mut FxHashSet<usize>,
) -> usize {
    let mut v = Visit {
        blocks,
        hits: 0,
        untracked,
        seen,
    };
    let arg = &mut v as *mut Visit as *mut c_void;
    // SAFETY: GIL held and `obj` alive (the caller's contract).
    if unsafe { ffi::PyDict_Check(obj) } != 0 {
        // A dict's tp_traverse skips string keys (they cannot form cycles), but a cache keyed
        // by per-request strings holds those keys alive: visit keys and values.
        let (mut pos, mut key, mut value) = (0, std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: as above; `visit` only reads, so the dict does not change while iterated.
        while unsafe { ffi::PyDict_Next(obj, &mut pos, &mut key, &mut value) } != 0 {
            visit(key, arg);
            visit(value, arg);
        }
    } else if let Some(traverse) =
        // SAFETY: as above: a live object's type is a live type object.
        unsafe { (*ffi::Py_TYPE(obj)).tp_traverse }
    {
        // Calling a type's tp_traverse with a visitor that only reads is what the garbage
        // collector itself does.
        // SAFETY: as above; `arg` is the `Visit` that `visit` expects.
        unsafe { traverse(obj, visit, arg) };
    }
    v.hits
}

/// The `limit` objects holding the most references to blocks allocated through
/// `filename:lineno`, as `(object, references)`, most first.
pub fn find_holders<'py>(
    py: Python<'py>,
    filename: &str,
    lineno: u32,
    limit: usize,
) -> PyResult<Vec<(Bound<'py, PyAny>, usize)>> {
    let blocks = tracer::blocks_through(py, filename, lineno);
    if blocks.is_empty() {
        return Ok(Vec::new());
    }
    let objects = py.import("gc")?.call_method0("get_objects")?;
    let objects = objects.cast::<PyList>()?;
    let mut found = Vec::new();
    let mut untracked = Vec::new();
    let mut seen = FxHashSet::default();
    for obj in objects.iter() {
        // SAFETY: GIL held; the list keeps `obj` alive.
        let hits = unsafe { references_into(obj.as_ptr(), &blocks, &mut untracked, &mut seen) };
        if hits > 0 {
            found.push((obj, hits));
        }
    }
    // Untracked containers are reachable from the objects walked above, which `objects`
    // keeps alive, and nothing runs Python code in between, so they are alive too.
    while let Some(obj) = untracked.pop() {
        // SAFETY: as above.
        let hits = unsafe { references_into(obj, &blocks, &mut untracked, &mut seen) };
        if hits > 0 {
            // SAFETY: a live object (see above); taking a new strong reference to it.
            found.push((unsafe { Bound::from_borrowed_ptr(py, obj) }, hits));
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.1));
    found.truncate(limit);
    Ok(found)
}
