//! The tracer: global tracing state shared by the allocator hooks and the Python API.
//!
//! Synchronisation, chosen for the hot path:
//! * The tables (live blocks, interned tracebacks, code registry) are touched **only by
//!   threads holding the main interpreter's GIL** — every MEM/OBJ allocation, most RAW ones
//!   and all API calls. The GIL already serialises those threads, so they take no lock of
//!   their own: an allocation costs no atomic read-modify-write at all. They live in
//!   [`GilCell`]s, reached with a [`MainGil`] token (`engine/gil.rs`): from the API's
//!   `Python<'_>`, or from the hooks' runtime check of the calling thread.
//! * A RAW allocation or free made without the GIL (a thread that released it, thread
//!   teardown) is queued in [`PENDING`] under a small mutex; the next GIL holder applies the
//!   queue before it touches the tables. A free is queued before the block is released and an
//!   allocation after it is obtained, so queued and direct operations on one address are
//!   always applied in the order they happened.
//! * Nothing that can call back into Python's allocators runs while the tables are borrowed
//!   (Rust's own allocations use the system `malloc`, which is not hooked); if something
//!   did, the re-entrant borrow would be refused, not aliased.
//!
//! One file per job: [`tables`] (the `Tracer` type: capture, interning, compaction),
//! [`events`] (what the allocator hooks call), [`operations`] (the tracemalloc API's
//! operations), [`snapshot`] (taking snapshots), [`fork`] (fork safety of the queue). This
//! module keeps the state they share and re-exports what the rest of the extension uses.

mod events;
mod fork;
mod operations;
mod snapshot;
mod tables;

pub use events::{
    allocated_untraced, block_plan, forget_headered, guards_nested, header_mode, on_alloc,
    on_alloc_headered, on_free, on_realloc, on_realloc_headered, on_sampled_alloc,
    realloc_plan, record_alloc, set_header_mode, set_nested, BlockPlan, HeaderPlan,
};
pub use events::{on_dead_object, on_new_object};
pub use operations::{
    block_traceback, blocks_at_site, blocks_through, clear, is_tracing, own_memory,
    release_orphans, release_unused, reset_peak, set_user_code_rules, start, stop,
    trace_count, traceback_limit, traced_memory,
};
pub use snapshot::{take_snapshot, take_totals};
use tables::{capture_without_gil, Tracer};

use crate::engine::code_registry::LineResolver;
use crate::engine::frames::{self, RawFrame};
use crate::engine::gil::{GilCell, MainGil};
use heaptrail_core::sites::SiteRules;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

pub const MAX_NFRAME: usize = 65535;

/// Fast check done by every hook before anything else.
static TRACING: AtomicBool = AtomicBool::new(false);
/// Set only in the child the holder analysis forks (`python_api/holders.rs`): every hook
/// passes straight through to the allocator, so the child never touches the tables or a lock
/// that a thread that vanished in the fork may have held. The tables stay readable (they are the parent's,
/// copied at the fork, consistent because the forking thread held the GIL).
static FORK_CHILD: AtomicBool = AtomicBool::new(false);

/// Called first thing in the analysis child (see [`FORK_CHILD`]).
pub fn enter_fork_child() {
    FORK_CHILD.store(true, Ordering::Relaxed);
}

#[inline]
fn hooks_off() -> bool {
    !TRACING.load(Ordering::Relaxed) || FORK_CHILD.load(Ordering::Relaxed)
}
/// `get_traceback_limit()`: kept after `stop()`, like tracemalloc.
static NFRAME: AtomicUsize = AtomicUsize::new(1);
/// The longest the last `take_snapshot` held the GIL without a break, in nanoseconds (the
/// application's longest pause).
static LAST_SNAPSHOT_PAUSE_NS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Bumped by every `clear`: code objects a snapshot copied may be released after it.
static GENERATION: AtomicUsize = AtomicUsize::new(0);

/// MEM and OBJ blocks get a header holding their trace (see `block_headers.rs`); decided by
/// `allocator_hooks::install`.
static HEADER_MODE: AtomicBool = AtomicBool::new(false);
/// Set by the main-GIL holder while a headered hook calls the allocator below it: RAW
/// allocations made meanwhile are part of that block and are not traced on their own.
static NESTED: AtomicBool = AtomicBool::new(false);

/// Longest stretch of work a snapshot does with the GIL held before letting other threads run.
const MAX_HOLD: std::time::Duration = std::time::Duration::from_millis(2);

/// Seconds the last snapshot held the GIL.
pub fn last_snapshot_pause() -> f64 {
    LAST_SNAPSHOT_PAUSE_NS.load(Ordering::Relaxed) as f64 / 1e9
}

/// The tables; `None` until the first `start()`.
static TRACER: GilCell<Option<Tracer>> = GilCell::new(None);
/// Line-number cache (used when snapshots are taken).
static RESOLVER: GilCell<Option<LineResolver>> = GilCell::new(None);
/// Which files are library code (`_set_user_code_rules`); `None` until set, and again after
/// `stop()`. See `Tracer::capture` for what it changes.
static USER_RULES: GilCell<Option<Arc<SiteRules>>> = GilCell::new(None);

/// Operations made without the GIL, waiting for the next GIL holder.
static PENDING: Mutex<Vec<PendingOp>> = Mutex::new(Vec::new());
static HAS_PENDING: AtomicBool = AtomicBool::new(false);

enum PendingOp {
    Alloc {
        addr: usize,
        size: usize,
        frames: Box<[RawFrame]>,
        total: u32,
    },
    Free {
        addr: usize,
    },
}

/// Runs `f` on the tracer's tables, first applying operations queued without the GIL. `None`
/// before the first `start()`, or if the tables are borrowed already further up this thread's
/// stack (`f` called into Python, which allocated: see [`GilCell`]).
#[inline]
fn with_tracer<R>(gil: MainGil<'_>, f: impl FnOnce(&mut Tracer) -> R) -> Option<R> {
    let mut slot = TRACER.borrow_mut(gil)?;
    let tracer = slot.as_mut()?;
    if HAS_PENDING.load(Ordering::Acquire) {
        tracer.apply_pending();
    }
    Some(f(tracer))
}

/// Runs `f` on the line-number cache (a fresh one if it is borrowed already further up this
/// thread's stack: resolving lines calls into Python, which can run a finalizer that asks
/// heaptrail for a traceback).
fn with_resolver<R>(gil: MainGil<'_>, f: impl FnOnce(&mut LineResolver) -> R) -> R {
    match RESOLVER.borrow_mut(gil) {
        Some(mut slot) => f(slot.get_or_insert_with(LineResolver::default)),
        None => f(&mut LineResolver::default()),
    }
}

fn queue(op: PendingOp) {
    let mut pending = PENDING.lock();
    pending.push(op);
    HAS_PENDING.store(true, Ordering::Release);
}


/// Marks the current thread as doing heaptrail's own work until dropped.
pub struct OwnWork(bool);

impl OwnWork {
    pub fn begin() -> Self {
        OwnWork(frames::set_busy(true))
    }
}

impl Drop for OwnWork {
    fn drop(&mut self) {
        frames::set_busy(self.0);
    }
}

/// Excludes (or re-includes) every allocation of the calling thread, e.g. heaptrail's own
/// background threads. Returns the previous setting.
pub fn set_thread_ignored(ignored: bool) -> bool {
    frames::set_busy(ignored)
}
