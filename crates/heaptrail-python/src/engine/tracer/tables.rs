//! The [`Tracer`] type: the tables (live blocks, interned tracebacks, held code objects) and
//! what is done to them with the main GIL held: capture a stack and intern it, add and remove
//! traces, compact the traceback table, forget dead blocks.

use super::{PendingOp, HAS_PENDING, NFRAME, PENDING};
use crate::engine::block_headers::{self, HEADER};
use crate::engine::code_registry::{self, CodeRegistry};
use crate::engine::frames::{self, CurrentThread, RawFrame};
use crate::engine::gil::MainGil;
use crate::engine::live_blocks::TraceStore;
use crate::engine::sampler;
use crate::engine::traceback_interner::{TbId, TracebackTable};
use heaptrail_core::sites::SiteRules;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Memo of stack depths below a frame (used where the interpreter keeps no count: 3.11, see
/// `frames::capture_counts_whole_stack`).
const DEPTH_MEMO_SIZE: usize = 4096;

/// Cache of code object -> "is library code" for the user-frame walk (see
/// `Tracer::user_frame_below`): direct-mapped by address. Entries name code objects the
/// registry holds, so they stay valid until `clear`, which empties the cache.
const LIBRARY_CACHE_SIZE: usize = 512;

#[derive(Clone, Copy, Default)]
pub(super) struct DepthMemo {
    frame: usize,
    previous: usize,
    code: usize,
    depth: u32,
}

/// The tables. A `Tracer` lives only in `TRACER`, a `GilCell`: whoever has `&mut Tracer` holds
/// the main GIL, which the methods' `SAFETY` comments rely on ("we have the tracer").
pub(super) struct Tracer {
    pub(super) store: TraceStore,
    pub(super) tracebacks: TracebackTable,
    pub(super) codes: CodeRegistry,
    /// Capture buffer, `nframe` long.
    pub(super) scratch: Vec<RawFrame>,
    pub(super) depth_memo: Vec<DepthMemo>,
    pub(super) library_cache: Vec<(usize, bool)>,
    /// User-code rules are in force (`codes` has them): tracebacks of library frames only are
    /// completed with the user's frame beyond the limit.
    pub(super) user_rules: bool,
    /// Generation of the current traces in block headers (never 0, which marks a header that
    /// holds no trace); `clear` moves to the next one, forgetting every headered trace at once.
    pub(super) gen: u32,
    /// Compact the traceback table when it holds this many tracebacks (see `compact`).
    pub(super) compact_at: usize,
    /// Compactions so far: traceback ids read before a change may name other tracebacks.
    pub(super) compactions: u64,
}

/// The traceback table is compacted when it has grown by this many tracebacks, or doubled,
/// since the last compaction: the memory heaptrail keeps for tracebacks (and the code objects
/// they hold) no live block uses is bounded by about this many.
const COMPACT_MIN: usize = 2048;

impl Tracer {
    pub(super) fn new(nframe: usize) -> Self {
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
    pub(super) fn set_user_rules(&mut self, rules: Option<Arc<SiteRules>>) {
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
    pub(super) unsafe fn user_frame_below(&mut self, rest: frames::InterpreterFrame) -> Option<RawFrame> {
        if self.library_cache.is_empty() {
            self.library_cache = vec![(0, true); LIBRARY_CACHE_SIZE];
        }
        let mut frame = rest;
        // SAFETY: `frame` is `rest` or a frame below it on this thread's stack (the caller's
        // contract), or null at the bottom.
        while let Some((raw, next)) = unsafe { frames::next_complete_frame(frame) } {
            let code = raw.code as usize;
            let slot = (code >> 4) % LIBRARY_CACHE_SIZE;
            let library = match self.library_cache[slot] {
                (c, library) if c == code && code != 0 => library,
                _ => {
                    // Holds the code object (alive on this stack): the cache entry stays
                    // valid until `clear`.
                    // SAFETY: GIL held (we have the tracer); the code object is alive on this
                    // thread's stack.
                    let library = unsafe { self.codes.is_library(raw.code) };
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
    pub(super) unsafe fn depth_below(&mut self, rest: frames::InterpreterFrame, identity: [usize; 2]) -> u32 {
        if self.depth_memo.is_empty() {
            self.depth_memo = vec![DepthMemo::default(); DEPTH_MEMO_SIZE];
        }
        let [previous, code] = identity;
        let slot = &mut self.depth_memo[(rest as usize >> 4) % DEPTH_MEMO_SIZE];
        if slot.frame == rest as usize && slot.previous == previous && slot.code == code {
            return slot.depth;
        }
        // SAFETY: `rest` is a live frame of this thread (the caller's contract).
        let depth = unsafe { frames::count_frames(rest) };
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
    pub(super) fn capture(&mut self, thread: CurrentThread) -> TbId {
        // SAFETY: `thread` is the calling thread (see `frames::capture`).
        let cap = unsafe { frames::capture(thread, &mut self.scratch) };
        let total = cap.total_nframe;
        // 3.11: the interpreter keeps no count of the frames below the copied ones.
        let total = if frames::capture_counts_whole_stack() || cap.rest.is_null() {
            total
        } else {
            // SAFETY: `rest` is a frame of this thread's stack, just walked.
            (total + unsafe { self.depth_below(cap.rest, cap.rest_identity) })
                .min(super::MAX_NFRAME as u32)
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
    pub(super) fn intern(&mut self, n: usize, total: u32, may_hold: bool) -> TbId {
        if n > 0 {
            let total = total.min(u16::MAX as u32) as u16;
            if let Some(id) = self.tracebacks.find(&self.scratch[..n], total) {
                return id; // the common case: a traceback seen before
            }
        }
        self.intern_slow(n, total, may_hold)
    }

    #[inline(never)]
    pub(super) fn intern_slow(&mut self, mut n: usize, mut total: u32, may_hold: bool) -> TbId {
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
    pub(super) fn compact(&mut self) {
        let unused = self.drop_unused();
        code_registry::defer_release(unused);
    }

    /// `compact` without the release: returns the code objects to let go of.
    pub(super) fn drop_unused(&mut self) -> Vec<usize> {
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
    pub(super) fn take_orphans(&mut self) -> Vec<usize> {
        // SAFETY: the main GIL is held (we have the tracer: see the `Tracer` type).
        let orphans = unsafe { self.codes.take_orphans() };
        if !orphans.is_empty() {
            let set: rustc_hash::FxHashSet<usize> = orphans.iter().copied().collect();
            self.tracebacks.erase_codes(&set);
            self.depth_memo.clear();
            self.library_cache.clear();
        }
        orphans
    }

    pub(super) fn apply_pending(&mut self) {
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
    pub(super) fn table_add(&mut self, addr: usize, size: usize, tb: TbId, noted: bool) {
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
    pub(super) fn table_remove(&mut self, addr: usize) -> bool {
        let removed = self.store.remove(addr);
        if removed && sampler::sampling() {
            sampler::left(addr);
        }
        removed
    }

    /// Forgets the trace of `block`, whose object is dead but whose memory CPython may keep
    /// parked in a free list instead of freeing it.
    pub(super) fn forget_dead(&mut self, block: usize) {
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
    pub(super) fn forget_parked(&mut self, gil: MainGil<'_>) {
        frames::for_each_parked_block(gil, |block| self.forget_dead(block));
    }

    /// Calls `f(block address, size, traceback)` for every live trace kept in a block header.
    pub(super) fn for_each_headered(&self, mut f: impl FnMut(usize, u64, TbId)) {
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
    pub(super) fn trace_of(&self, addr: usize) -> Option<(u64, TbId)> {
        if block_headers::is_marked(addr) {
            // SAFETY: marked, so live and headered; GIL held (we have `self`).
            let h = unsafe { block_headers::read(addr) };
            return (h.gen == self.gen).then_some((h.size, h.tb));
        }
        self.store.get(addr)
    }

    pub(super) fn heap_bytes(&self) -> usize {
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

/// Captures the stack of a thread that does not hold the GIL into a new buffer.
pub(super) fn capture_without_gil(thread: CurrentThread) -> (Box<[RawFrame]>, u32) {
    let mut buf = vec![RawFrame::UNKNOWN; NFRAME.load(Ordering::Relaxed)];
    // SAFETY: `thread` is the calling thread.
    let cap = unsafe { frames::capture(thread, &mut buf) };
    let total = cap.total_nframe;
    let total = if frames::capture_counts_whole_stack() || cap.rest.is_null() {
        total
    } else {
        // SAFETY: a frame of this thread's own stack.
        total + unsafe { frames::count_frames(cap.rest) }
    };
    buf.truncate(cap.nframe);
    (buf.into_boxed_slice(), total)
}
