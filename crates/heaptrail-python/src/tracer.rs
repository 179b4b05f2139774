//! The tracer: global tracing state shared by the allocator hooks and the Python API.
//!
//! Synchronisation, chosen for the hot path:
//! * The tables (trace store, traceback table, code registry) are touched **only by threads
//!   holding the main interpreter's GIL** — every MEM/OBJ allocation, most RAW ones and all
//!   API calls. The GIL already serialises those threads, so they take no lock of their own:
//!   an allocation costs no atomic read-modify-write at all.
//! * A RAW allocation or free made without the GIL (a thread that released it, thread
//!   teardown) is queued in [`PENDING`] under a small mutex; the next GIL holder applies the
//!   queue before it touches the tables. A free is queued before the block is released and an
//!   allocation after it is obtained, so queued and direct operations on one address are
//!   always applied in the order they happened.
//! * Nothing that can call back into Python's allocators runs while the tables are borrowed
//!   (Rust's own allocations use the system `malloc`, which is not hooked).

use crate::allocator_hooks;
use crate::block_headers::{self, Header, HEADER};
use crate::code_registry::{self, CodeRegistry, LineResolver};
use crate::frames::{self, CurrentThread, RawFrame};
use crate::sampler;
use crate::trace_store::TraceStore;
use crate::traceback_table::{TbId, TracebackTable};
use heaptrail_core::model::{Function, NO_FUNCTION};
use heaptrail_core::sites::SiteRules;
use heaptrail_core::{Filename, Snapshot, SnapshotBuilder};
use parking_lot::lock_api::RawMutex as _;
use parking_lot::Mutex;
use pyo3::prelude::*;
use rustc_hash::FxHashMap;
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Once};

pub const MAX_NFRAME: usize = 65535;

/// Fast check done by every hook before anything else.
static TRACING: AtomicBool = AtomicBool::new(false);
/// Set only in the child the holder analysis forks (`holders.rs`): every hook passes straight
/// through to the allocator, so the child never touches the tables or a lock that a thread
/// that vanished in the fork may have held. The tables stay readable (they are the parent's,
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

/// State accessed only with the main interpreter's GIL held.
struct GilGuarded<T>(UnsafeCell<T>);
// SAFETY: every access goes through `with_tracer`/`RESOLVER` users that hold the GIL, which
// serialises them.
unsafe impl<T> Sync for GilGuarded<T> {}

static TRACER: GilGuarded<Option<Tracer>> = GilGuarded(UnsafeCell::new(None));
/// Line-number cache, also GIL-only (used when snapshots are taken).
static RESOLVER: GilGuarded<Option<LineResolver>> = GilGuarded(UnsafeCell::new(None));
/// Which files are library code (`_set_user_code_rules`), GIL-only; `None` until set, and again
/// after `stop()`. See `Tracer::capture` for what it changes.
static USER_RULES: GilGuarded<Option<Arc<SiteRules>>> = GilGuarded(UnsafeCell::new(None));

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

/// Runs `f` on the tracer's tables, first applying operations queued without the GIL.
///
/// # Safety
/// The calling thread holds the main interpreter's GIL, and `f` does not call into Python
/// (which could re-enter the hooks while the tables are borrowed).
unsafe fn with_tracer<R>(f: impl FnOnce(&mut Tracer) -> R) -> Option<R> {
    let tracer = (*TRACER.0.get()).as_mut()?;
    if HAS_PENDING.load(Ordering::Acquire) {
        tracer.apply_pending();
    }
    Some(f(tracer))
}

/// # Safety
/// GIL held; no other reference to the resolver is alive.
unsafe fn resolver() -> &'static mut LineResolver {
    (*RESOLVER.0.get()).get_or_insert_with(LineResolver::default)
}

/// Memo of stack depths below a frame (3.11 only, where the interpreter keeps no count).
#[cfg_attr(Py_3_12, allow(dead_code))]
const DEPTH_MEMO_SIZE: usize = 4096;

/// Cache of code object -> "is library code" for the user-frame walk (see
/// `Tracer::user_frame_below`): direct-mapped by address. Entries name code objects the
/// registry holds, so they stay valid until `clear`, which empties the cache.
const LIBRARY_CACHE_SIZE: usize = 512;

#[cfg_attr(Py_3_12, allow(dead_code))]
#[derive(Clone, Copy, Default)]
struct DepthMemo {
    frame: usize,
    previous: usize,
    code: usize,
    depth: u32,
}

struct Tracer {
    store: TraceStore,
    tracebacks: TracebackTable,
    codes: CodeRegistry,
    /// Capture buffer, `nframe` long.
    scratch: Vec<RawFrame>,
    depth_memo: Vec<DepthMemo>,
    library_cache: Vec<(usize, bool)>,
    /// User-code rules are in force (`codes` has them): tracebacks of library frames only are
    /// completed with the user's frame beyond the limit.
    user_rules: bool,
    /// Generation of the current traces in block headers (never 0, which marks a header that
    /// holds no trace); `clear` moves to the next one, forgetting every headered trace at once.
    gen: u32,    /// Compact the traceback table when it holds this many tracebacks (see `compact`).
    compact_at: usize,
    /// Compactions so far: traceback ids read before a change may name other tracebacks.
    compactions: u64,
}

/// The traceback table is compacted when it has grown by this many tracebacks, or doubled,
/// since the last compaction: the memory heaptrail keeps for tracebacks (and the code objects
/// they hold) no live block uses is bounded by about this many.
const COMPACT_MIN: usize = 2048;

impl Tracer {
    fn new(nframe: usize) -> Self {
        Tracer {
            store: TraceStore::default(),
            tracebacks: TracebackTable::default(),
            codes: CodeRegistry::default(),
            scratch: vec![RawFrame::UNKNOWN; nframe],
            depth_memo: Vec::new(),
            library_cache: Vec::new(),
            user_rules: false,
            gen: 1,
            compact_at: COMPACT_MIN,
            compactions: 0,
        }
    }

    /// Puts `rules` in force: classifies the held code objects again and re-flags the interned
    /// tracebacks (GIL held).
    fn set_user_rules(&mut self, rules: Option<Arc<SiteRules>>) {
        // SAFETY: GIL held (we have the tracer); the registry owns its code objects.
        unsafe { self.codes.set_rules(rules) };
        self.user_rules = self.codes.has_rules();
        self.library_cache.clear();
        let (codes, on) = (&mut self.codes, self.user_rules);
        self.tracebacks.reflag(|frames, total| {
            // SAFETY: as above; every frame of an interned traceback is held already.
            on && needs_user_frame(frames, total, |c| unsafe { codes.is_library(c) })
        });
    }

