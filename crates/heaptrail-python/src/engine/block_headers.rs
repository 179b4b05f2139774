//! Traces kept in the block itself: a 16-byte header in front of each MEM/OBJ block heaptrail
//! allocates, and a bitmap saying which blocks carry one.
//!
//! Why: with the traces in a hash table, freeing a block that was allocated long ago costs a
//! cache miss on its table slot (most of heaptrail's overhead in allocation-heavy code). The
//! header sits next to memory the program is touching anyway, and the bitmap is 128 times
//! denser than the heap it describes, so it stays in cache.
//!
//! The hook asks the allocator below for `max(size, 1) + HEADER` bytes at `p` and hands out
//! `q = p + HEADER`: `q` is always inside the block, never its end (where the allocator's next
//! block may start), so no other block ever starts at a marked address. The header at `p`
//! holds the size, the traceback id and the tracing generation (a header of an older
//! generation, or generation 0, is not a live trace: this is how `clear_traces` forgets
//! millions of traces at once). `q` is marked in the bitmap until
//! the block is freed, and a free of a marked `q` gives `p` back to the allocator.
//!
//! Who may touch what: headered blocks are allocated, freed and read only by a thread holding
//! the main interpreter's GIL (the C API requires the GIL for MEM and OBJ calls), so a mark is
//! set and cleared with a plain load and store. Other threads (a subinterpreter with its own
//! GIL) only read marks, and never see their own blocks marked. The radix nodes are created on
//! demand, never freed.

use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// Bytes in front of each headered block. Keeps the 16-byte alignment pymalloc gives.
pub const HEADER: usize = 16;

/// What a header records.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub size: u64,
    pub tb: u32,
    /// Tracing generation the trace belongs to; 0: the block is not traced.
    pub gen: u32,
}

impl Header {
    /// The header of a block that holds no trace (allocated while heaptrail does its own work,
    /// or resized after tracing stopped).
    pub fn untraced(size: usize) -> Header {
        Header {
            size: size as u64,
            tb: 0,
            gen: 0,
        }
    }
}

/// Reads the header of the marked block `q`.
///
/// # Safety
/// `q` is marked (so it is a live block heaptrail allocated with a header) and the caller
/// holds the main interpreter's GIL (so no other thread frees it meanwhile).
pub unsafe fn read(q: usize) -> Header {
    // SAFETY: a marked block starts `HEADER` bytes after the start of a live block of ours,
    // where its header was written; the GIL keeps it alive (the caller's contract).
    unsafe { std::ptr::read((q - HEADER) as *const Header) }
}

/// Writes the header of block `q`.
///
/// # Safety
/// `q - HEADER` is the start of a live block of at least `HEADER` bytes obtained by a
/// headered hook, and the caller holds the main interpreter's GIL.
pub unsafe fn write(q: usize, header: Header) {
    // SAFETY: `q - HEADER` starts a live block with room for a header (the caller's
    // contract).
    unsafe { std::ptr::write((q - HEADER) as *mut Header, header) }
}

// ---- the marks: a three-level radix bitmap, one bit per 16 bytes of address space ----------

const GRANULE_SHIFT: u32 = 4;
/// A leaf covers 4 MiB: 2^18 granules, 4096 words, 32 KiB.
const LEAF_SHIFT: u32 = 22;
const LEAF_WORDS: usize = 1 << (LEAF_SHIFT - GRANULE_SHIFT - 6);
/// A middle node covers 16 GiB: 4096 leaves.
const MID_SHIFT: u32 = 34;
const MID_ENTRIES: usize = 1 << (MID_SHIFT - LEAF_SHIFT);
/// Addresses below 2^47 (x86-64 and arm64 user space with 4-level page tables).
const ADDRESS_BITS: u32 = 47;
const TOP_ENTRIES: usize = 1 << (ADDRESS_BITS - MID_SHIFT);

struct Leaf([AtomicU64; LEAF_WORDS]);
struct Mid([AtomicPtr<Leaf>; MID_ENTRIES]);

static TOP: [AtomicPtr<Mid>; TOP_ENTRIES] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; TOP_ENTRIES];
/// Leaves and middle nodes made so far (for `get_tracemalloc_memory`).
static NODES: AtomicU64 = AtomicU64::new(0);
const NODE_BYTES: usize = 32 * 1024;
const _: () = assert!(std::mem::size_of::<Leaf>() == NODE_BYTES);
const _: () = assert!(std::mem::size_of::<Mid>() == NODE_BYTES);

