//! The tracer: global tracing state shared by the allocator hooks and the Python API.
//!
//! Locking: one mutex guards the trace store, the traceback table and the code registry.
//! Hooks take it for a few hundred nanoseconds at most; nothing that can call back into
//! Python's allocators runs while it is held (Rust's own allocations use the system `malloc`,
//! which is not hooked), so a hook can never deadlock on it.

use crate::allocator_hooks;
use crate::code_registry::{self, CodeRegistry, LineResolver};
use crate::frames::{capture_current, RawFrame};
use crate::trace_store::TraceStore;
use crate::traceback_table::{TbId, TracebackTable};
use heaptrail_core::{Filename, Snapshot, SnapshotBuilder};
use parking_lot::lock_api::RawMutex as _;
use parking_lot::Mutex;
use pyo3::prelude::*;
use rustc_hash::FxHashMap;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Once;

pub const MAX_NFRAME: usize = 65535;

/// Fast check done by every hook before anything else.
static TRACING: AtomicBool = AtomicBool::new(false);
/// `get_traceback_limit()`: kept after `stop()`, like tracemalloc.
static NFRAME: AtomicUsize = AtomicUsize::new(1);
static STATE: Mutex<Option<Tracer>> = Mutex::new(None);
/// Only used with the GIL held (snapshots, tracebacks of objects).
static RESOLVER: Mutex<Option<LineResolver>> = Mutex::new(None);

thread_local! {
    /// Set while a thread does heaptrail's own work: its allocations are not traced.
    static BUSY: Cell<bool> = const { Cell::new(false) };
    /// The block this thread allocated last: a new object in it needs no re-stamping.
    static LAST_ALLOC: Cell<usize> = const { Cell::new(0) };
}

struct Tracer {
    store: TraceStore,
    tracebacks: TracebackTable,
    codes: CodeRegistry,
    /// Capture buffer, `nframe` long; only used under the lock.
    scratch: Vec<RawFrame>,
}

impl Tracer {
    fn new(nframe: usize) -> Self {
        Tracer {
            store: TraceStore::default(),
            tracebacks: TracebackTable::default(),
            codes: CodeRegistry::default(),
            scratch: vec![RawFrame::UNKNOWN; nframe],
        }
    }

    /// Captures the calling thread's stack and interns it.
    fn capture(&mut self) -> TbId {
        let cap = capture_current(&mut self.scratch);
        let (mut n, mut total) = (cap.nframe, cap.total_nframe);
        if n == 0 {
            // No Python frame (a C thread, thread teardown): tracemalloc's "<unknown>:0".
            self.scratch[0] = RawFrame::UNKNOWN;
            n = 1;
            total = 1;
        }
        let frames = &mut self.scratch[..n];
        if let Some(id) = self.tracebacks.find(frames, total) {
            return id;
        }
        if cap.holds_gil {
            for f in frames.iter() {
                // SAFETY: GIL held; the code object is alive on this thread's stack.
                unsafe { self.codes.hold(f.code) };
            }
        } else {
            // Without the GIL no new reference can be taken: frames whose code object is not
            // held already are reported as "<unknown>".
            for f in frames.iter_mut() {
                if !self.codes.is_held(f.code) {
                    *f = RawFrame::UNKNOWN;
                }
            }
            if let Some(id) = self.tracebacks.find(frames, total) {
                return id;
            }
        }
        self.tracebacks.insert_new(frames, total)
    }

    fn heap_bytes(&self) -> usize {
        self.store.heap_bytes()
            + self.tracebacks.heap_bytes()
            + self.codes.heap_bytes()
            + self.scratch.capacity() * std::mem::size_of::<RawFrame>()
    }
}

fn busy() -> bool {
    BUSY.with(|b| b.get())
}

/// Marks the current thread as doing heaptrail's own work until dropped.
pub struct OwnWork(bool);

impl OwnWork {
    pub fn begin() -> Self {
        OwnWork(BUSY.with(|b| b.replace(true)))
    }
}

impl Drop for OwnWork {
    fn drop(&mut self) {
        BUSY.with(|b| b.set(self.0));
    }
}