    /// The innermost frame of user code at or below `rest` (the first frame a capture did not
    /// copy), walked every time: a memo keyed by `rest` (as `depth_below` is) would be wrong
    /// here, since two calls from different lines of one user function can run the very same
    /// library frames at the same addresses. Whether a code object is library code comes from
    /// a small cache in front of the registry.
    ///
    /// # Safety
    /// `rest` is a live frame of the calling thread, which holds the GIL.
    #[inline(never)]
    unsafe fn user_frame_below(&mut self, rest: frames::InterpreterFrame) -> Option<RawFrame> {
        if self.library_cache.is_empty() {
            self.library_cache = vec![(0, true); LIBRARY_CACHE_SIZE];
        }
        let mut frame = rest;
        while let Some((raw, next)) = frames::next_complete_frame(frame) {
            let code = raw.code as usize;
            let slot = (code >> 4) % LIBRARY_CACHE_SIZE;
            let library = match self.library_cache[slot] {
                (c, library) if c == code && code != 0 => library,
                _ => {
                    // Holds the code object (alive on this stack): the cache entry stays
                    // valid until `clear`.
                    let library = self.codes.is_library(raw.code);
                    self.library_cache[slot] = (code, library);
                    library
                }
            };
            if !library {
                return Some(raw);
            }
            frame = next;
        }
        None
    }

    /// Depth of the stack from `rest` down, memoised by the frame's address, its caller and
    /// its code: a frame's callers cannot change while it runs, so while those three match,
    /// the depth below it does too (a frame reused at the same address, with the same code
    /// and the same caller address, is the one case that can fool it, and only by a count).
    ///
    /// # Safety
    /// `rest` is a live frame of the calling thread, `identity` its `(previous, code)`.
    #[cfg_attr(Py_3_12, allow(dead_code))]
    unsafe fn depth_below(&mut self, rest: frames::InterpreterFrame, identity: [usize; 2]) -> u32 {
        if self.depth_memo.is_empty() {
            self.depth_memo = vec![DepthMemo::default(); DEPTH_MEMO_SIZE];
        }
        let [previous, code] = identity;
        let slot = &mut self.depth_memo[(rest as usize >> 4) % DEPTH_MEMO_SIZE];
        if slot.frame == rest as usize && slot.previous == previous && slot.code == code {
            return slot.depth;
        }
        let depth = frames::count_frames(rest);
        *slot = DepthMemo {
            frame: rest as usize,
            previous,
            code,
            depth,
        };
        depth
    }

    /// Captures the calling thread's stack (it holds the GIL) and interns it.
    ///
    /// With user-code rules in force, a traceback whose frames are all library code while the
    /// stack goes deeper (an ORM's stack longer than the frame limit) gets the innermost user
    /// frame below them in place of its last frame: the watcher's site is then the user's
    /// line, however deep the library. The traceback stays `nframe` long and its total depth
    /// unchanged. Such tracebacks are flagged when interned, so any other costs one branch.
    #[inline]
    fn capture(&mut self, thread: CurrentThread) -> TbId {
        // SAFETY: `thread` is the calling thread (see `frames::capture`).
        let cap = unsafe { frames::capture(thread, &mut self.scratch) };
        let total = cap.total_nframe;
        // 3.11: the interpreter keeps no count of the frames below the copied ones.
        #[cfg(not(Py_3_12))]
        let total = if cap.rest.is_null() {
            total
        } else {
            // SAFETY: `rest` is a frame of this thread's stack, just walked.
            (total + unsafe { self.depth_below(cap.rest, cap.rest_identity) })
                .min(MAX_NFRAME as u32)
        };
        let n = cap.nframe;
        let id = self.intern(n, total, true);
        if self.user_rules && !cap.rest.is_null() && self.tracebacks.needs_user_frame(id) {
            // SAFETY: `rest` is a frame of this thread's stack, below those just copied.
            if let Some(user) = unsafe { self.user_frame_below(cap.rest) } {
                self.scratch[n - 1] = user;
                return self.intern(n, total, true);
            }
        }
        id
    }

    /// Interns the first `n` frames of `scratch`. `may_hold`: the GIL holder captured them
    /// from its own live stack, so their code objects are alive and may be referenced.
    #[inline]
    fn intern(&mut self, n: usize, total: u32, may_hold: bool) -> TbId {
        if n > 0 {
            let total = total.min(u16::MAX as u32) as u16;
            if let Some(id) = self.tracebacks.find(&self.scratch[..n], total) {
                return id; // the common case: a traceback seen before
            }
        }
        self.intern_slow(n, total, may_hold)
    }

    #[inline(never)]
    fn intern_slow(&mut self, mut n: usize, mut total: u32, may_hold: bool) -> TbId {
        if n == 0 {
            // No Python frame (a C thread, thread teardown): tracemalloc's "<unknown>:0".
            self.scratch[0] = RawFrame::UNKNOWN;
            n = 1;
            total = 1;
        }
        let total = total.min(u16::MAX as u32) as u16;
        if self.tracebacks.find(&self.scratch[..n], total).is_none()
            && self.tracebacks.live_len() >= self.compact_at
        {
            // Before this traceback's code objects are held: they are not yet in the table.
            self.compact();
        }
        let frames = &mut self.scratch[..n];
        if let Some(id) = self.tracebacks.find(frames, total) {
            return id;
        }
        let mut flag = false;
        if may_hold {
            for f in frames.iter() {
                // SAFETY: GIL held; the code object is alive on this thread's stack.
                unsafe { self.codes.hold(f.code) };
            }
            if self.user_rules {
                let codes = &mut self.codes;
                // SAFETY: as above (all held now).
                flag = needs_user_frame(frames, total, |c| unsafe { codes.is_library(c) });
            }
        } else {
            // Frames captured without the GIL: their code objects may have died since, so
            // only those already held can be named; the others become "<unknown>".
            for f in frames.iter_mut() {
                if !self.codes.is_held(f.code) {
                    *f = RawFrame::UNKNOWN;
                }
            }
            if let Some(id) = self.tracebacks.find(frames, total) {
                return id;
            }
        }
        self.tracebacks.insert_new(frames, total, flag)
    }

    /// Drops the tracebacks no live trace uses (their ids are reused) and lets go of the code
    /// objects only they named; the caches keyed by code address are emptied. Runs inside
    /// the hooks with the GIL held, when the table has grown by [`COMPACT_MIN`] or doubled
    /// since the last time, so its cost (linear in the table) is paid once per that many new
    /// tracebacks. Without it, code compiled on the fly (`exec` of generated source, template
    /// engines) would leave a traceback and a held code object per snippet, forever.
    #[inline(never)]
    fn compact(&mut self) {
        let unused = self.drop_unused();
        code_registry::defer_release(unused);
    }