/// A zeroed node from the system allocator (never Python's, so no hook re-enters), or null.
/// Aligned on its size (32 KiB), so a leaf's address fits in 32 bits once shifted (see
/// [`LAST_LEAF`]).
fn new_node<T>() -> *mut T {
    let mut p: *mut libc::c_void = std::ptr::null_mut();
    // SAFETY: NODE_BYTES is a power of two and a multiple of the pointer size.
    if unsafe { libc::posix_memalign(&mut p, NODE_BYTES, NODE_BYTES) } != 0 {
        return std::ptr::null_mut();
    }
    // SAFETY: a fresh block of NODE_BYTES; all-zero bytes are a valid array of atomics.
    unsafe { std::ptr::write_bytes(p.cast::<u8>(), 0, NODE_BYTES) };
    NODES.fetch_add(1, Ordering::Relaxed);
    p.cast()
}

/// The node in `slot`, created if `create`. Null when absent (or out of memory).
fn child<T>(slot: &AtomicPtr<T>, create: bool) -> *mut T {
    let p = slot.load(Ordering::Acquire);
    if !p.is_null() || !create {
        return p;
    }
    let fresh = new_node::<T>();
    if fresh.is_null() {
        return fresh;
    }
    match slot.compare_exchange(
        std::ptr::null_mut(),
        fresh,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => fresh,
        Err(existing) => {
            // SAFETY: `fresh` was never published; posix_memalign blocks are freed by free().
            unsafe { libc::free(fresh.cast()) };
            NODES.fetch_sub(1, Ordering::Relaxed);
            existing
        }
    }
}

/// The leaf used last, by any thread, as one word: `(q >> LEAF_SHIFT) << 32 | leaf >> 15`
/// (0: none). Allocations and frees cluster in a few 4 MiB stretches, so this saves the walk
/// down the radix most of the time. One atomic word, so no thread ever sees one stretch paired
/// with another's leaf; an entry overwritten by another thread only costs a walk.
static LAST_LEAF: AtomicU64 = AtomicU64::new(0);
const LEAF_ALIGN_SHIFT: u32 = NODE_BYTES.trailing_zeros();
const _: () = assert!(ADDRESS_BITS - LEAF_ALIGN_SHIFT <= 32);
const _: () = assert!(ADDRESS_BITS - LEAF_SHIFT <= 32);

/// The word holding `q`'s mark and the bit in it; None when no leaf covers `q` (and
/// `create` is false or memory ran out) or `q` is outside the covered address range.
#[inline]
fn locate(q: usize, create: bool) -> Option<(&'static AtomicU64, u64)> {
    if q >> ADDRESS_BITS != 0 {
        return None;
    }
    let stretch = (q >> LEAF_SHIFT) as u64;
    let last = LAST_LEAF.load(Ordering::Acquire);
    let leaf = if last != 0 && last >> 32 == stretch {
        // SAFETY: a published leaf (never freed), stored below by the thread that found it.
        unsafe { &*(((last & 0xFFFF_FFFF) << LEAF_ALIGN_SHIFT) as *const Leaf) }
    } else {
        let leaf = leaf_of(q, create)?;
        let address = leaf as *const Leaf as u64;
        if address >> ADDRESS_BITS == 0 {
            LAST_LEAF.store(
                (stretch << 32) | (address >> LEAF_ALIGN_SHIFT),
                Ordering::Release,
            );
        }
        leaf
    };
    let granule = (q >> GRANULE_SHIFT) & ((1 << (LEAF_SHIFT - GRANULE_SHIFT)) - 1);
    Some((&leaf.0[granule >> 6], 1u64 << (granule & 63)))
}

/// The leaf covering `q` (< 2^47), walking the radix; None as for [`locate`].
fn leaf_of(q: usize, create: bool) -> Option<&'static Leaf> {
    let mid = child(&TOP[q >> MID_SHIFT], create);
    if mid.is_null() {
        return None;
    }
    // SAFETY: published nodes are never freed.
    let mid = unsafe { &*mid };
    let leaf = child(&mid.0[(q >> LEAF_SHIFT) & (MID_ENTRIES - 1)], create);
    // SAFETY: as above.
    (!leaf.is_null()).then(|| unsafe { &*leaf })
}

extern "C" {
    /// How many blocks are marked, kept here (`csrc/sampled_fast_path.h`): sampled mode's C
    /// fast path frees a block without asking the bitmap only while it is 0.
    static ht_marked_blocks: AtomicUsize;
}

fn marked_blocks() -> &'static AtomicUsize {
    // SAFETY: a C atomic size_t (the layout of AtomicUsize), never moved, only ever accessed
    // atomically.
    unsafe { &ht_marked_blocks }
}

/// Whether any block is marked. Any thread may ask.
#[inline]
pub fn any_marked() -> bool {
    marked_blocks().load(Ordering::Relaxed) != 0
}

