//! Frame capture: the Rust side of `csrc/cpython_frames.c`.
//!
//! A captured frame is a code object pointer plus an instruction index. Turning it into a
//! filename and a line number is expensive (`PyCode_Addr2Line` decodes the line table), so it
//! is done later, once per distinct frame, when a snapshot is taken (see `code_registry.rs`).

use pyo3::ffi;
use std::os::raw::c_int;

/// One captured frame. Layout shared with `ht_raw_frame` in the C shim.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RawFrame {
    /// `PyCodeObject *`; null for a frame heaptrail could not attribute ("<unknown>").
    pub code: *mut ffi::PyCodeObject,
    /// Index of the current instruction in the code's bytecode.
    pub lasti: i32,
}

// SAFETY: a RawFrame is plain data. The code pointer is only dereferenced through the C shim
// with the GIL held, while `CodeRegistry` holds a reference to the object.
unsafe impl Send for RawFrame {}

impl RawFrame {
    pub const UNKNOWN: RawFrame = RawFrame { code: std::ptr::null_mut(), lasti: 0 };
}

extern "C" {
    fn ht_current_thread_state(holds_gil: *mut c_int) -> *mut ffi::PyThreadState;
    fn ht_capture_frames(
        tstate: *mut ffi::PyThreadState,
        out: *mut RawFrame,
        max_frames: c_int,
        total: *mut c_int,
    ) -> c_int;
    fn ht_code_lineno(code: *mut ffi::PyCodeObject, lasti: c_int) -> c_int;
    fn ht_object_block_address(obj: *mut ffi::PyObject) -> usize;
}

/// What one capture saw.
pub struct Capture {
    /// Number of frames written to the buffer.
    pub nframe: usize,
    /// Depth of the whole stack (saturated at 65535).
    pub total_nframe: u16,
    /// Whether this thread holds the GIL (only then may new code objects be referenced).
    pub holds_gil: bool,
}

/// Captures the calling thread's stack, most recent frame first, into `buf` (its length is
/// the frame limit). Safe to call from any allocator hook: it never allocates, locks or
/// touches a reference count.
pub fn capture_current(buf: &mut [RawFrame]) -> Capture {
    let mut holds_gil: c_int = 0;
    // SAFETY: the shim only reads thread-state pointers of the calling thread.
    let tstate = unsafe { ht_current_thread_state(&mut holds_gil) };
    if tstate.is_null() {
        return Capture { nframe: 0, total_nframe: 0, holds_gil: false };
    }
    let mut total: c_int = 0;
    let max = buf.len().min(c_int::MAX as usize) as c_int;
    // SAFETY: `tstate` belongs to the calling thread, whose frames only this thread pushes and
    // pops, so the chain is stable while we walk it; `buf` has room for `max` frames.
    let n = unsafe { ht_capture_frames(tstate, buf.as_mut_ptr(), max, &mut total) };
    Capture { nframe: n as usize, total_nframe: total as u16, holds_gil: holds_gil != 0 }
}

/// Line number of a captured frame. Caller must hold the GIL and a reference to the code.
pub unsafe fn frame_lineno(frame: RawFrame) -> u32 {
    if frame.code.is_null() {
        return 0;
    }
    ht_code_lineno(frame.code, frame.lasti) as u32
}

/// Address of the memory block holding `obj` (objects can carry a GC/managed-dict pre-header).
/// Caller must hold the GIL and a reference to `obj`.
pub unsafe fn object_block_address(obj: *mut ffi::PyObject) -> usize {
    ht_object_block_address(obj)
}
