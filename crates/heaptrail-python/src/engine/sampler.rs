//! Sampled mode's byte sampler in the allocator hooks (the estimator itself is
//! `heaptrail_core::sampling`): the rate in force, each thread's bytes left until its next
//! sample point, and the filter that lets the free of a block that was never sampled return at
//! once.
//!
//! * The per-thread count lives in the C shim's initial-exec TLS
//!   (`csrc/sampled_fast_path.c`): there, an allocation that is not sampled costs one
//!   subtraction and never enters Rust. Rust is asked ([`take`]) when the count runs out.
//! * Sampled blocks are traced in the trace table, never in a block header, so a free of a
//!   block that was never sampled has one question to answer: is it in the table? The filter
//!   (a fixed array of counters indexed by a hash of the address, kept by the tracer as table
//!   entries come and go, read by the C fast path) answers first: zero means "certainly not",
//!   and that is almost every free.

use heaptrail_core::sampling::SampleRate;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

extern "C" {
    fn ht_sample_sub(size: i64) -> i64;
    fn ht_sample_set(left: i64);
    /// 1 in sampled mode: the C fast path is on.
    static ht_sampled: AtomicI32;
    // The free filter (`csrc/sampled_fast_path.c` owns it and its hash).
    fn ht_filter_may_hold_addr(addr: usize) -> i32;
    fn ht_filter_enter(addr: usize);
    fn ht_filter_leave(addr: usize);
    fn ht_filter_clear();
}

/// The sample rate in force (mean bytes between sample points); 0: exact mode.
static RATE: AtomicU64 = AtomicU64::new(0);

/// A thread's count starts here (the shim's INT64_MIN / 2): far below anything a real gap
/// minus allocations reaches, so "no gap drawn yet" is told apart from "due".
const UNDRAWN: i64 = i64::MIN / 2;

pub fn rate() -> Option<SampleRate> {
    SampleRate::new(RATE.load(Ordering::Relaxed))
}

/// Sets the rate (0: exact). Only while not tracing: a trace's weight follows from its size
/// and the rate, so the rate must stay the same while its traces live.
pub fn set_rate(bytes: u64) {
    RATE.store(bytes, Ordering::Relaxed);
    // SAFETY: a C atomic int, only ever accessed atomically.
    unsafe { ht_sampled.store((bytes != 0) as i32, Ordering::Relaxed) };
}

#[inline]
pub fn sampling() -> bool {
    RATE.load(Ordering::Relaxed) != 0
}

/// Whether an allocation of `size` bytes on this thread is sampled (only asked in sampled
/// mode). Zero-byte blocks count as one byte (the C shim's `ht_sample_units` applies that
/// rule of `heaptrail_core::sampling`).
#[inline]
pub fn take(size: usize) -> bool {
    let size = size.min(i64::MAX as usize / 4) as i64;
    // SAFETY: reads and writes a thread-local word of the calling thread.
    let left = unsafe { ht_sample_sub(size) };
    left <= 0 && due(left, size)
}

/// The count reached zero: this allocation holds a sample point, or the thread has not drawn
/// its first gap yet.
#[cold]
fn due(left: i64, size: i64) -> bool {
    let Some(rate) = rate() else { return false };
    let draw = || rate.gap(fastrand::f64()).min(i64::MAX as u64 / 4) as i64;
    if left < UNDRAWN / 2 {
        // The thread's first allocation while sampling: its first sample point is `gap`
        // bytes away.
        let gap = draw();
        if gap > size {
            // SAFETY: as in `take`.
            unsafe { ht_sample_set(gap - size) };
            return false;
        }
    }
    // The distance to the next point after this block: memoryless, so drawn afresh.
    // SAFETY: as in `take`.
    unsafe { ht_sample_set(draw()) };
    true
}

/// Whether a block at `addr` may have an entry in the trace table (false: certainly not).
#[inline]
pub fn may_be_in_table(addr: usize) -> bool {
    // SAFETY: reads one atomic counter.
    unsafe { ht_filter_may_hold_addr(addr) != 0 }
}

/// An entry for `addr` is (or is about to be) in the table.
#[inline]
pub fn entered(addr: usize) {
    // SAFETY: updates one atomic counter.
    unsafe { ht_filter_enter(addr) }
}

/// An entry for `addr` left the table.
#[inline]
pub fn left(addr: usize) {
    // SAFETY: updates one atomic counter.
    unsafe { ht_filter_leave(addr) }
}

/// The table was emptied.
pub fn forget_all() {
    // SAFETY: stores zeros into the atomic counters.
    unsafe { ht_filter_clear() }
}
