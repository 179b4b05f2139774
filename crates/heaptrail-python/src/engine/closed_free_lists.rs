//! Free lists closed while heaptrail traces (CPython 3.13: floats, tuples, lists, dicts, dict
//! key tables, instead of the reference tracer; 3.11/3.12: floats), so that every such object
//! is allocated where the hooks see it; `csrc/closed_free_lists.c` says why and how. A full
//! garbage collection reopens some of them: every traced allocation checks (two loads) and
//! closes them again.

use crate::engine::gil::MainGil;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, Ordering};

extern "C" {
    fn ht_close_free_lists() -> c_int;
    fn ht_free_lists_reopened() -> c_int;
    fn ht_reopen_free_lists();
}

/// Whether the lists are closed now (by `close`, until `reopen`). Written with the main GIL.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Empties and closes the free lists. False where there are none to close (free-threaded
/// builds, builds without free lists): the caller installs the reference tracer then (3.13+).
pub fn close(_gil: MainGil<'_>) -> bool {
    // SAFETY: the main GIL is held (`_gil`); the shim edits only the main interpreter's lists
    // and frees the objects parked there, as CPython's own clearing does.
    let closed = unsafe { ht_close_free_lists() } != 0;
    CLOSED.store(closed, Ordering::Relaxed);
    closed
}

/// Closes the lists again if a full collection reopened them since. Called by the hooks
/// before they trace an allocation, with the main GIL and outside any borrow of the tracer:
/// the objects parked meanwhile are freed through the hooks.
#[inline]
pub fn reclose_if_reopened(_gil: MainGil<'_>) {
    if !CLOSED.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: the main GIL is held; the check only reads the main interpreter's list state.
    let reopened = unsafe { ht_free_lists_reopened() } != 0;
    if reopened {
        // SAFETY: the main GIL is held, and the caller's contract lets the frees of the
        // objects parked since re-enter the hooks.
        unsafe { ht_close_free_lists() };
    }
}

/// Opens the lists again (nothing if `close` did not close them).
pub fn reopen(_gil: MainGil<'_>) {
    if CLOSED.swap(false, Ordering::Relaxed) {
        // SAFETY: the main GIL is held.
        unsafe { ht_reopen_free_lists() };
    }
}
