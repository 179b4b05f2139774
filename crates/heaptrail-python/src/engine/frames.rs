//! Frame capture: the Rust side of `csrc/cpython_frames.c`.
//!
//! A captured frame is a code object pointer plus an instruction index. Turning it into a
//! filename and a line number is expensive (`PyCode_Addr2Line` decodes the line table), so it
//! is done later, once per distinct frame, when a snapshot is taken (see `code_registry.rs`).

use crate::engine::gil::MainGil;
use pyo3::ffi;
use std::os::raw::{c_int, c_void};

/// One captured frame. Layout shared with `ht_raw_frame` in the C shim: two whole words and no
/// padding, so that a run of frames can be compared and hashed as words ([`RawFrame::words`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RawFrame {
    /// `PyCodeObject *`; null for a frame heaptrail could not attribute ("<unknown>").
    pub code: *mut ffi::PyCodeObject,
    /// Index of the current instruction in the code's bytecode.
    pub lasti: i64,
}

const _: () = assert!(std::mem::size_of::<RawFrame>() == 2 * std::mem::size_of::<u64>());

// SAFETY: a RawFrame is plain data. The code pointer is only dereferenced through the C shim
// with the GIL held, while `CodeRegistry` holds a reference to the object.
unsafe impl Send for RawFrame {}

impl RawFrame {
    pub const UNKNOWN: RawFrame = RawFrame {
        code: std::ptr::null_mut(),
        lasti: 0,
    };

    /// The frames as words (code, lasti, code, lasti, ...): equal frames, equal words. Slices of
    /// words compare with one memcmp, where frames compare field by field.
    #[inline]
    pub fn words(frames: &[RawFrame]) -> &[u64] {
        // SAFETY: RawFrame is repr(C), 8-aligned, exactly two 8-byte fields with no padding
        // (asserted above), every bit pattern of which is a valid u64.
        unsafe { std::slice::from_raw_parts(frames.as_ptr().cast::<u64>(), frames.len() * 2) }
    }
}

/// Opaque `_PyInterpreterFrame *`.
pub type InterpreterFrame = *mut c_void;

extern "C" {
    fn ht_init();
    fn ht_current_thread_state(flags: *mut c_int) -> *mut ffi::PyThreadState;
    fn ht_set_busy(busy: c_int) -> c_int;
    fn ht_note_allocated(block: usize);
    static ht_capture_total_is_complete: c_int;
    static ht_tracks_last_alloc: c_int;
    fn ht_capture_frames(
        tstate: *mut ffi::PyThreadState,
        out: *mut RawFrame,
        max_frames: c_int,
        total: *mut c_int,
        rest: *mut InterpreterFrame,
        rest_identity: *mut [usize; 2],
    ) -> c_int;
    fn ht_count_frames(frame: InterpreterFrame) -> c_int;
    fn ht_next_complete_frame(
        frame: InterpreterFrame,
        out: *mut RawFrame,
        next: *mut InterpreterFrame,
    ) -> c_int;
    fn ht_code_filename(
        code: *mut ffi::PyCodeObject,
        data: *mut *const c_void,
        kind: *mut c_int,
        len: *mut ffi::Py_ssize_t,
    ) -> c_int;
    fn ht_code_function(
        code: *mut ffi::PyCodeObject,
        data: *mut *const c_void,
        kind: *mut c_int,
        len: *mut ffi::Py_ssize_t,
        firstlineno: *mut c_int,
    ) -> c_int;
    fn ht_free_list_bypass(on: c_int) -> c_int;
    fn ht_for_each_parked_block(
        parked: extern "C" fn(block: usize, data: *mut c_void),
        data: *mut c_void,
    ) -> usize;
    fn ht_stack_depths(walked: *mut c_int, reported: *mut c_int);
    fn ht_code_lineno(code: *mut ffi::PyCodeObject, lasti: c_int) -> c_int;
    fn ht_object_block_address(obj: *mut ffi::PyObject) -> usize;
}

