/*
 * Sampled mode's allocator fast path: the MEM and OBJ hooks and the RAW free hook, as
 * installed in sampled mode (src/engine/allocator_hooks.rs installs them and owns every decision).
 *
 * In sampled mode almost every allocation holds no sample point, and almost every free is of
 * a block that was never sampled. Those two cases are answered here and passed straight to
 * the allocator below, without entering the Rust hooks: an allocation costs a subtraction on
 * this thread's byte counter, a free one load from a fixed array of counters. Everything
 * else — a sample point reached, exact mode, a block that may be traced, a request big enough
 * for pymalloc to take RAW blocks for it — goes to the Rust hook of the same name (the
 * `*_slow` functions), which decides as if this file did not exist.
 *
 * Why C: the per-thread counter must be initial-exec TLS (one %fs-relative load and store);
 * Rust's thread_local! in a shared library goes through __tls_get_addr, and a call into Rust
 * for each allocation cost more than the counting itself.
 *
 * Nothing here allocates, locks, or touches Python objects: the hooks run with or without a
 * GIL, in any thread.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "free_lists.h"
#include "sampled_fast_path.h"

atomic_int ht_sampled;
atomic_size_t ht_marked_blocks;
/* Counters of trace-table entries per hash of the address (256 KiB in .bss: only pages that
   entries hash to are ever written; the rest read as the shared zero page). Kept by the Rust
   tracer as table entries come and go (src/engine/sampler.rs). */
atomic_uint ht_free_filter[1u << HT_FILTER_BITS];

/* Bytes left until this thread's next sample point. A thread starts far below zero: "no gap
   drawn yet" (src/engine/sampler.rs draws it at the thread's first allocation). */
static __thread __attribute__((tls_model("initial-exec"))) int64_t ht_sample_left = INT64_MIN / 2;

/* The filter, for the Rust tracer (its table's entries come and go rarely: sample points). */
int
ht_filter_may_hold_addr(uintptr_t addr)
{
    return ht_filter_may_hold(addr);
}

void
ht_filter_enter(uintptr_t addr)
{
    atomic_fetch_add_explicit(ht_filter_slot(addr), 1, memory_order_relaxed);
}

/* Never below zero (a block traced before sampled mode's filter was in step, say). */
void
ht_filter_leave(uintptr_t addr)
{
    atomic_uint *slot = ht_filter_slot(addr);
    unsigned n = atomic_load_explicit(slot, memory_order_relaxed);
    while (n != 0 && !atomic_compare_exchange_weak_explicit(slot, &n, n - 1, memory_order_relaxed,
                                                           memory_order_relaxed)) {
    }
}

void
ht_filter_clear(void)
{
    /* Written only where not zero: pages never written stay the shared zero page. */
    for (size_t i = 0; i < (1u << HT_FILTER_BITS); i++) {
        if (atomic_load_explicit(&ht_free_filter[i], memory_order_relaxed) != 0) {
            atomic_store_explicit(&ht_free_filter[i], 0, memory_order_relaxed);
        }
    }
}

/* pymalloc serves requests up to this many bytes from its own pools, never through the RAW
   domain (CPython 3.8+). A bigger one goes to Rust, which guards the RAW blocks taken for it
   (they are part of it, not allocations to sample again). Mirrors SMALL_REQUEST in src/engine/tracer/events.rs. */
#define HT_SMALL_REQUEST 512

/* The Rust hooks (src/engine/allocator_hooks.rs). */
void *ht_obj_malloc_slow(void *ctx, size_t size);
void *ht_obj_calloc_slow(void *ctx, size_t nelem, size_t elsize);
void *ht_obj_realloc_slow(void *ctx, void *ptr, size_t size);
void ht_obj_free_slow(void *ctx, void *ptr);
void ht_raw_free_slow(void *ctx, void *ptr);

/* Counts `size` bytes allocated by this thread; returns the bytes left until its next sample
   point (> 0: this allocation is not sampled). Used by src/engine/sampler.rs. */
/* The bytes a block of `size` counts for: zero-byte blocks count as one (the estimator's
   rule, heaptrail_core::sampling: every block has a chance to be sampled). */
static inline int64_t
ht_sample_units(int64_t size)
{
    return size ? size : 1;
}

int64_t
ht_sample_sub(int64_t size)
{
    return ht_sample_left -= ht_sample_units(size);
}

