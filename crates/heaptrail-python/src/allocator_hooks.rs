//! The PyMem allocator hooks: installed on the RAW, MEM and OBJ domains, each chained to the
//! allocator it replaced, reporting every allocation and free to the tracer.

use crate::tracer;
use pyo3::ffi::{PyMemAllocatorDomain, PyMemAllocatorEx, PyMem_GetAllocator, PyMem_SetAllocator};
use std::cell::UnsafeCell;
use std::os::raw::c_void;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

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

#[cfg(Py_3_13)]
mod ref_tracer {
    use std::os::raw::c_int;

    extern "C" {
        /// Installs (Some) or removes (None) the reference tracer; see the C shim.
        pub fn ht_set_ref_tracer(on_new_object: Option<extern "C" fn(usize) -> c_int>) -> c_int;
    }

    pub extern "C" fn on_new_object(block: usize) -> c_int {
        crate::tracer::on_new_object(block);
        0
    }
}

fn hook_for(index: usize) -> PyMemAllocatorEx {
    // SAFETY: taking the address of a static's element; nothing is read here.
    let ctx = unsafe { (SAVED.0.get() as *mut PyMemAllocatorEx).add(index) };
    PyMemAllocatorEx {
        ctx: ctx.cast(),
        malloc: Some(hook_malloc),
        calloc: Some(hook_calloc),
        realloc: Some(hook_realloc),
        free: Some(hook_free),
    }
}

fn is_our_hook(a: &PyMemAllocatorEx) -> bool {
    a.malloc.map(|f| f as *const () as usize) == Some(hook_malloc as *const () as usize)
}

/// Installs the hooks on all three domains. Caller holds the GIL and has checked that they
/// are not installed.
pub unsafe fn install() {
    let saved = &mut *SAVED.0.get();
    for (i, domain) in DOMAINS.iter().enumerate() {
        let mut current = EMPTY;
        PyMem_GetAllocator(*domain, &mut current);
        if is_our_hook(&current) || LEFT_IN_CHAIN[i].load(Ordering::Relaxed) {
            continue; // still in the chain from an earlier start
        }
        saved[i] = current;
        let mut hook = hook_for(i);
        PyMem_SetAllocator(*domain, &mut hook);
    }
    #[cfg(Py_3_13)]
    ref_tracer::ht_set_ref_tracer(Some(ref_tracer::on_new_object));
}

/// Puts the saved allocators back where our hook is still on top of a domain. Where someone
/// else hooked the domain after us, our hook stays in their chain and simply stops tracing.
/// Caller holds the GIL.
pub unsafe fn uninstall() {
    let saved = &mut *SAVED.0.get();
    for (i, domain) in DOMAINS.iter().enumerate() {
        let mut current = EMPTY;
        PyMem_GetAllocator(*domain, &mut current);
        if is_our_hook(&current) {
            PyMem_SetAllocator(*domain, &mut saved[i]);
            LEFT_IN_CHAIN[i].store(false, Ordering::Relaxed);
        } else {
            LEFT_IN_CHAIN[i].store(true, Ordering::Relaxed);
        }
    }
    #[cfg(Py_3_13)]
    ref_tracer::ht_set_ref_tracer(None);
}
