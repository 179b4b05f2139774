//! The PyMem allocator hooks: installed on the RAW, MEM and OBJ domains, each chained to the
//! allocator it replaced, reporting every allocation and free to the tracer.
//!
//! In sampled mode the MEM and OBJ hooks and the RAW free hook installed are the C shim's
//! (`csrc/sampled_fast_path.c`): they pass the unsampled majority straight through and call
//! the hooks of this file (exported as `ht_*_slow`) for everything else.

use crate::engine::block_headers::{self, HEADER};
use crate::engine::gil::MainGil;
use crate::engine::tracer;
use pyo3::ffi::{PyMemAllocatorDomain, PyMemAllocatorEx, PyMem_GetAllocator, PyMem_SetAllocator};
use std::cell::UnsafeCell;
use std::os::raw::c_void;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

/// Index of the RAW domain in [`DOMAINS`]; MEM and OBJ follow it.
const RAW: usize = 0;
const DOMAINS: [PyMemAllocatorDomain; 3] = [
    PyMemAllocatorDomain::PYMEM_DOMAIN_RAW,
    PyMemAllocatorDomain::PYMEM_DOMAIN_MEM,
    PyMemAllocatorDomain::PYMEM_DOMAIN_OBJ,
];

/// The allocators our hooks chain to, one per domain. Each hook's `ctx` points at its entry.
///
/// Invariant: written only by [`install`] with the GIL held, before the hooks that read it are
/// installed; never freed (it is a static), so a hook still running on another thread after
/// [`uninstall`] keeps a valid allocator to call.
struct Saved(UnsafeCell<[PyMemAllocatorEx; 3]>);
// SAFETY: see the invariant above.
unsafe impl Sync for Saved {}

const EMPTY: PyMemAllocatorEx = PyMemAllocatorEx {
    ctx: ptr::null_mut(),
    malloc: None,
    calloc: None,
    realloc: None,
    free: None,
};
static SAVED: Saved = Saved(UnsafeCell::new([EMPTY; 3]));

/// Domains where [`uninstall`] found another hook on top of ours and had to leave ours in
/// that chain. Installing again there would make our hook chain to itself.
static LEFT_IN_CHAIN: [AtomicBool; 3] = [const { AtomicBool::new(false) }; 3];

fn saved(ctx: *mut c_void) -> &'static PyMemAllocatorEx {
    // SAFETY: every hook is installed with ctx = &SAVED[i] (see `install`).
    unsafe { &*(ctx as *const PyMemAllocatorEx) }
}

// ---- RAW domain (and MEM/OBJ when headers are off): traces kept in the tracer's table -------

extern "C" fn hook_malloc(ctx: *mut c_void, size: usize) -> *mut c_void {
    let a = saved(ctx);
    let p = (a.malloc.expect("chained malloc"))(a.ctx, size);
    if !p.is_null() {
        tracer::on_alloc(p as usize, size);
    }
    p
}