/// The count of marked blocks [`any_marked`] reads (for tests: equal to [`marked_count`]).
pub fn counted_marks() -> usize {
    marked_blocks().load(Ordering::Relaxed)
}

/// Whether block `q` carries a heaptrail header. Any thread may ask.
#[inline]
pub fn is_marked(q: usize) -> bool {
    if !any_marked() {
        return false; // sampled mode's common case: no headers at all
    }
    match locate(q, false) {
        Some((word, bit)) => word.load(Ordering::Relaxed) & bit != 0,
        None => false,
    }
}

/// Marks `q`. Returns false when it cannot (no memory for a node, address out of range): the
/// caller then must not hand out a headered block. Main-GIL holder only.
#[inline]
pub fn mark(q: usize) -> bool {
    match locate(q, true) {
        Some((word, bit)) => {
            let bits = word.load(Ordering::Relaxed);
            if bits & bit == 0 {
                // One writer at a time (the main-GIL holder): no read-modify-write needed.
                let n = marked_blocks();
                n.store(n.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            }
            word.store(bits | bit, Ordering::Relaxed);
            true
        }
        None => false,
    }
}

/// Unmarks `q` if it is marked, and says whether it was: the one lookup a free needs.
/// Called on every MEM/OBJ free: by the main-GIL holder (the only thread that writes marks),
/// or by a subinterpreter thread with its own GIL freeing its own block, which is never
/// marked, so that call only writes [`LAST_LEAF`], which is safe from any thread.
#[inline]
pub fn take_mark(q: usize) -> bool {
    if !any_marked() {
        return false;
    }
    match locate(q, false) {
        Some((word, bit)) => {
            let bits = word.load(Ordering::Relaxed);
            if bits & bit == 0 {
                return false;
            }
            word.store(bits & !bit, Ordering::Relaxed);
            let n = marked_blocks();
            n.store(n.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
            true
        }
        None => false,
    }
}

/// Calls `f(q)` for every marked block, in address order. Main-GIL holder only (so marks do
/// not change meanwhile).
pub fn for_each_marked(mut f: impl FnMut(usize)) {
    for (t, top) in TOP.iter().enumerate() {
        let mid = top.load(Ordering::Acquire);
        if mid.is_null() {
            continue;
        }
        // SAFETY: published nodes are never freed.
        let mid = unsafe { &*mid };
        for (m, slot) in mid.0.iter().enumerate() {
            let leaf = slot.load(Ordering::Acquire);
            if leaf.is_null() {
                continue;
            }
            // SAFETY: as above.
            let leaf = unsafe { &*leaf };
            let base = (t << MID_SHIFT) | (m << LEAF_SHIFT);
            for (w, word) in leaf.0.iter().enumerate() {
                let mut bits = word.load(Ordering::Relaxed);
                while bits != 0 {
                    let b = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    f(base | (((w << 6) | b) << GRANULE_SHIFT));
                }
            }
        }
    }
}

/// Number of marked blocks (headered blocks still allocated, traced or not), counted in the
/// bitmap itself: the check of [`any_marked`]'s counter.
pub fn marked_count() -> usize {
    let mut n = 0;
    for_each_marked(|_| n += 1);
    n
}

/// Bytes the bitmap's nodes use.
pub fn node_bytes() -> usize {
    NODES.load(Ordering::Relaxed) as usize * NODE_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_per_block_and_enumerated_in_order() {
        // Addresses in a range no real allocation of this test process uses.
        let base = 0x5a5a_0000_0000usize;
        let blocks = [
            base + 16,
            base + 32,
            base + (5 << 22) + 48,
            base + (3usize << 34),
        ];
        for &q in &blocks {
            assert!(!is_marked(q));
            assert!(mark(q));
        }
        assert!(is_marked(base + 32) && !is_marked(base + 48));
        let mut seen = vec![];
        for_each_marked(|q| {
            if q >= base {
                seen.push(q)
            }
        });
        assert_eq!(seen, blocks);
        assert!(take_mark(base + 32) && !take_mark(base + 32));
        assert!(take_mark(base + 16));
        assert!(!is_marked(base + 32) && !is_marked(base + 16) && is_marked(blocks[2]));
        assert_eq!(marked_blocks().load(Ordering::Relaxed), 2);
        assert!(mark(blocks[2]), "marking twice counts once");
        assert_eq!(marked_blocks().load(Ordering::Relaxed), 2);
        assert!(!mark(1usize << 47));
        assert!(!is_marked(1usize << 47));
        for &q in &blocks[2..] {
            assert!(take_mark(q));
        }
    }
}