/// Excludes (or re-includes) every allocation of the calling thread, e.g. heaptrail's own
/// background threads.
pub fn set_thread_ignored(ignored: bool) {
    BUSY.with(|b| b.set(ignored));
}

// ---- called by the allocator hooks -------------------------------------------------------

pub fn on_alloc(addr: usize, size: usize) {
    if !TRACING.load(Ordering::Relaxed) || busy() {
        return;
    }
    LAST_ALLOC.with(|l| l.set(addr));
    if let Some(t) = STATE.lock().as_mut() {
        let tb = t.capture();
        t.store.add(addr, size, tb);
    }
}

/// A new object was initialised in `block` (3.13+ reference tracer). When it came from a free
/// list, no allocation happened: re-stamp the block with the current traceback, as
/// tracemalloc does, so the object is blamed on the line that created it.
#[allow(dead_code)] // only called on 3.13+
pub fn on_new_object(block: usize) {
    if !TRACING.load(Ordering::Relaxed) || busy() || LAST_ALLOC.with(|l| l.get()) == block {
        return;
    }
    if let Some(t) = STATE.lock().as_mut() {
        if t.store.get(block).is_some() {
            let tb = t.capture();
            t.store.retag(block, tb);
        }
    }
}

pub fn on_realloc(old: usize, new: usize, size: usize) {
    if !TRACING.load(Ordering::Relaxed) {
        return;
    }
    let untraced = busy();
    if let Some(t) = STATE.lock().as_mut() {
        if old != 0 {
            t.store.remove(old);
        }
        if !untraced {
            LAST_ALLOC.with(|l| l.set(new));
            let tb = t.capture();
            t.store.add(new, size, tb);
        }
    }
}

pub fn on_free(addr: usize) {
    // Frees are honoured even on ignored threads: a freed block must never stay listed.
    if !TRACING.load(Ordering::Relaxed) {
        return;
    }
    if let Some(t) = STATE.lock().as_mut() {
        t.store.remove(addr);
    }
}

// ---- the Python API's operations (GIL held) ------------------------------------------------

pub fn is_tracing() -> bool {
    TRACING.load(Ordering::Relaxed)
}

pub fn traceback_limit() -> usize {
    NFRAME.load(Ordering::Relaxed)
}

/// Starts tracing with up to `nframe` frames per traceback; if already tracing, only the
/// limit changes (as with tracemalloc).
pub fn start(_py: Python<'_>, nframe: usize) {
    register_fork_handlers();
    let _own = OwnWork::begin();
    NFRAME.store(nframe, Ordering::Relaxed);
    {
        let mut state = STATE.lock();
        match state.as_mut() {
            Some(t) => t.scratch.resize(nframe, RawFrame::UNKNOWN),
            None => *state = Some(Tracer::new(nframe)),
        }
    }
    if !TRACING.load(Ordering::Relaxed) {
        // SAFETY: GIL held (we have `_py`), hooks not installed by us while not tracing.
        unsafe { allocator_hooks::install() };
        TRACING.store(true, Ordering::Relaxed);
    }
}

/// Stops tracing and forgets every trace.
pub fn stop(py: Python<'_>) {
    if !TRACING.swap(false, Ordering::Relaxed) {
        return;
    }
    // SAFETY: GIL held.
    unsafe { allocator_hooks::uninstall() };
    clear(py);
}

/// Forgets every trace (tracing continues).
pub fn clear(py: Python<'_>) {
    let _own = OwnWork::begin();
    let codes = match STATE.lock().as_mut() {
        Some(t) => {
            t.store.clear();
            t.tracebacks.clear();
            t.codes.take()
        }
        None => Vec::new(),
    };
    if let Some(r) = RESOLVER.lock().as_mut() {
        r.clear();
    }
    // Outside the lock: dropping a code object frees memory through the hooks.
    code_registry::release(py, codes);
}

/// `(traced, peak)` in bytes.
pub fn traced_memory() -> (u64, u64) {
    match STATE.lock().as_ref() {
        Some(t) if is_tracing() => (t.store.traced(), t.store.peak()),
        _ => (0, 0),
    }
}

pub fn reset_peak() {
    if let Some(t) = STATE.lock().as_mut() {
        t.store.reset_peak();
    }
}