    /// `compact` without the release: returns the code objects to let go of.
    fn drop_unused(&mut self) -> Vec<usize> {
        self.compactions += 1;
        let totals = self.store.totals();
        self.tracebacks
            .retain(|id| totals.get(id as usize).is_some_and(|&(_, blocks)| blocks > 0));
        let used: rustc_hash::FxHashSet<usize> = self
            .tracebacks
            .all_frames()
            .map(|f| f.code as usize)
            .collect();
        let unused = self.codes.take_unused(&used);
        if !unused.is_empty() {
            self.depth_memo.clear();
            self.library_cache.clear();
        }
        self.compact_at = (2 * self.tracebacks.live_len()).max(self.tracebacks.live_len() + COMPACT_MIN);
        unused
    }

    /// Forgets the code objects only heaptrail references (see
    /// [`CodeRegistry::take_orphans`]), first erasing their frames from every traceback, and
    /// returns them to let go of. A block they own dies with them; a block allocated by one of
    /// them and kept elsewhere stays traced, its frames of that code reading `<unknown>`.
    ///
    /// # Safety
    /// The calling thread holds the GIL.
    unsafe fn take_orphans(&mut self) -> Vec<usize> {
        // SAFETY: the caller holds the GIL.
        let orphans = unsafe { self.codes.take_orphans() };
        if !orphans.is_empty() {
            let set: rustc_hash::FxHashSet<usize> = orphans.iter().copied().collect();
            self.tracebacks.erase_codes(&set);
            self.depth_memo.clear();
            self.library_cache.clear();
        }
        orphans
    }

    fn apply_pending(&mut self) {
        let ops = {
            let mut pending = PENDING.lock();
            HAS_PENDING.store(false, Ordering::Release);
            std::mem::take(&mut *pending)
        };
        for op in ops {
            match op {
                PendingOp::Alloc {
                    addr,
                    size,
                    frames,
                    total,
                } => {
                    let n = frames.len().min(self.scratch.len());
                    self.scratch[..n].copy_from_slice(&frames[..n]);
                    let tb = self.intern(n, total, false);
                    self.table_add(addr, size, tb, true);
                }
                PendingOp::Free { addr } => {
                    self.table_remove(addr);
                }
            }
        }
    }

    /// Adds a trace to the table, keeping sampled mode's free filter in step (`noted`: the
    /// filter counts it already, as it does a queued allocation from the moment it is queued).
    fn table_add(&mut self, addr: usize, size: usize, tb: TbId, noted: bool) {
        let replaced = self.store.add(addr, size, tb);
        if sampler::sampling() {
            match (replaced, noted) {
                (true, true) => sampler::left(addr),
                (false, false) => sampler::entered(addr),
                _ => {}
            }
        }
    }

    /// Removes the table's trace of `addr`, if any; true if there was one.
    fn table_remove(&mut self, addr: usize) -> bool {
        let removed = self.store.remove(addr);
        if removed && sampler::sampling() {
            sampler::left(addr);
        }
        removed
    }

    /// Forgets the trace of `block`, whose object is dead but whose memory CPython may keep
    /// parked in a free list instead of freeing it.
    fn forget_dead(&mut self, block: usize) {
        if block_headers::is_marked(block) {
            // SAFETY: marked, so live and headered; GIL held (we have `self`).
            let mut h = unsafe { block_headers::read(block) };
            if h.gen == self.gen {
                self.store.count_out(h.size, h.tb);
                h.gen = 0;
                // SAFETY: as above.
                unsafe { block_headers::write(block, h) };
            }
        } else if !sampler::sampling() || sampler::may_be_in_table(block) {
            self.table_remove(block);
        }
    }

    /// Forgets every traced block parked in CPython 3.13's free lists: dead, though the
    /// reference tracer did not always say so (`csrc/parked_blocks.c`). Called before the
    /// traces are reported. Nothing to do before 3.13.
    fn forget_parked(&mut self) {
        frames::for_each_parked_block(|block| self.forget_dead(block));
    }

    /// Calls `f(block address, size, traceback)` for every live trace kept in a block header.
    fn for_each_headered(&self, mut f: impl FnMut(usize, u64, TbId)) {
        if self.store.headered_len() == 0 {
            return;
        }
        block_headers::for_each_marked(|q| {
            // SAFETY: marked blocks are live; the caller holds the GIL (it has `self`).
            let h = unsafe { block_headers::read(q) };
            if h.gen == self.gen {
                f(q, h.size, h.tb);
            }
        });
    }

    /// The trace of the block at `addr`: `(size, traceback)`.
    fn trace_of(&self, addr: usize) -> Option<(u64, TbId)> {
        if block_headers::is_marked(addr) {
            // SAFETY: marked, so live and headered; GIL held (we have `self`).
            let h = unsafe { block_headers::read(addr) };
            return (h.gen == self.gen).then_some((h.size, h.tb));
        }
        self.store.get(addr)
    }

    fn heap_bytes(&self) -> usize {
        self.store.heap_bytes()
            + self.store.headered_len() * HEADER
            + block_headers::node_bytes()
            + self.tracebacks.heap_bytes()
            + self.codes.heap_bytes()
            + (self.scratch.capacity() * std::mem::size_of::<RawFrame>())
            + self.depth_memo.capacity() * std::mem::size_of::<DepthMemo>()
            + self.library_cache.capacity() * std::mem::size_of::<(usize, bool)>()
    }
}

/// A traceback of library frames only, cut short by the frame limit: the tracer looks further
/// down the stack for the user's frame (see `Tracer::capture`).
fn needs_user_frame(
    frames: &[RawFrame],
    total: u16,
    mut is_library: impl FnMut(*mut pyo3::ffi::PyCodeObject) -> bool,
) -> bool {
    !frames.is_empty()
        && (total as usize) > frames.len()
        && frames.iter().all(|f| is_library(f.code))
}

fn queue(op: PendingOp) {
    let mut pending = PENDING.lock();
    pending.push(op);
    HAS_PENDING.store(true, Ordering::Release);
}

