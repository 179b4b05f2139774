//! What the allocator hooks (and CPython 3.13's reference tracer) call: a block allocated,
//! reallocated or freed, a new or dead object. These run inside every traced allocation.

use super::{
    capture_without_gil, hooks_off, queue, with_tracer, PendingOp, FORK_CHILD, HEADER_MODE,
    NESTED,
};
use crate::engine::block_headers::{self, Header};
use crate::engine::closed_free_lists;
use crate::engine::frames::{self, CurrentThread};
use crate::engine::gil::MainGil;
use crate::engine::sampler;
use std::sync::atomic::Ordering;

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
pub fn allocated_untraced(addr: usize) {
    frames::note_allocated(addr);
}

/// A new block at `addr`; `draw`: in sampled mode the sampler decides whether it is traced.
#[inline]
fn allocated(addr: usize, size: usize, draw: bool) {
    if hooks_off() {
        return;
    }
    // The block this thread allocated last: a new object in it needs no re-stamping (3.13).
    frames::note_allocated(addr);
    let thread = frames::current_thread();
    if thread.busy() || (thread.holds_gil() && NESTED.load(Ordering::Relaxed)) {
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
    if let Some(gil) = MainGil::of_thread(&thread) {
        closed_free_lists::reclose_if_reopened(gil);
        with_tracer(gil, |t| {
            let tb = t.capture(thread);
            t.table_add(addr, size, tb, false);
        });
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
    (thread.holds_gil() && !thread.busy()).then_some(HeaderPlan { thread })
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
    if !thread.holds_gil() || thread.busy() {
        return BlockPlan::Table { nest: thread.holds_gil(), sampled: false };
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
    sampler::sampling() && !hooks_off() && frames::current_thread().holds_gil()
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
/// `q` is marked and `q - HEADER` starts a live block of `size + HEADER` bytes.
pub unsafe fn on_alloc_headered(q: usize, size: usize, plan: HeaderPlan) {
    frames::note_allocated(q);
    let traced = MainGil::of_thread(&plan.thread).and_then(|gil| {
        closed_free_lists::reclose_if_reopened(gil);
        with_tracer(gil, |t| {
            let tb = t.capture(plan.thread);
            // SAFETY: `q` is a marked live block with room for a header (the caller's
            // contract).
            unsafe {
                block_headers::write(
                    q,
                    Header {
                        size: size as u64,
                        tb,
                        gen: t.gen,
                    },
                )
            };
            t.store.count_in(size as u64, tb);
        })
    });
    if traced.is_none() {
        // SAFETY: as above.
        unsafe { block_headers::write(q, Header::untraced(size)) };
    }
}

/// Writes the header of a headered block just moved or resized by realloc: a new trace when
/// `plan` says so, else an untraced header.
///
/// # Safety
/// As for [`on_alloc_headered`].
pub unsafe fn on_realloc_headered(q: usize, size: usize, plan: Option<HeaderPlan>) {
    match plan {
        // SAFETY: the caller's contract is `on_alloc_headered`'s.
        Some(plan) => unsafe { on_alloc_headered(q, size, plan) },
        // SAFETY: as above.
        None => unsafe { block_headers::write(q, Header::untraced(size)) },
    }
}

/// Called when a headered block whose header is `header` is released (or moved).
///
/// # Safety
/// The caller is the MEM/OBJ free or realloc hook, releasing a block it found marked: such a
/// block was handed out by the main-GIL holder, and CPython requires the GIL for every
/// MEM/OBJ free (see `block_headers.rs`), so the calling thread holds the main GIL.
#[inline]
pub unsafe fn forget_headered(header: Header) {
    if header.gen == 0 || FORK_CHILD.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: the calling thread holds the main GIL (the caller's contract), for the whole
    // call.
    let gil = unsafe { MainGil::assume_held() };
    with_tracer(gil, |t| {
        if header.gen == t.gen {
            t.store.count_out(header.size, header.tb);
        }
    });
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
    let thread = frames::current_thread();
    if let Some(gil) = MainGil::of_thread(&thread) {
        with_tracer(gil, |t| t.table_remove(addr));
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
    let Some(gil) = MainGil::of_thread(&thread) else {
        return;
    };
    let own_work = thread.busy();
    with_tracer(gil, |t| {
        let sampled = sampler::sampling();
        if block_headers::is_marked(block) {
            // SAFETY: marked, so a live headered block; the main GIL is held (`gil`).
            let mut h = unsafe { block_headers::read(block) };
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
            // SAFETY: as above.
            unsafe { block_headers::write(block, h) };
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
    });
}

/// An object of a free-list type is being deallocated (3.13+ reference tracer, GIL held):
/// its block is forgotten now, because the deallocator may park it in a free list instead of
/// freeing it, and a parked object is dead. (stdlib tracemalloc keeps such blocks traced at
/// their last creation line: a line making many temporary tuples then looks as if it kept
/// up to 2000 of them.) The block is traced again when an object is re-initialised in it
/// ([`on_new_object`]: from its header, or with the size the C shim computes).
pub fn on_dead_object(block: usize) {
    if hooks_off()
        || (sampler::sampling()
            && !block_headers::is_marked(block)
            && !sampler::may_be_in_table(block))
    {
        return;
    }
    let thread = frames::current_thread();
    if let Some(gil) = MainGil::of_thread(&thread) {
        with_tracer(gil, |t| t.forget_dead(block));
    }
}
