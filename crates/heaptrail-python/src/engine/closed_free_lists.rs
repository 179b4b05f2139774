//! CPython 3.13's free lists closed while heaptrail traces, instead of the reference tracer
//! (`csrc/closed_free_lists.c` says why and how). A full garbage collection reopens some of
//! them; a callback at the head of `gc.callbacks` closes them again when each collection ends.

use crate::engine::gil::{GilCell, MainGil};
use pyo3::prelude::*;
use pyo3::types::{PyCFunction, PyDict, PyList, PyTuple};
use std::os::raw::c_int;

extern "C" {
    fn ht_close_free_lists() -> c_int;
    fn ht_reopen_free_lists();
}

/// The gc callback, made once and kept (so that `reopen` finds it by identity); `None` until
/// the lists are first closed.
static CALLBACK: GilCell<Option<Py<PyAny>>> = GilCell::new(None);
/// Whether the lists are closed now (by `close`, until `reopen`).
static CLOSED: GilCell<bool> = GilCell::new(false);

/// Empties and closes the free lists and registers the callback. False where there are no
/// lists to close (before 3.13, where `csrc/free_list_bypass.c` keeps dicts, lists and tuples
/// out of them; free-threaded builds): the caller installs the reference tracer then.
pub fn close(py: Python<'_>) -> bool {
    let gil = MainGil::from_py(py);
    // SAFETY: the main GIL is held (`gil`); the shim only edits the main interpreter's lists.
    if unsafe { ht_close_free_lists() } == 0 {
        return false;
    }
    if let Some(mut closed) = CLOSED.borrow_mut(gil) {
        *closed = true;
    }
    if let Err(e) = register_callback(py) {
        // Without it a full collection reopens the float and tuple lists until the next
        // start: floats and tuples reused meanwhile keep an earlier line (exact mode) or
        // are not counted (sampled mode), nothing worse.
        let _ = py.import("logging").and_then(|logging| {
            logging
                .call_method1("getLogger", ("heaptrail",))?
                .call_method1(
                    "warning",
                    (format!("cannot register the gc callback that keeps free lists closed: {e}"),),
                )
        });
    }
    true
}

/// Opens the lists again and removes the callback (nothing if `close` did not close them).
pub fn reopen(py: Python<'_>) {
    let gil = MainGil::from_py(py);
    let was_closed = CLOSED
        .borrow_mut(gil)
        .map(|mut closed| std::mem::replace(&mut *closed, false))
        .unwrap_or(false);
    if !was_closed {
        return;
    }
    if let Some(callbacks) = gc_callbacks(py) {
        let ours = CALLBACK.borrow_mut(gil).and_then(|c| c.as_ref().map(|c| c.clone_ref(py)));
        if let Some(ours) = ours {
            // By identity, wherever it is now (other code may have inserted callbacks before it).
            while let Some(i) = callbacks.iter().position(|c| c.is(&ours)) {
                if callbacks.del_item(i).is_err() {
                    break;
                }
            }
        }
    }
    // SAFETY: the main GIL is held.
    unsafe { ht_reopen_free_lists() };
}

fn gc_callbacks(py: Python<'_>) -> Option<Bound<'_, PyList>> {
    let callbacks = py.import("gc").ok()?.getattr("callbacks").ok()?;
    callbacks.cast_into::<PyList>().ok()
}

/// Puts the callback first in `gc.callbacks` (first: the callbacks before it would run with
/// reopened lists).
fn register_callback(py: Python<'_>) -> PyResult<()> {
    let gil = MainGil::from_py(py);
    let callbacks = gc_callbacks(py)
        .ok_or_else(|| pyo3::exceptions::PyRuntimeError::new_err("gc.callbacks is not a list"))?;
    let existing = CALLBACK.borrow_mut(gil).and_then(|c| c.as_ref().map(|c| c.clone_ref(py)));
    let ours = match existing {
        Some(ours) => ours,
        None => {
            let made = PyCFunction::new_closure(
                py,
                Some(c"_heaptrail_close_free_lists"),
                Some(c"heaptrail: closes the free lists a full garbage collection reopened."),
                on_collection,
            )?
            .into_any()
            .unbind();
            if let Some(mut slot) = CALLBACK.borrow_mut(gil) {
                *slot = Some(made.clone_ref(py));
            }
            made
        }
    };
    if !callbacks.iter().any(|c| c.is(&ours)) {
        callbacks.insert(0, ours)?;
    }
    Ok(())
}

/// `gc.callbacks` entry: `(phase, info)`; at "stop", closes the lists again.
fn on_collection(args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) {
    let py = args.py();
    let stopped = args
        .get_item(0)
        .ok()
        .and_then(|phase| phase.extract::<String>().ok())
        .is_some_and(|phase| phase == "stop");
    let gil = MainGil::from_py(py);
    let closed = CLOSED.borrow_mut(gil).is_some_and(|c| *c);
    if stopped && closed {
        // SAFETY: the main GIL is held (gc callbacks run with it).
        unsafe { ht_close_free_lists() };
    }
}