/// Prepares the shim (records the main interpreter).
pub fn init(_gil: MainGil<'_>) {
    // SAFETY: reads the runtime's main interpreter pointer, with the main GIL held (`_gil`).
    unsafe { ht_init() }
}

/// The calling thread as the hooks see it. Made only by [`current_thread`] (its fields are
/// private: `MainGil::of_thread` trusts `holds_gil`), and not `Send`.
#[derive(Clone, Copy)]
pub struct CurrentThread {
    /// Its thread state; null when it has none (a C thread, thread teardown).
    tstate: *mut ffi::PyThreadState,
    /// Whether it holds the main interpreter's GIL.
    holds_gil: bool,
    /// Whether it is doing heaptrail's own work (see [`set_busy`]).
    busy: bool,
}

impl CurrentThread {
    /// Whether it holds the main interpreter's GIL (see `gil::MainGil::of_thread`).
    #[inline]
    pub fn holds_gil(&self) -> bool {
        self.holds_gil
    }

    /// Whether it is doing heaptrail's own work (see [`set_busy`]).
    #[inline]
    pub fn busy(&self) -> bool {
        self.busy
    }
}

// Flags of `ht_current_thread_state`.
const HOLDS_GIL: c_int = 1;
const BUSY: c_int = 2;

/// Which thread is calling, whether it holds the GIL, whether it is busy with heaptrail's
/// own work. Never allocates or locks.
#[inline]
pub fn current_thread() -> CurrentThread {
    let mut flags: c_int = 0;
    // SAFETY: the shim only reads thread-state pointers and flags of the calling thread.
    let tstate = unsafe { ht_current_thread_state(&mut flags) };
    CurrentThread {
        tstate,
        holds_gil: flags & HOLDS_GIL != 0,
        busy: flags & BUSY != 0,
    }
}

/// Marks the calling thread as doing heaptrail's own work (its allocations are not traced).
/// Returns the previous setting.
pub fn set_busy(busy: bool) -> bool {
    // SAFETY: writes a thread-local flag of the calling thread.
    unsafe { ht_set_busy(busy as c_int) != 0 }
}

/// Records `block` as the calling thread's latest allocation: CPython 3.13's reference tracer
/// tells a new object's fresh block from one reused from a free list with it. Skipped where the
/// C shim says the version needs none (before 3.13).
#[inline]
pub fn note_allocated(block: usize) {
    // SAFETY: a constant the C shim defines; it is never written.
    if unsafe { ht_tracks_last_alloc } != 0 {
        // SAFETY: writes a thread-local word of the calling thread.
        unsafe { ht_note_allocated(block) }
    }
}

/// Whether a capture's `total_nframe` is the depth of the whole stack (3.12+: the interpreter
/// counts its frames), or only the frames copied, the caller adding the depth below `rest`
/// (3.11). The C shim's answer for the version it was compiled for.
#[inline]
pub fn capture_counts_whole_stack() -> bool {
    // SAFETY: a constant the C shim defines; it is never written.
    unsafe { ht_capture_total_is_complete != 0 }
}

/// What one capture saw.
pub struct Capture {
    /// Number of frames written to the buffer.
    pub nframe: usize,
    /// Depth of the stack, complete once `rest` is accounted for.
    pub total_nframe: u32,
    /// First frame not copied (null at the bottom of the stack). Unless
    /// [`capture_counts_whole_stack`] (3.11), the caller must add the depth below it to
    /// `total_nframe`.
    pub rest: InterpreterFrame,
    /// `(rest->previous, code of rest)`: what identifies `rest`'s position in its stack (used
    /// where the depth below it is counted, to memoise it).
    pub rest_identity: [usize; 2],
}