void
ht_sample_set(int64_t left)
{
    ht_sample_left = left;
}

/* See ht_sample_count_unsampled. Inline here: an exported function is interposable in a
   shared object, so the fast path below would call it instead of inlining it. */
static inline int
ht_count_unsampled(int64_t size)
{
    int64_t left = ht_sample_left - ht_sample_units(size);
    if (left <= 0) {
        return 0;
    }
    ht_sample_left = left;
    return 1;
}

int
ht_sample_count_unsampled(int64_t size)
{
    return ht_count_unsampled(size);
}

/* A small request that holds no sample point: counted, and true. Otherwise nothing is
   counted (the Rust hook counts it again, and draws). */
static inline int
ht_small_and_unsampled(size_t size)
{
    return size <= HT_SMALL_REQUEST && atomic_load_explicit(&ht_sampled, memory_order_relaxed)
           && ht_count_unsampled((int64_t)size);
}

/* The block a fast-path allocation returned: where the reference tracer is used (3.13+
   without closable free lists, free_lists.h) the thread's latest allocation, which tells a
   new object's fresh block from one reused from a free list (ht_ref_tracer). Elsewhere
   nothing, so that the hooks end in a tail call to the allocator below. */
static inline void *
ht_allocated(void *block)
{
#ifdef HT_TRACKS_LAST_ALLOC
    ht_last_alloc = (uintptr_t)block;
#endif
    return block;
}

/* `ctx` of every hook is the allocator below it (src/engine/allocator_hooks.rs's SAVED). */
void *
ht_obj_malloc(void *ctx, size_t size)
{
    if (ht_small_and_unsampled(size)) {
        PyMemAllocatorEx *below = (PyMemAllocatorEx *)ctx;
        return ht_allocated(below->malloc(below->ctx, size));
    }
    return ht_obj_malloc_slow(ctx, size);
}

void *
ht_obj_calloc(void *ctx, size_t nelem, size_t elsize)
{
    size_t size;
    if (!__builtin_mul_overflow(nelem, elsize, &size) && ht_small_and_unsampled(size)) {
        PyMemAllocatorEx *below = (PyMemAllocatorEx *)ctx;
        return ht_allocated(below->calloc(below->ctx, nelem, elsize));
    }
    return ht_obj_calloc_slow(ctx, nelem, elsize);
}

/* A reallocation is a new allocation for the sampler (as the Rust hook counts it); the old
   block must be one the tracer does not know. */
void *
ht_obj_realloc(void *ctx, void *ptr, size_t size)
{
    if (ptr != NULL && size <= HT_SMALL_REQUEST && ht_certainly_unsampled((uintptr_t)ptr)
        && ht_small_and_unsampled(size)) {
        PyMemAllocatorEx *below = (PyMemAllocatorEx *)ctx;
        return ht_allocated(below->realloc(below->ctx, ptr, size));
    }
    return ht_obj_realloc_slow(ctx, ptr, size);
}

void
ht_obj_free(void *ctx, void *ptr)
{
    if (ptr != NULL && ht_certainly_unsampled((uintptr_t)ptr)) {
        PyMemAllocatorEx *below = (PyMemAllocatorEx *)ctx;
        below->free(below->ctx, ptr);
        return;
    }
    ht_obj_free_slow(ctx, ptr);
}

/* RAW blocks never carry a header: only the filter is asked. */
void
ht_raw_free(void *ctx, void *ptr)
{
    if (ptr != NULL && atomic_load_explicit(&ht_sampled, memory_order_relaxed)
        && !ht_filter_may_hold((uintptr_t)ptr)) {
        PyMemAllocatorEx *below = (PyMemAllocatorEx *)ctx;
        below->free(below->ctx, ptr);
        return;
    }
    ht_raw_free_slow(ctx, ptr);
}

/* Fills `hook` (whose ctx is set) with this file's hooks: all four for the MEM and OBJ
   domains, `free` alone for RAW (`raw`). */
void
ht_sampled_hooks(PyMemAllocatorEx *hook, int raw)
{
    if (raw) {
        hook->free = ht_raw_free;
        return;
    }
    hook->malloc = ht_obj_malloc;
    hook->calloc = ht_obj_calloc;
    hook->realloc = ht_obj_realloc;
    hook->free = ht_obj_free;
}