extern "C" fn hook_calloc(ctx: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void {
    let a = saved(ctx);
    let p = (a.calloc.expect("chained calloc"))(a.ctx, nelem, elsize);
    if !p.is_null() {
        tracer::on_alloc(p as usize, nelem.saturating_mul(elsize));
    }
    p
}

extern "C" fn hook_realloc(ctx: *mut c_void, old: *mut c_void, size: usize) -> *mut c_void {
    let a = saved(ctx);
    let p = (a.realloc.expect("chained realloc"))(a.ctx, old, size);
    if !p.is_null() {
        tracer::on_realloc(old as usize, p as usize, size);
    }
    p
}

#[export_name = "ht_raw_free_slow"]
extern "C" fn hook_free(ctx: *mut c_void, p: *mut c_void) {
    if p.is_null() {
        return;
    }
    // Forget the trace *before* the block is released: once freed, another thread may get the
    // same address and trace it.
    tracer::on_free(p as usize);
    let a = saved(ctx);
    (a.free.expect("chained free"))(a.ctx, p)
}

// ---- MEM and OBJ domains: traces kept in a header in front of the block (block_headers.rs) ---

/// Calls the allocator below with the tracer told that its RAW allocations are part of this
/// block (pymalloc takes big blocks from the RAW domain): they must not be traced twice.
fn below<R>(f: impl FnOnce() -> R) -> R {
    tracer::set_nested(true);
    let r = f();
    tracer::set_nested(false);
    r
}

/// Hands out a block just obtained with room for a header at `p`: marks it and records its
/// trace. Where it cannot be marked (no memory for the bitmap), the block is handed out
/// whole, without a header, and traced in the table instead.
fn headered(p: *mut c_void, size: usize, plan: tracer::HeaderPlan) -> *mut c_void {
    if p.is_null() {
        return p;
    }
    let q = p as usize + HEADER;
    if !block_headers::mark(q) {
        tracer::record_alloc(plan.thread, p as usize, size);
        return p;
    }
    // SAFETY: `p` is a live block of `size + HEADER` bytes, just marked.
    unsafe { tracer::on_alloc_headered(q, size, plan) };
    q as *mut c_void
}

/// Bytes to ask the allocator below for, for a headered block of `size` bytes: the header
/// and at least one byte after it, so that `q = p + HEADER` lies *inside* the block. With
/// `size == 0` a block of just `HEADER` bytes would end at `q`, and `q` would be the start of
/// the next block (pymalloc packs its 16-byte blocks back to back): that block, handed out
/// without a header (not tracing, own work, another thread), would look marked, and its
/// free or realloc would act on the zero-size block at `q - HEADER` instead.
#[inline]
fn headered_size(size: usize) -> Option<usize> {
    size.max(1).checked_add(HEADER)
}

/// A new MEM/OBJ block of `size` bytes, `get(n)` asking the allocator below for `n` bytes:
/// with room for a header when the tracer plans one, as asked and traced in the table when it
/// cannot, as asked and untraced when sampled mode did not draw it.
#[inline]
fn obj_alloc(size: usize, get: impl Fn(usize) -> *mut c_void) -> *mut c_void {
    match tracer::block_plan(size) {
        // Not sampled. The RAW blocks pymalloc takes for a big one are part of it: the
        // sampler must not get a second chance at them.
        tracer::BlockPlan::Skip { nest } => {
            let p = if nest { below(|| get(size)) } else { get(size) };
            tracer::allocated_untraced(p as usize);
            p
        }
        tracer::BlockPlan::Header(plan) => match headered_size(size) {
            Some(total) => headered(below(|| get(total)), size, plan),
            None => ptr::null_mut(),
        },
        tracer::BlockPlan::Table { nest, sampled } => {
            let p = if nest { below(|| get(size)) } else { get(size) };
            if !p.is_null() {
                if sampled {
                    tracer::on_sampled_alloc(p as usize, size);
                } else {
                    tracer::on_alloc(p as usize, size);
                }
            }
            p
        }
    }
}

#[export_name = "ht_obj_malloc_slow"]
extern "C" fn obj_malloc(ctx: *mut c_void, size: usize) -> *mut c_void {
    let a = saved(ctx);
    let malloc = a.malloc.expect("chained malloc");
    obj_alloc(size, |n| malloc(a.ctx, n))
}

#[export_name = "ht_obj_calloc_slow"]
extern "C" fn obj_calloc(ctx: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void {
    let a = saved(ctx);
    let calloc = a.calloc.expect("chained calloc");
    let Some(size) = nelem.checked_mul(elsize) else {
        return ptr::null_mut();
    };
    // Without a header the caller's own (nelem, elsize) go down, as they came.
    obj_alloc(size, |n| {
        if n == size {
            calloc(a.ctx, nelem, elsize)
        } else {
            calloc(a.ctx, 1, n)
        }
    })
}

#[export_name = "ht_obj_realloc_slow"]
extern "C" fn obj_realloc(ctx: *mut c_void, old: *mut c_void, size: usize) -> *mut c_void {
    let a = saved(ctx);
    let realloc = a.realloc.expect("chained realloc");
    if old.is_null() {
        return obj_malloc(ctx, size);
    }
    let q = old as usize;
    if !block_headers::is_marked(q) {
        // A block without a header (allocated before tracing, or untraced) keeps none: its
        // new trace, if any, goes to the table. In sampled mode (GIL held: MEM/OBJ calls
        // need it) the RAW blocks below are part of this one, decided on once, here.
        let nest = tracer::guards_nested();
        let p = if nest { below(|| realloc(a.ctx, old, size)) } else { realloc(a.ctx, old, size) };
        if !p.is_null() {
            tracer::on_realloc(q, p as usize, size);
        }
        return p;
    }
    let Some(total) = headered_size(size) else {
        return ptr::null_mut();
    };
    let plan = tracer::realloc_plan(size);
    // SAFETY: `q` is marked: a live headered block of the caller's.
    let before = unsafe { block_headers::read(q) };
    let p = below(|| realloc(a.ctx, (q - HEADER) as *mut c_void, total));
    if p.is_null() {
        return p; // the old block is untouched and still marked
    }
    let moved = p as usize + HEADER;
    block_headers::take_mark(q);
    // SAFETY: the MEM/OBJ realloc hook, releasing a block it found marked.
    unsafe { tracer::forget_headered(before) };
    if block_headers::mark(moved) {
        // SAFETY: `p` is the live block of `total` bytes the realloc returned.
        unsafe { tracer::on_realloc_headered(moved, size, plan) };
        return moved as *mut c_void;
    }
    // No memory to mark the moved block (the old one is gone): slide the data over the header
    // and hand out the whole block, without a header. Cannot fail.
    // SAFETY: `p` is a live block of `size + HEADER` bytes; `ptr::copy` allows the overlap.
    unsafe { ptr::copy(moved as *const u8, p as *mut u8, size) };
    if let Some(plan) = plan {
        tracer::record_alloc(plan.thread, p as usize, size);
    }
    p
}

#[export_name = "ht_obj_free_slow"]
extern "C" fn obj_free(ctx: *mut c_void, p: *mut c_void) {
    if p.is_null() {
        return;
    }
    let a = saved(ctx);
    let free = a.free.expect("chained free");
    let q = p as usize;
    if block_headers::take_mark(q) {
        // SAFETY: it was marked: a live headered block, freed by its owner (with the GIL).
        let header = unsafe { block_headers::read(q) };
        // SAFETY: the MEM/OBJ free hook, releasing a block it found marked.
        unsafe { tracer::forget_headered(header) };
        free(a.ctx, (q - HEADER) as *mut c_void);
    } else {
        tracer::on_free(q);
        free(a.ctx, p)
    }
}

/// CPython 3.13's reference tracer (the C shim installs it; before 3.13 installing it does
/// nothing).
mod ref_tracer {
    use std::os::raw::c_int;

    extern "C" {
        /// Installs (Some) or removes (None) the reference tracer; see the C shim (a no-op
        /// before 3.13).
        pub fn ht_set_ref_tracer(
            on_new_object: Option<extern "C" fn(usize, usize, c_int) -> c_int>,
            on_dead_object: Option<extern "C" fn(usize) -> c_int>,
        ) -> c_int;
    }

    /// An object of a free-list type is being deallocated (its block may be parked).
    pub extern "C" fn on_dead_object(block: usize) -> c_int {
        crate::engine::tracer::on_dead_object(block);
        0
    }

    /// `size`: the block's size when the C shim knows it (a free-list type), else 0;
    /// `fresh`: the block is the thread's latest allocation (not reused from a free list).
    pub extern "C" fn on_new_object(block: usize, size: usize, fresh: c_int) -> c_int {
        crate::engine::tracer::on_new_object(block, size, fresh != 0);
        0
    }
}

extern "C" {
    /// Puts sampled mode's C hooks into `hook` (all four for MEM/OBJ, `free` only for RAW).
    fn ht_sampled_hooks(hook: *mut PyMemAllocatorEx, raw: i32);
    /// One of them, to recognise our hook in a chain.
    fn ht_obj_malloc(ctx: *mut c_void, size: usize) -> *mut c_void;
}

/// The hooks for domain `index` (sampled mode's C fast path in front when `sampled`).
fn hook_for(index: usize, sampled: bool) -> PyMemAllocatorEx {
    // SAFETY: taking the address of a static's element; nothing is read here.
    let ctx = unsafe { (SAVED.0.get() as *mut PyMemAllocatorEx).add(index) };
    let mut hook = if index == RAW {
        PyMemAllocatorEx {
            ctx: ctx.cast(),
            malloc: Some(hook_malloc),
            calloc: Some(hook_calloc),
            realloc: Some(hook_realloc),
            free: Some(hook_free),
        }
    } else {
        PyMemAllocatorEx {
            ctx: ctx.cast(),
            malloc: Some(obj_malloc),
            calloc: Some(obj_calloc),
            realloc: Some(obj_realloc),
            free: Some(obj_free),
        }
    };
    if sampled {
        // SAFETY: writes function pointers into a struct we own; the C hooks chain through
        // `ctx` exactly as ours do.
        unsafe { ht_sampled_hooks(&mut hook, (index == RAW) as i32) };
    }
    hook
}

fn is_our_hook(a: &PyMemAllocatorEx) -> bool {
    let ours = [
        hook_malloc as *const (),
        obj_malloc as *const (),
        ht_obj_malloc as *const (),
    ];
    a.malloc.is_some_and(|f| ours.contains(&(f as *const ())))
}

/// Whether `f` is code of the Python runtime itself (pymalloc, libc's malloc via CPython's
/// wrappers, or CPython's debug hooks) rather than of another extension's allocator hook.
fn is_runtime_allocator(f: *const ()) -> bool {
    let object_of = |addr: *const ()| {
        // SAFETY: dladdr only reads the loader's tables; a zeroed Dl_info is valid.
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        // SAFETY: as above; `info` is a valid out-parameter.
        let found = unsafe { libc::dladdr(addr.cast(), &mut info) } != 0;
        found.then_some(info.dli_fbase)
    };
    let runtime = object_of(pyo3::ffi::PyMem_Malloc as *const ());
    runtime.is_some() && object_of(f) == runtime
}

/// Installs the hooks on all three domains, and CPython 3.13's reference tracer when
/// `ref_tracer` (objects reused from free lists; not needed while they are closed:
/// `closed_free_lists`).
///
/// `headers_allowed`: no other tracer (stdlib tracemalloc) is hooked below us. Block headers
/// are used only when, in addition, the MEM and OBJ allocators below are the runtime's own:
/// a tracer below us would see every block 16 bytes bigger and at another address. The
/// choice is made when the MEM and OBJ hooks are installed afresh, and kept while they stay
/// (a tracer started later hooks above us and sees only what our hooks hand out).
pub fn install(_gil: MainGil<'_>, headers_allowed: bool, ref_tracer: bool) {
    // SAFETY: the main GIL is held (`_gil`), and `install`/`uninstall` are the only writers of
    // SAVED, so no other reference to it is alive; the hooks only read entries of domains
    // whose hook is not (re)installed yet (see `Saved`).
    let saved = unsafe { &mut *SAVED.0.get() };
    let mut fresh = [false; 3];
    for (i, domain) in DOMAINS.iter().enumerate() {
        let mut current = EMPTY;
        // SAFETY: GIL held; `current` is a valid out-parameter.
        unsafe { PyMem_GetAllocator(*domain, &mut current) };
        if is_our_hook(&current) || LEFT_IN_CHAIN[i].load(Ordering::Relaxed) {
            continue; // still in the chain from an earlier start
        }
        saved[i] = current;
        fresh[i] = true;
    }
    if fresh[1] || fresh[2] {
        // A hook put back on top of another tracer must not add headers that tracer would see.
        let ok = headers_allowed
            && (1..3).filter(|&i| fresh[i]).all(|i| {
                saved[i]
                    .malloc
                    .is_some_and(|f| is_runtime_allocator(f as *const ()))
            });
        let both = fresh[1] && fresh[2];
        tracer::set_header_mode(ok && (both || tracer::header_mode()));
    }
    for (i, domain) in DOMAINS.iter().enumerate() {
        if fresh[i] {
            let mut hook = hook_for(i, crate::engine::sampler::sampling());
            // SAFETY: GIL held; `hook` chains to `saved[i]`, written above.
            unsafe { PyMem_SetAllocator(*domain, &mut hook) };
        }
    }
    if ref_tracer {
        // SAFETY: GIL held; the callbacks are plain functions that live forever.
        unsafe {
            ref_tracer::ht_set_ref_tracer(
                Some(ref_tracer::on_new_object),
                Some(ref_tracer::on_dead_object),
            )
        };
    }
}

/// Puts the saved allocators back where our hook is still on top of a domain. Where someone
/// else hooked the domain after us, our hook stays in their chain and simply stops tracing.
/// The MEM and OBJ hooks also stay while blocks with headers are allocated: only they can free
/// those.
pub fn uninstall(_gil: MainGil<'_>) {
    // SAFETY: as in `install` (GIL held, the only writers).
    let saved = unsafe { &mut *SAVED.0.get() };
    let headers_live = block_headers::marked_count() > 0;
    for (i, domain) in DOMAINS.iter().enumerate() {
        let mut current = EMPTY;
        // SAFETY: GIL held; `current` is a valid out-parameter.
        unsafe { PyMem_GetAllocator(*domain, &mut current) };
        let needed = headers_live && i != RAW;
        if is_our_hook(&current) && !needed {
            // SAFETY: GIL held; puts back the allocator our hook replaced.
            unsafe { PyMem_SetAllocator(*domain, &mut saved[i]) };
            LEFT_IN_CHAIN[i].store(false, Ordering::Relaxed);
        } else {
            LEFT_IN_CHAIN[i].store(true, Ordering::Relaxed);
        }
    }
    // SAFETY: GIL held.
    unsafe { ref_tracer::ht_set_ref_tracer(None, None) };
}