/// Copies the thread's stack, most recent frame first, into `buf` (its length is the frame
/// limit). Never allocates, locks or touches a reference count.
///
/// # Safety
/// `thread` comes from [`current_thread`] on the calling thread: only this thread pushes and
/// pops its frames, so the chain is stable while it is walked.
pub unsafe fn capture(thread: CurrentThread, buf: &mut [RawFrame]) -> Capture {
    if thread.tstate.is_null() {
        return Capture {
            nframe: 0,
            total_nframe: 0,
            rest: std::ptr::null_mut(),
            rest_identity: [0; 2],
        };
    }
    let mut total: c_int = 0;
    let mut rest: InterpreterFrame = std::ptr::null_mut();
    let mut rest_identity = [0usize; 2];
    let max = buf.len().min(c_int::MAX as usize) as c_int;
    // SAFETY: `thread.tstate` is the calling thread's own state (the caller's contract), so
    // its frame chain is stable while walked; `buf` has room for `max` frames and the other
    // pointers are valid out-parameters.
    let n = unsafe {
        ht_capture_frames(
            thread.tstate,
            buf.as_mut_ptr(),
            max,
            &mut total,
            &mut rest,
            &mut rest_identity,
        )
    };
    Capture {
        nframe: n as usize,
        total_nframe: total as u32,
        rest,
        rest_identity,
    }
}

/// Walks down from `frame`: the first complete frame at or below it, and the frame below that
/// one (where the walk continues); `None` at the bottom of the stack.
///
/// # Safety
/// `frame` is null or a live frame of the calling thread's stack (below a capture just made).
#[inline]
pub unsafe fn next_complete_frame(frame: InterpreterFrame) -> Option<(RawFrame, InterpreterFrame)> {
    let mut out = RawFrame::UNKNOWN;
    let mut next: InterpreterFrame = std::ptr::null_mut();
    // SAFETY: `frame` is null or a live frame of this thread (the caller's contract); `out`
    // and `next` are valid out-parameters.
    (unsafe { ht_next_complete_frame(frame, &mut out, &mut next) } != 0).then_some((out, next))
}

/// `code.co_filename`, read without allocating anything Python could see (it runs inside the
/// allocator hooks; Rust's own allocations use the system allocator). `None` if it is not a
/// string.
///
/// # Safety
/// The calling thread holds the GIL and `code` is alive.
pub unsafe fn code_filename_in_hook(code: *mut ffi::PyCodeObject) -> Option<String> {
    if code.is_null() {
        return None;
    }
    let mut data: *const c_void = std::ptr::null();
    let (mut kind, mut len): (c_int, ffi::Py_ssize_t) = (0, 0);
    // SAFETY: GIL held and `code` alive (the caller's contract); valid out-parameters.
    if unsafe { ht_code_filename(code, &mut data, &mut kind, &mut len) } == 0 {
        return None;
    }
    // SAFETY: the shim handed out the string's own buffer, which lives as long as `code`.
    unsafe { string_from_units(data, kind, len) }
}

/// `code.co_qualname` and `code.co_firstlineno`, read from the code object's fields: no
/// attribute lookup, no Python code, no allocation Python could see. `None` if the name is not
/// a string.
///
/// # Safety
/// The calling thread holds the GIL and `code` is alive.
pub unsafe fn code_function(code: *mut ffi::PyCodeObject) -> Option<(String, u32)> {
    if code.is_null() {
        return None;
    }
    let mut data: *const c_void = std::ptr::null();
    let (mut kind, mut len, mut first): (c_int, ffi::Py_ssize_t, c_int) = (0, 0, 0);
    // SAFETY: GIL held and `code` alive (the caller's contract); valid out-parameters.
    if unsafe { ht_code_function(code, &mut data, &mut kind, &mut len, &mut first) } == 0 {
        return None;
    }
    // SAFETY: as in `code_filename_in_hook`: the name string is owned by the live `code`.
    let name = unsafe { string_from_units(data, kind, len) }?;
    Some((name, first.max(0) as u32))
}

