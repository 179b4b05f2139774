//! Sampled mode's byte sampler in the allocator hooks (the estimator itself is
//! `heaptrail_core::sampling`): the rate in force, each thread's bytes left until its next
//! sample point, and the filter that lets the free of a block that was never sampled return at
//! once.
//!
//! * The per-thread count lives in the C shim's initial-exec TLS: an allocation that is not
//!   sampled costs one call that subtracts and compares, no lock and no table.
//! * Sampled blocks of the MEM and OBJ domains carry a header (marked in `block_headers`), so
//!   their frees are found as in exact mode. The others (RAW domain, blocks that could not be
//!   marked) go to the trace table; a free would have to probe it, and without the GIL, queue
//!   for it under a lock. [`may_be_in_table`] answers first from a fixed array of counters
//!   indexed by a hash of the address, kept by the tracer as table entries come and go: zero
//!   means "certainly not in the table", and that is almost every free.

use heaptrail_core::sampling::SampleRate;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

extern "C" {
    fn ht_sample_sub(size: i64) -> i64;
    fn ht_sample_set(left: i64);
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
}

#[inline]
pub fn sampling() -> bool {
    RATE.load(Ordering::Relaxed) != 0
}

/// Whether an allocation of `size` bytes on this thread is sampled (only asked in sampled
/// mode). Zero-byte blocks count as one byte (see `heaptrail_core::sampling`).
#[inline]
pub fn take(size: usize) -> bool {
    let size = size.max(1).min(i64::MAX as usize / 4) as i64;
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

const FILTER_BITS: u32 = 16;
/// Counters of table entries per hash of the address (256 KiB, in .bss: pages are touched
/// only where entries hash to).
static FILTER: [AtomicU32; 1 << FILTER_BITS] = [const { AtomicU32::new(0) }; 1 << FILTER_BITS];

#[inline]
fn slot(addr: usize) -> &'static AtomicU32 {
    // Fibonacci hashing of the address without its always-zero low bits.
    let h = ((addr as u64) >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - FILTER_BITS);
    &FILTER[h as usize]
}

/// Whether a block at `addr` may have an entry in the trace table (false: certainly not).
#[inline]
pub fn may_be_in_table(addr: usize) -> bool {
    slot(addr).load(Ordering::Relaxed) != 0
}

/// An entry for `addr` is (or is about to be) in the table.
#[inline]
pub fn entered(addr: usize) {
    slot(addr).fetch_add(1, Ordering::Relaxed);
}

/// An entry for `addr` left the table.
#[inline]
pub fn left(addr: usize) {
    let _ = slot(addr).fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
}

/// The table was emptied.
pub fn forget_all() {
    for counter in &FILTER {
        counter.store(0, Ordering::Relaxed);
    }
}
