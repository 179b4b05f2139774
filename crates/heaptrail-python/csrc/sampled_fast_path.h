/*
 * Sampled mode's state shared by the C shims (see sampled_fast_path.c).
 */
#ifndef HEAPTRAIL_SAMPLED_FAST_PATH_H
#define HEAPTRAIL_SAMPLED_FAST_PATH_H

#include <stdatomic.h>
#include <stdint.h>
#include <stddef.h>

/* 1 in sampled mode (the rate is not 0): allocations that hold no sample point and frees of
   blocks never sampled are answered here. Written by src/engine/sampler.rs, only while not tracing. */
extern atomic_int ht_sampled;

/* Blocks that carry a heaptrail header, counted by src/engine/block_headers.rs (main-GIL holder only).
   While there is one, a free may be of a headered block, which only the Rust hook frees
   correctly (it gives the allocator the block's true start). */
extern atomic_size_t ht_marked_blocks;

#define HT_FILTER_BITS 16
extern atomic_uint ht_free_filter[1u << HT_FILTER_BITS];

/* The free filter's counter for `addr`: one per 256-byte stretch of address space, wrapping
   every 16 MiB. Not a scattering hash, on purpose: frees come in runs through the same
   allocator pool (a 4 KiB pool's blocks share one 64-byte line of counters), so the counter a
   free reads is almost always in cache; a hash sent every free to a random line of the
   256 KiB array, and that cache miss was most of sampled mode's cost. */
#define HT_FILTER_GRANULE_SHIFT 8
static inline atomic_uint *
ht_filter_slot(uintptr_t addr)
{
    return &ht_free_filter[(addr >> HT_FILTER_GRANULE_SHIFT) & ((1u << HT_FILTER_BITS) - 1)];
}

/* Whether a block at `addr` may have an entry in the trace table (0: certainly not). */
static inline int
ht_filter_may_hold(uintptr_t addr)
{
    return atomic_load_explicit(ht_filter_slot(addr), memory_order_relaxed) != 0;
}

/* Sampled mode, and the block at `addr` is certainly not traced: neither headered nor in the
   table. Its free (or death) needs nothing from the tracer. */
static inline int
ht_certainly_unsampled(uintptr_t addr)
{
    return atomic_load_explicit(&ht_sampled, memory_order_relaxed)
           && atomic_load_explicit(&ht_marked_blocks, memory_order_relaxed) == 0
           && !ht_filter_may_hold(addr);
}

/* This thread's latest allocated block (cpython_frames.c owns it): on 3.13 an object created
   in another block came from a free list, with no allocation (see ht_ref_tracer). */
extern __thread __attribute__((tls_model("initial-exec"))) uintptr_t ht_last_alloc;

/* Counts `size` bytes toward this thread's next sample point. 1: counted, no sample point
   reached. 0: the count would reach one; nothing is counted (Rust's src/engine/sampler.rs counts it
   again and draws the next gap). Zero-byte blocks count as one byte. */
int ht_sample_count_unsampled(int64_t size);

#endif