/// A Python string's characters as a Rust string, from its canonical storage (`kind` bytes per
/// character, `len` characters at `data`).
///
/// # Safety
/// `data` points at `len` characters of `kind` bytes each that stay alive and unchanged
/// meanwhile (a `str` is immutable; the GIL holder's caller keeps its owner alive).
unsafe fn string_from_units(
    data: *const c_void,
    kind: c_int,
    len: ffi::Py_ssize_t,
) -> Option<String> {
    if data.is_null() {
        return None;
    }
    let len = len.max(0) as usize;
    // SAFETY (the three slices): `data` points at `len` live units of `kind` bytes (the
    // caller's contract), and `kind` picks the unit type.
    let units: Box<dyn Iterator<Item = u32>> = match kind {
        // SAFETY: see above.
        1 => Box::new(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) }
            .iter()
            .map(|&c| c as u32)),
        // SAFETY: see above.
        2 => Box::new(unsafe { std::slice::from_raw_parts(data.cast::<u16>(), len) }
            .iter()
            .map(|&c| c as u32)),
        // SAFETY: see above.
        4 => Box::new(unsafe { std::slice::from_raw_parts(data.cast::<u32>(), len) }
            .iter()
            .copied()),
        _ => return None,
    };
    // A lone surrogate (possible in a str) cannot be a char: shown as U+FFFD.
    Some(
        units
            .map(|c| char::from_u32(c).unwrap_or('\u{FFFD}'))
            .collect(),
    )
}

/// Turns CPython 3.11/3.12's dict, list and tuple free lists off (`true`) or back on: see
/// `csrc/free_list_bypass.c`. A no-op on 3.13+. Returns which types are as asked (bits: 1
/// dict, 2 list, 4 tuple).
pub fn set_free_list_bypass(_gil: MainGil<'_>, on: bool) -> u32 {
    // SAFETY: the main GIL is held (`_gil`); the shim swaps three static type slots.
    unsafe { ht_free_list_bypass(on as c_int) as u32 }
}

/// Calls `f(block)` for every block CPython 3.13 keeps parked in its free lists (dead objects
/// kept for reuse: see `csrc/parked_blocks.c`); none before 3.13. `f` must not allocate
/// through Python nor run Python code (the lists must not change during the walk). Returns
/// how many.
pub fn for_each_parked_block<F: FnMut(usize)>(_gil: MainGil<'_>, mut f: F) -> usize {
    extern "C" fn call<F: FnMut(usize)>(block: usize, data: *mut c_void) {
        // SAFETY: `data` is the `&mut F` passed below, alive for the whole walk.
        let f = unsafe { &mut *(data as *mut F) };
        f(block);
    }
    let data = &mut f as *mut F as *mut c_void;
    // SAFETY: the main GIL is held (`_gil`), so the free lists stay as they are while the
    // shim reads them; `call::<F>` gets back the `data` it expects.
    unsafe { ht_for_each_parked_block(call::<F>, data) }
}

/// Complete frames from `frame` to the bottom of its stack (saturated at 65535).
///
/// # Safety
/// `frame` is a live frame of the calling thread (the `rest` of a capture just made).
pub unsafe fn count_frames(frame: InterpreterFrame) -> u32 {
    // SAFETY: `frame` is a live frame of this thread (the caller's contract).
    unsafe { ht_count_frames(frame) as u32 }
}

/// `(walked, reported)`: the calling thread's stack depth counted frame by frame, and as the
/// interpreter's recursion counter reports it (-1 before 3.12).
pub fn stack_depths(_gil: MainGil<'_>) -> (i32, i32) {
    let (mut walked, mut reported) = (0, 0);
    // SAFETY: the main GIL is held (`_gil`), so the thread has a current thread state.
    unsafe { ht_stack_depths(&mut walked, &mut reported) };
    (walked, reported)
}

/// Line number of a captured frame.
///
/// # Safety
/// The caller holds the GIL and a reference to the frame's code object (or it is null).
pub unsafe fn frame_lineno(frame: RawFrame) -> u32 {
    if frame.code.is_null() {
        return 0;
    }
    // SAFETY: the caller's contract.
    unsafe { ht_code_lineno(frame.code, frame.lasti as c_int) as u32 }
}

/// Address of the memory block holding `obj` (objects can carry a GC/managed-dict pre-header).
///
/// # Safety
/// The caller holds the GIL and a reference to `obj`.
pub unsafe fn object_block_address(obj: *mut ffi::PyObject) -> usize {
    // SAFETY: the caller's contract (the shim reads `obj`'s type).
    unsafe { ht_object_block_address(obj) }
}