/// Captures the stack of a thread that does not hold the GIL into a new buffer.
fn capture_without_gil(thread: CurrentThread) -> (Box<[RawFrame]>, u32) {
    let mut buf = vec![RawFrame::UNKNOWN; NFRAME.load(Ordering::Relaxed)];
    // SAFETY: `thread` is the calling thread.
    let cap = unsafe { frames::capture(thread, &mut buf) };
    let total = cap.total_nframe;
    #[cfg(not(Py_3_12))]
    let total = if cap.rest.is_null() {
        total
    } else {
        // SAFETY: a frame of this thread's own stack.
        total + unsafe { frames::count_frames(cap.rest) }
    };
    buf.truncate(cap.nframe);
    (buf.into_boxed_slice(), total)
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

// ---- called by the allocator hooks -------------------------------------------------------

pub fn on_alloc(addr: usize, size: usize) {
    allocated(addr, size, true);
}

/// A MEM/OBJ block the sampler has drawn already, traced in the table (see
/// [`BlockPlan::Table`]).
pub fn on_sampled_alloc(addr: usize, size: usize) {
    allocated(addr, size, false);
}

/// A MEM/OBJ block handed out untraced (sampled mode did not draw it). Still the thread's
/// latest allocation: that tells a new object's fresh block from one reused from a free list
/// (3.13, [`on_new_object`]).
#[inline]
pub fn allocated_untraced(_addr: usize) {
    #[cfg(Py_3_13)]
    frames::swap_last_alloc(_addr);
}

/// A new block at `addr`; `draw`: in sampled mode the sampler decides whether it is traced.
#[inline]
fn allocated(addr: usize, size: usize, draw: bool) {
    if hooks_off() {
        return;
    }
    // The block this thread allocated last: a new object in it needs no re-stamping (3.13).
    #[cfg(Py_3_13)]
    frames::swap_last_alloc(addr);
    let thread = frames::current_thread();
    if thread.busy || (thread.holds_gil && NESTED.load(Ordering::Relaxed)) {
        // Own work, or part of a block being allocated above us (see `NESTED`): not an
        // allocation of its own, not even one for the sampler to count.
        return;
    }
    if draw && sampler::sampling() && !sampler::take(size) {
        return;
    }
    record_alloc(thread, addr, size);
}

/// Traces the block at `addr` in the table: an allocation that is traced (sampled, in
/// sampled mode), by the calling `thread`.
pub fn record_alloc(thread: CurrentThread, addr: usize, size: usize) {
    if thread.holds_gil {
        // SAFETY: GIL held; the closure stays in Rust.
        unsafe {
            with_tracer(|t| {
                let tb = t.capture(thread);
                t.table_add(addr, size, tb, false);
            })
        };
    } else {
        if sampler::sampling() {
            sampler::entered(addr); // counted from now: a free may come before the queue runs
        }
        let (frames, total) = capture_without_gil(thread);
        queue(PendingOp::Alloc {
            addr,
            size,
            frames,
            total,
        });
    }
}

/// The go-ahead for a headered allocation: tracing, headers in use, and the calling thread
/// holds the main GIL and is not doing heaptrail's own work.
#[derive(Clone, Copy)]
pub struct HeaderPlan {
    pub thread: CurrentThread,
}

#[inline]
pub fn header_plan() -> Option<HeaderPlan> {
    if hooks_off() || !HEADER_MODE.load(Ordering::Relaxed) {
        return None;
    }
    let thread = frames::current_thread();
    (thread.holds_gil && !thread.busy).then_some(HeaderPlan { thread })
}

/// What to do with a new MEM/OBJ block of `size` bytes.
pub enum BlockPlan {
    /// Traced, in a header (exact mode; see [`header_plan`]).
    Header(HeaderPlan),
    /// Traced in the table if at all (headers off, no GIL, own work): [`on_alloc`] decides,
    /// or, when `sampled`, the sampler has already drawn it ([`on_sampled_alloc`]).
    /// `nest`: the RAW blocks the allocator below takes for it must not be decided on again
    /// (sampled mode, with the GIL: see `allocator_hooks::below`).
    Table { nest: bool, sampled: bool },
    /// Not sampled: handed out as it comes, no header, no trace; `nest` as for `Table`.
    Skip { nest: bool },
}

/// pymalloc serves requests up to this many bytes from its own pools, never through the RAW
/// domain (3.8+): such a block needs no guard against nested RAW allocations. (Mirrored by
/// HT_SMALL_REQUEST in `csrc/sampled_fast_path.c`.)
const SMALL_REQUEST: usize = 512;

#[inline]
pub fn block_plan(size: usize) -> BlockPlan {
    if !sampler::sampling() {
        return match header_plan() {
            Some(plan) => BlockPlan::Header(plan),
            None => BlockPlan::Table { nest: false, sampled: false },
        };
    }
    if hooks_off() {
        return BlockPlan::Table { nest: false, sampled: false }; // on_alloc returns at once
    }
    // Sampled mode. Sampled blocks go to the table, never to a header: with no header in
    // use, a free needs no bitmap lookup (and the C fast path answers most of them).
    if size <= SMALL_REQUEST {
        return if sampler::take(size) {
            BlockPlan::Table { nest: false, sampled: true }
        } else {
            BlockPlan::Skip { nest: false }
        };
    }
    // A bigger one is decided here, once, its RAW blocks guarded (by the GIL holder, whose
    // flag NESTED is); without the GIL or in own work, `on_alloc` decides.
    let thread = frames::current_thread();
    if !thread.holds_gil || thread.busy {
        return BlockPlan::Table { nest: thread.holds_gil, sampled: false };
    }
    if sampler::take(size) {
        BlockPlan::Table { nest: true, sampled: true }
    } else {
        BlockPlan::Skip { nest: true }
    }
}

/// Whether the RAW blocks the allocator takes for a MEM/OBJ block being allocated now are
/// guarded against a second sampling decision: sampled mode, on the GIL holder.
#[inline]
pub fn guards_nested() -> bool {
    sampler::sampling() && !hooks_off() && frames::current_thread().holds_gil
}

/// The plan for a headered block reallocated to `size` bytes: a new trace (sampled afresh in
/// sampled mode: a reallocation is a new allocation) or an untraced header.
#[inline]
pub fn realloc_plan(size: usize) -> Option<HeaderPlan> {
    header_plan().filter(|_| !sampler::sampling() || sampler::take(size))
}

pub fn set_header_mode(on: bool) {
    HEADER_MODE.store(on, Ordering::Relaxed);
}

pub fn header_mode() -> bool {
    HEADER_MODE.load(Ordering::Relaxed)
}

/// See [`NESTED`]. Called only on a headered path, by the main-GIL holder.
#[inline]
pub fn set_nested(on: bool) {
    NESTED.store(on, Ordering::Relaxed);
}

/// Records the trace of the new headered block `q` in its header.
///
/// # Safety
/// `q` is marked and `q - HEADER` starts a live block of `size + HEADER` bytes; `plan` was
/// made on this thread for this allocation (so the main GIL is held).
pub unsafe fn on_alloc_headered(q: usize, size: usize, plan: HeaderPlan) {
    #[cfg(Py_3_13)]
    frames::swap_last_alloc(q);
    let traced = with_tracer(|t| {
        let tb = t.capture(plan.thread);
        block_headers::write(
            q,
            Header {
                size: size as u64,
                tb,
                gen: t.gen,
            },
        );
        t.store.count_in(size as u64, tb);
    });
    if traced.is_none() {
        block_headers::write(q, Header::untraced(size));
    }
}

/// Writes the header of a headered block just moved or resized by realloc: a new trace when
/// `plan` says so, else an untraced header.
///
/// # Safety
/// As for [`on_alloc_headered`], with `plan` made on this thread for this reallocation.
pub unsafe fn on_realloc_headered(q: usize, size: usize, plan: Option<HeaderPlan>) {
    match plan {
        Some(plan) => on_alloc_headered(q, size, plan),
        None => block_headers::write(q, Header::untraced(size)),
    }
}

/// Called when a headered block whose header is `header` is released (or moved). The caller
/// holds the main GIL, as every MEM/OBJ free must (see `block_headers.rs`).
#[inline]
pub fn forget_headered(header: Header) {
    if header.gen == 0 || FORK_CHILD.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: GIL held (above); the closure stays in Rust.
    unsafe {
        with_tracer(|t| {
            if header.gen == t.gen {
                t.store.count_out(header.size, header.tb);
            }
        })
    };
}

/// Called after the real realloc. (Without the GIL, the old address is queued as freed only
/// now, so a racing allocation that reuses it at once could lose its trace: rare, RAW only.)
pub fn on_realloc(old: usize, new: usize, size: usize) {
    if old != 0 {
        on_free(old);
    }
    on_alloc(new, size);
}

/// Called *before* the block is released (see the module comment).
#[inline]
pub fn on_free(addr: usize) {
    // Frees are honoured even on ignored threads: a freed block must never stay listed.
    if hooks_off() {
        return;
    }
    if sampler::sampling() && !sampler::may_be_in_table(addr) {
        return; // never sampled: the common case in sampled mode, no lock, no probe
    }
    if frames::current_thread().holds_gil {
        // SAFETY: GIL held; the closure stays in Rust.
        unsafe { with_tracer(|t| t.table_remove(addr)) };
    } else {
        queue(PendingOp::Free { addr });
    }
}

/// A new object was initialised in `block` (3.13+ reference tracer, GIL held). When it came
/// from a free list, no allocation happened: re-stamp the block with the current traceback,
/// as tracemalloc does, so the object is blamed on the line that created it. A reused block
/// that holds no trace (heaptrail's own object parked it there, or it was parked before
/// tracing began) is traced from now on when its size is known: from its header, or `size`
/// (non-zero for the free-list types, computed by the C shim). stdlib tracemalloc leaves
/// such blocks untraced. In sampled mode a reused block is counted by the sampler as the
/// allocation it stands in for, and traced if that holds a sample point.
///
/// `just_allocated`: the block is the thread's latest allocation, so the object in it is
/// already stamped (or was counted by the sampler). The match can be stale — the thread's
/// latest allocation was not an object (a dict's key table), was freed, and another thread's
/// object was allocated at that address and then parked in a free list — so a headered block
/// is skipped only if it holds a live trace.
#[allow(dead_code)] // only called on 3.13+
pub fn on_new_object(block: usize, size: usize, just_allocated: bool) {
    if hooks_off() {
        return;
    }
    if sampler::sampling()
        && (just_allocated || size == 0)
        && !block_headers::is_marked(block)
        && !sampler::may_be_in_table(block)
    {
        // Untraced, and counted (not drawn) when allocated, or of a size not known here.
        // (A block reused from a free list is counted and maybe drawn below.)
        return;
    }
    let thread = frames::current_thread();
    if !thread.holds_gil {
        return;
    }
    let own_work = thread.busy;
    // SAFETY: GIL held; the closure stays in Rust.
    unsafe {
        with_tracer(|t| {
            let sampled = sampler::sampling();
            if block_headers::is_marked(block) {
                let mut h = block_headers::read(block);
                let live = h.gen == t.gen;
                // Sampled mode re-stamps only sampled blocks: tracing another would count a
                // block that was not drawn.
                if (just_allocated && live) || (!live && (own_work || sampled)) {
                    return;
                }
                if live {
                    t.store.count_out(h.size, h.tb);
                }
                if own_work {
                    h.gen = 0;
                } else {
                    // Also a block that held no trace: an object heaptrail's own work made and
                    // dropped into a free list. Left untraced, every object of the program
                    // re-initialised there would be invisible (on 3.13 the watcher's windows
                    // fill the tuple free list, and most tuples a leak kept went unseen).
                    h.tb = t.capture(thread);
                    h.gen = t.gen;
                    t.store.count_in(h.size, h.tb);
                }
                block_headers::write(block, h);
            } else if just_allocated {
                // Stamped by the allocation (or deliberately left untraced, or counted by the
                // sampler and not drawn).
            } else if t.store.get(block).is_some() {
                if own_work {
                    // heaptrail's own object now lives there: like its allocations, untraced.
                    t.table_remove(block);
                } else if sampled {
                    // A sampled block reused without its object's death being seen (CPython
                    // 3.13.0-3.13.2's eval loop deallocates without telling the reference
                    // tracer; specialized float operations still do). The new object is a new
                    // allocation for the sampler: inheriting the old sample would keep a block
                    // sampled through all its reuses.
                    t.table_remove(block);
                    if size > 0 && sampler::take(size) {
                        let tb = t.capture(thread);
                        t.table_add(block, size, tb, false);
                    }
                } else {
                    let tb = t.capture(thread);
                    t.store.retag(block, tb);
                }
            } else if size > 0 && !own_work && (!sampled || sampler::take(size)) {
                let tb = t.capture(thread);
                t.table_add(block, size, tb, false);
            }
        })
    };
}

/// An object of a free-list type is being deallocated (3.13+ reference tracer, GIL held):
/// its block is forgotten now, because the deallocator may park it in a free list instead of
/// freeing it, and a parked object is dead. (stdlib tracemalloc keeps such blocks traced at
/// their last creation line: a line making many temporary tuples then looks as if it kept
/// up to 2000 of them.) The block is traced again when an object is re-initialised in it
/// ([`on_new_object`]: from its header, or with the size the C shim computes).
#[allow(dead_code)] // only called on 3.13+
pub fn on_dead_object(block: usize) {
    if hooks_off()
        || (sampler::sampling()
            && !block_headers::is_marked(block)
            && !sampler::may_be_in_table(block))
        || !frames::current_thread().holds_gil
    {
        return;
    }
    // SAFETY: GIL held; the closure stays in Rust.
    unsafe { with_tracer(|t| t.forget_dead(block)) };
}

// ---- the Python API's operations (GIL held: they take `Python<'_>`) -------------------------

pub fn is_tracing() -> bool {
    TRACING.load(Ordering::Relaxed)
}

pub fn traceback_limit() -> usize {
    NFRAME.load(Ordering::Relaxed)
}

/// Starts tracing with up to `nframe` frames per traceback, every allocation (`sample` 0) or
/// sampled by bytes at mean rate `sample`; if already tracing, only the limit changes (as with
/// tracemalloc). The mode cannot change while tracing: a trace's weight follows from the rate
/// in force.
pub fn start(py: Python<'_>, nframe: usize, sample: u64) -> Result<(), String> {
    if TRACING.load(Ordering::Relaxed) {
        let now = sampler::rate().map_or(0, |r| r.bytes());
        if now != sample {
            let mode = |r: u64| if r == 0 { "exact".to_string() } else { format!("sampled (sample={r})") };
            return Err(format!(
                "heaptrail is already tracing in {} mode; stop() first to trace in {} mode",
                mode(now),
                mode(sample)
            ));
        }
    }
    register_fork_handlers();
    frames::init();
    let _own = OwnWork::begin();
    // Stdlib tracemalloc hooked below us would see headered blocks 16 bytes bigger and at
    // another address: no headers then (see `allocator_hooks::install`).
    let stdlib_tracing = py
        .import("_tracemalloc")
        .and_then(|m| m.call_method0("is_tracing"))
        .and_then(|r| r.is_truthy())
        .unwrap_or(true);
    NFRAME.store(nframe, Ordering::Relaxed);
    // SAFETY: GIL held; no Python call while the slot is borrowed.
    unsafe {
        let slot = &mut *TRACER.0.get();
        match slot.as_mut() {
            Some(t) => t.scratch.resize(nframe, RawFrame::UNKNOWN),
            None => {
                let mut t = Tracer::new(nframe);
                t.set_user_rules((*USER_RULES.0.get()).clone());
                *slot = Some(t);
            }
        }
        if !TRACING.load(Ordering::Relaxed) {
            // Not tracing: the store is empty (stop() cleared it), so the rate may change.
            sampler::set_rate(sample);
            if let Some(t) = slot.as_mut() {
                t.store.set_rate(sampler::rate());
            }
        }
    }
    if !TRACING.load(Ordering::Relaxed) {
        // SAFETY: GIL held, hooks not installed by us while not tracing.
        unsafe { allocator_hooks::install(!stdlib_tracing) };
        TRACING.store(true, Ordering::Relaxed);
        // 3.11/3.12: every dict, list and tuple created from now on is allocated, not popped
        // from a free list (see csrc/free_list_bypass.c), so that it is blamed on the line
        // that created it. Sampled mode too, although it costs ~5% of an allocation-heavy
        // loop: without it, a sampled temporary parked in a free list and popped by a line
        // that keeps it stays blamed on the temporary's line, and a leak fed from a free list
        // (a request that frees ten dicts and keeps one) is named at the churn's line
        // (bench_sampled_accuracy: a line of temporaries read +110% live, the line that kept
        // its dicts +40%).
        frames::set_free_list_bypass(true);
    }
    Ok(())
}

/// Which files are library code for the user-frame search of `Tracer::capture` (fnmatch
/// patterns, as the watcher computes them); all empty: no rules, tracebacks as tracemalloc's.
/// In force until `stop()`.
pub fn set_user_code_rules(
    _py: Python<'_>,
    library: &[String],
    include: &[String],
    exclude: &[String],
) {
    let rules = SiteRules::from_patterns(library, include, exclude);
    let rules = (!rules.is_empty()).then(|| Arc::new(rules));
    let _own = OwnWork::begin();
    // SAFETY: GIL held; no Python call while the slot is borrowed.
    unsafe {
        *USER_RULES.0.get() = rules.clone();
        with_tracer(|t| t.set_user_rules(rules));
    }
}

/// Stops tracing and forgets every trace.
pub fn stop(py: Python<'_>) {
    if !TRACING.swap(false, Ordering::Relaxed) {
        return;
    }
    // SAFETY: GIL held.
    unsafe { allocator_hooks::uninstall() };
    frames::set_free_list_bypass(false);
    // SAFETY: GIL held; no Python call while the slots are borrowed.
    unsafe {
        *USER_RULES.0.get() = None;
        with_tracer(|t| t.set_user_rules(None));
    }
    clear(py);
}

/// Forgets every trace (tracing continues).
pub fn clear(py: Python<'_>) {
    let _own = OwnWork::begin();
    // SAFETY: GIL held; the closure stays in Rust.
    let codes = unsafe {
        with_tracer(|t| {
            t.store.clear();
            t.tracebacks.clear();
            t.depth_memo.clear();
            t.library_cache.clear();
            t.gen = t.gen.checked_add(1).unwrap_or(1);
            t.codes.take()
        })
    }
    .unwrap_or_default();
    PENDING.lock().clear();
    if sampler::sampling() {
        sampler::forget_all();
    }
    GENERATION.fetch_add(1, Ordering::Relaxed);
    // SAFETY: GIL held.
    unsafe { resolver().clear() };
    // After the tables are released: dropping a code object frees memory through the hooks.
    code_registry::release(py, codes);
}

/// Compacts the traceback table now and lets go at once of the code objects only the dropped
/// tracebacks named. (The hooks do this in batches, every [`COMPACT_MIN`] new tracebacks, and
/// release from a pending call.) For a caller that measures growth window by window over a
/// few iterations, the pytest plugin: code compiled by each iteration (`exec`) must not look
/// like the program's memory because heaptrail still holds it. GIL held, outside the hooks.
pub fn release_unused(py: Python<'_>) {
    let _own = OwnWork::begin();
    // Letting go of one code object can free blocks whose tracebacks named others, which
    // then become unused or orphaned in turn: a few rounds, until nothing changes.
    for _ in 0..4 {
        // SAFETY: GIL held; the closures stay in Rust.
        let mut codes = unsafe { with_tracer(|t| t.drop_unused()) }.unwrap_or_default();
        codes.extend(unsafe { with_tracer(|t| t.take_orphans()) }.unwrap_or_default());
        if codes.is_empty() {
            break;
        }
        // After the tables are released: dropping a code object frees memory through the
        // hooks.
        code_registry::release(py, codes);
    }
}

/// Lets go of the code objects only heaptrail references (one round of
/// [`release_unused`]'s second half): what they own dies with them, and the tracebacks that
/// named them are dropped at the next compaction, as any unused traceback.
pub fn release_orphans(py: Python<'_>) {
    let _own = OwnWork::begin();
    // SAFETY: GIL held; the closure stays in Rust.
    let orphans = unsafe { with_tracer(|t| t.take_orphans()) }.unwrap_or_default();
    code_registry::release(py, orphans);
}

/// `(traced, peak)` in bytes.
pub fn traced_memory(_py: Python<'_>) -> (u64, u64) {
    if !is_tracing() {
        return (0, 0);
    }
    // SAFETY: GIL held.
    unsafe {
        with_tracer(|t| {
            t.forget_parked();
            (t.store.traced(), t.store.peak())
        })
    }
    .unwrap_or((0, 0))
}

pub fn reset_peak(_py: Python<'_>) {
    // SAFETY: GIL held.
    unsafe { with_tracer(|t| t.store.reset_peak()) };
}

/// Bytes heaptrail itself uses to store traces.
pub fn own_memory(_py: Python<'_>) -> usize {
    // SAFETY: GIL held.
    unsafe { with_tracer(|t| t.heap_bytes()) }.unwrap_or(0)
}

/// Number of live traces.
pub fn trace_count(_py: Python<'_>) -> usize {
    // SAFETY: GIL held.
    unsafe { with_tracer(|t| t.store.len()) }.unwrap_or(0)
}

/// The traceback (most recent frame first) of the block at `addr`, if traced.
pub fn block_traceback(py: Python<'_>, addr: usize) -> Option<Vec<(Filename, u32)>> {
    if !is_tracing() {
        return None;
    }
    let _own = OwnWork::begin();
    // SAFETY: GIL held; the closure stays in Rust.
    let frames: Vec<RawFrame> = unsafe {
        with_tracer(|t| {
            t.trace_of(addr)
                .map(|(_, tb)| t.tracebacks.frames(tb).to_vec())
        })
    }??;
    // SAFETY: GIL held; the frames' code objects are held by the registry until `clear`,
    // which needs the GIL we hold.
    let resolver = unsafe { resolver() };
    Some(
        frames
            .into_iter()
            .map(|f| unsafe { resolver.resolve(py, f) })
            .collect(),
    )
}

/// Addresses of the live blocks whose traceback passes through `filename:lineno`.
pub fn blocks_through(py: Python<'_>, filename: &str, lineno: u32) -> rustc_hash::FxHashSet<usize> {
    blocks_matching(py, |frames| frames.iter().any(|&(ref name, line)| line == lineno && &**name == filename))
}

/// Addresses of the live blocks whose *site* is `filename:lineno`: the innermost frame of
/// their traceback that is the user's code under `rules` (else the innermost frame), as the
/// watcher's sites are keyed. A block allocated deeper in the user's code (a helper the line
/// calls) belongs to the helper's site, not to this one.
pub fn blocks_at_site(
    py: Python<'_>,
    filename: &str,
    lineno: u32,
    rules: &SiteRules,
) -> rustc_hash::FxHashSet<usize> {
    blocks_matching(py, |frames| {
        let site = frames
            .iter()
            .find(|(name, _)| rules.is_user_file(name))
            .or(frames.first());
        site.is_some_and(|(name, line)| *line == lineno && &**name == filename)
    })
}

/// Addresses of the live blocks whose traceback (resolved, innermost first) satisfies `wanted`.
fn blocks_matching(
    py: Python<'_>,
    wanted: impl Fn(&[(heaptrail_core::Filename, u32)]) -> bool,
) -> rustc_hash::FxHashSet<usize> {
    let _own = OwnWork::begin();
    // Traceback ids are compared across two borrows of the tables: retried if a compaction
    // (applying queued operations) renumbered them in between.
    for _ in 0..3 {
        if let Some(blocks) = try_blocks_matching(py, &wanted) {
            return blocks;
        }
    }
    rustc_hash::FxHashSet::default()
}

fn try_blocks_matching(
    py: Python<'_>,
    wanted: &impl Fn(&[(heaptrail_core::Filename, u32)]) -> bool,
) -> Option<rustc_hash::FxHashSet<usize>> {
    // SAFETY: GIL held; the closure stays in Rust.
    let (tracebacks, compactions): (Vec<Vec<RawFrame>>, u64) = unsafe {
        with_tracer(|t| {
            let frames = (0..t.tracebacks.len() as u32)
                .map(|id| t.tracebacks.frames(id).to_vec())
                .collect();
            (frames, t.compactions)
        })
    }?;
    // SAFETY: GIL held; the frames' code objects are held by the registry.
    let resolver = unsafe { resolver() };
    let matching: Vec<bool> = tracebacks
        .iter()
        .map(|frames| {
            let resolved: Vec<_> = frames
                .iter()
                .map(|f| unsafe { resolver.resolve(py, *f) })
                .collect();
            wanted(&resolved)
        })
        .collect();
    let mut blocks = rustc_hash::FxHashSet::default();
    // SAFETY: GIL held; the closure stays in Rust.
    let same = unsafe {
        with_tracer(|t| {
            if t.compactions != compactions {
                return false;
            }
            let mut visit = |addr: usize, tb: TbId| {
                if matching.get(tb as usize).copied().unwrap_or(false) {
                    blocks.insert(addr);
                }
            };
            t.store.for_each_block(&mut visit);
            t.for_each_headered(|addr, _, tb| visit(addr, tb));
            true
        })
    }?;
    same.then_some(blocks)
}

/// A snapshot of every live trace, with line numbers and functions resolved. `None` when not
/// tracing.
///
/// The application is paused (GIL held) only while the trace table is copied and in short
/// stretches of line-number resolution; the snapshot itself is built without the GIL.
pub fn take_snapshot(py: Python<'_>) -> Option<Snapshot> {
    take(py, Kind::Traces).map(|(snapshot, _)| snapshot)
}

/// The live bytes and blocks of every traceback: a snapshot holding the tracebacks (no
/// traces), and `(bytes, blocks)` per snapshot traceback id. What the leak watcher needs each
/// window; the copy is of a few thousand totals, not of every trace, so the pause does not
/// grow with the heap. `None` when not tracing.
pub fn take_totals(py: Python<'_>) -> Option<(Snapshot, Vec<(u64, u64)>)> {
    take(py, Kind::Totals)
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Traces,
    Totals,
}

fn take(py: Python<'_>, kind: Kind) -> Option<(Snapshot, Vec<(u64, u64)>)> {
    loop {
        if !is_tracing() {
            return None;
        }
        if let Some(taken) = try_take(py, kind) {
            return Some(taken);
        }
        // The traces were cleared while we let other threads run: start over.
    }
}

/// What the GIL-held copy gives, besides the tracebacks in use.
enum Copied {
    /// (size, compact traceback id) per trace; sizes of 4 GiB and more by trace index.
    Traces {
        sizes: Vec<(u32, u32)>,
        big_sizes: Vec<(usize, u64)>,
    },
    /// (bytes, blocks) per compact traceback id.
    Totals(Vec<(u64, u64)>),
}

fn try_take(py: Python<'_>, kind: Kind) -> Option<(Snapshot, Vec<(u64, u64)>)> {
    let _own = OwnWork::begin();
    let generation = GENERATION.load(Ordering::Relaxed);
    // Code objects let go of while the GIL is released below would make the copied frames
    // dangle: checked with the generation.
    let code_epoch = code_registry::epoch();
    let mut hold = std::time::Instant::now();
    let mut longest = std::time::Duration::ZERO;
    // 1. Copy only: per trace (size, compact traceback id), or per traceback its totals, and
    //    the frames of the tracebacks that live traces use.
    // SAFETY: GIL held; the closure stays in Rust.
    let (copied, tracebacks) = unsafe {
        with_tracer(|t| {
            t.forget_parked();
            let mut used: Vec<(Vec<RawFrame>, u16)> = Vec::new();
            let mut use_tb = |tb: TbId| {
                used.push((
                    t.tracebacks.frames(tb).to_vec(),
                    t.tracebacks.total_nframe(tb),
                ));
                (used.len() - 1) as u32
            };
            let copied = match kind {
                Kind::Totals => {
                    let mut totals = Vec::new();
                    for (tb, &(bytes, units)) in t.store.totals().iter().enumerate() {
                        if units > 0 {
                            use_tb(tb as TbId);
                            totals.push((bytes, heaptrail_core::sampling::blocks(units)));
                        }
                    }
                    Copied::Totals(totals)
                }
                Kind::Traces => {
                    let mut compact: Vec<u32> = vec![u32::MAX; t.tracebacks.len()];
                    // 8 bytes a trace: the copy is the one part of a snapshot that cannot be
                    // split up.
                    let mut sizes: Vec<(u32, u32)> = Vec::with_capacity(t.store.len());
                    let mut big_sizes: Vec<(usize, u64)> = Vec::new();
                    let mut copy = |size: u64, tb: TbId| {
                        let slot = &mut compact[tb as usize];
                        if *slot == u32::MAX {
                            *slot = use_tb(tb);
                        }
                        if size >= u32::MAX as u64 {
                            big_sizes.push((sizes.len(), size));
                        }
                        sizes.push((size.min(u32::MAX as u64) as u32, *slot));
                    };
                    t.store.for_each_trace(&mut copy);
                    t.for_each_headered(|_, size, tb| copy(size, tb));
                    Copied::Traces { sizes, big_sizes }
                }
            };
            (copied, used)
        })
    }?;
    // 2. Resolve each distinct frame once: its line, and the function its code object names
    //    (read once per code object, from the object's fields). New code objects make this
    //    slow (a line table to decode each), so every MAX_HOLD the GIL is released for a
    //    moment to let the application run.
    let mut frame_ids: FxHashMap<RawFrame, u32> = FxHashMap::default();
    let mut resolved: Vec<(Filename, u32, Option<Function>)> = Vec::new();
    let mut compact_tracebacks: Vec<(Vec<u32>, u16)> = Vec::with_capacity(tracebacks.len());
    for (frames, total) in tracebacks {
        let mut ids = Vec::with_capacity(frames.len());
        for f in frames {
            let id = match frame_ids.get(&f) {
                Some(&id) => id,
                None => {
                    // SAFETY: GIL held; the registry holds the frame's code object, unless a
                    // `clear` ran while the GIL was released, which the generation check
                    // below catches before any frame is resolved.
                    resolved.push(unsafe { resolver().resolve_with_function(py, f) });
                    let id = (resolved.len() - 1) as u32;
                    frame_ids.insert(f, id);
                    id
                }
            };
            ids.push(id);
            if hold.elapsed() > MAX_HOLD {
                longest = longest.max(hold.elapsed());
                py.detach(|| ());
                hold = std::time::Instant::now();
                if GENERATION.load(Ordering::Relaxed) != generation
                    || code_registry::epoch() != code_epoch
                {
                    return None;
                }
            }
        }
        compact_tracebacks.push((ids, total));
    }
    let tracebacks = compact_tracebacks;
    longest = longest.max(hold.elapsed());
    // 3. Build the snapshot without the GIL: the application runs meanwhile.
    LAST_SNAPSHOT_PAUSE_NS.store(longest.as_nanos() as u64, Ordering::Relaxed);
    let limit = traceback_limit() as u32;
    let rate = sampler::rate().map_or(0, |r| r.bytes());
    Some(py.detach(move || {
        let mut builder = SnapshotBuilder::new(limit);
        builder.set_sample_rate(rate);
        let frame_ids: Vec<(u32, u32)> = resolved
            .iter()
            .map(|(name, lineno, function)| {
                let fid = builder.intern_shared_filename(name);
                let function = match function {
                    Some(f) => builder.intern_function(&f.qualname, f.first_lineno),
                    None => NO_FUNCTION,
                };
                (builder.intern_frame(fid, *lineno), function)
            })
            .collect();
        let (mut ids, mut functions) = (Vec::new(), Vec::new());
        let tb_ids: Vec<u32> = tracebacks
            .iter()
            .map(|(frames, total)| {
                ids.clear();
                functions.clear();
                for &f in frames {
                    let (frame, function) = frame_ids[f as usize];
                    ids.push(frame);
                    functions.push(function);
                }
                builder.intern_traceback_with_functions(&ids, &functions, *total as u32)
            })
            .collect();
        match copied {
            Copied::Traces { sizes, big_sizes } => {
                builder.reserve_traces(sizes.len());
                let mut big = big_sizes.into_iter().peekable();
                for (i, (size, tb)) in sizes.into_iter().enumerate() {
                    let size = match big.peek() {
                        Some(&(at, real)) if at == i => {
                            big.next();
                            real
                        }
                        _ => size as u64,
                    };
                    builder.push_trace(0, size, tb_ids[tb as usize]);
                }
                (builder.finish(), Vec::new())
            }
            Copied::Totals(totals) => {
                // Two raw tracebacks can resolve to the same frames: their totals add up.
                let mut per_tb: Vec<(u64, u64)> = Vec::new();
                for (&(bytes, blocks), &id) in totals.iter().zip(&tb_ids) {
                    let id = id as usize;
                    if id >= per_tb.len() {
                        per_tb.resize(id + 1, (0, 0));
                    }
                    per_tb[id].0 += bytes;
                    per_tb[id].1 += blocks;
                }
                let snapshot = builder.finish();
                per_tb.resize(snapshot.tracebacks.len(), (0, 0));
                (snapshot, per_tb)
            }
        }
    }))
}

// ---- fork -------------------------------------------------------------------------------

/// The pending queue's lock is taken around `fork()` so the child never inherits it held by
/// a thread that does not exist there. (The GIL-guarded tables need nothing: `os.fork()`
/// runs with the GIL held.)
fn register_fork_handlers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        extern "C" fn prepare() {
            // SAFETY: paired with the unlock in `after`, on the same thread.
            unsafe { PENDING.raw().lock() };
        }
        extern "C" fn after() {
            // SAFETY: `prepare` locked it on this thread (the child has only this thread).
            unsafe { PENDING.force_unlock() };
        }
        // SAFETY: registering plain functions that only touch our own static.
        unsafe { libc::pthread_atfork(Some(prepare), Some(after), Some(after)) };
    });
}