/// Bytes heaptrail itself uses to store traces.
pub fn own_memory() -> usize {
    STATE.lock().as_ref().map_or(0, Tracer::heap_bytes)
}

/// Number of live traces.
pub fn trace_count() -> usize {
    STATE.lock().as_ref().map_or(0, |t| t.store.len())
}

/// The traceback (most recent frame first) of the block at `addr`, if traced.
pub fn block_traceback(py: Python<'_>, addr: usize) -> Option<Vec<(Filename, u32)>> {
    if !is_tracing() {
        return None;
    }
    let _own = OwnWork::begin();
    let frames: Vec<RawFrame> = {
        let state = STATE.lock();
        let t = state.as_ref()?;
        let (_, tb) = t.store.get(addr)?;
        t.tracebacks.frames(tb).to_vec()
    };
    let mut resolver = RESOLVER.lock();
    let resolver = resolver.get_or_insert_with(LineResolver::default);
    // SAFETY: the frames come from the traceback table, whose code objects the registry holds
    // until `clear`, which needs the GIL we hold.
    Some(frames.into_iter().map(|f| unsafe { resolver.resolve(py, f) }).collect())
}

/// A snapshot of every live trace, with line numbers resolved. `None` when not tracing.
pub fn take_snapshot(py: Python<'_>) -> Option<Snapshot> {
    if !is_tracing() {
        return None;
    }
    let _own = OwnWork::begin();
    // 1. Under the lock, only copy: (size, compact traceback id) per trace, and the frames of
    //    the tracebacks that live traces use.
    let (sizes, tracebacks, limit) = {
        let state = STATE.lock();
        let t = state.as_ref()?;
        let mut compact: Vec<u32> = vec![u32::MAX; t.tracebacks.len()];
        let mut used: Vec<(Vec<RawFrame>, u16)> = Vec::new();
        let mut sizes: Vec<(u64, u32)> = Vec::with_capacity(t.store.len());
        t.store.for_each(|size, tb| {
            let slot = &mut compact[tb as usize];
            if *slot == u32::MAX {
                *slot = used.len() as u32;
                used.push((t.tracebacks.frames(tb).to_vec(), t.tracebacks.total_nframe(tb)));
            }
            sizes.push((size, *slot));
        });
        (sizes, used, traceback_limit())
    };
    // 2. Outside the lock (allocations go on meanwhile): resolve each distinct frame once.
    let mut builder = SnapshotBuilder::new(limit as u32);
    let mut resolver = RESOLVER.lock();
    let resolver = resolver.get_or_insert_with(LineResolver::default);
    let mut frame_ids: FxHashMap<RawFrame, u32> = FxHashMap::default();
    let mut tb_ids = Vec::with_capacity(tracebacks.len());
    let mut ids = Vec::new();
    for (frames, total) in &tracebacks {
        ids.clear();
        for f in frames {
            let id = match frame_ids.get(f) {
                Some(&id) => id,
                None => {
                    // SAFETY: see `block_traceback`.
                    let (name, lineno) = unsafe { resolver.resolve(py, *f) };
                    let fid = builder.intern_shared_filename(&name);
                    let id = builder.intern_frame(fid, lineno);
                    frame_ids.insert(*f, id);
                    id
                }
            };
            ids.push(id);
        }
        tb_ids.push(builder.intern_traceback(&ids, *total as u32));
    }
    builder.reserve_traces(sizes.len());
    for (size, tb) in sizes {
        builder.push_trace(0, size, tb_ids[tb as usize]);
    }
    Some(builder.finish())
}

// ---- fork -------------------------------------------------------------------------------

/// The store's lock is taken around `fork()` so the child never inherits it held by a thread
/// that does not exist there.
fn register_fork_handlers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        extern "C" fn prepare() {
            // SAFETY: paired with the unlock in `after`, on the same thread.
            unsafe { STATE.raw().lock() };
        }
        extern "C" fn after() {
            // SAFETY: `prepare` locked it on this thread (the child has only this thread).
            unsafe { STATE.force_unlock() };
        }
        // SAFETY: registering plain functions that only touch our own static.
        unsafe { libc::pthread_atfork(Some(prepare), Some(after), Some(after)) };
    });
}
