//! The tracemalloc API's operations (the main GIL held: they take `Python<'_>`): start, stop,
//! clear, the counters, a block's traceback, the blocks of a site.

use super::{
    fork::register_fork_handlers, with_resolver, with_tracer, OwnWork, Tracer, GENERATION,
    NFRAME, PENDING, TRACER, TRACING, USER_RULES,
};
use crate::engine::gil::MainGil;
use crate::engine::code_registry;
use crate::engine::frames::{self, RawFrame};
use crate::engine::traceback_interner::TbId;
use crate::engine::{allocator_hooks, closed_free_lists, sampler};
use heaptrail_core::sites::SiteRules;
use heaptrail_core::Filename;
use pyo3::prelude::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;

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
    let gil = MainGil::from_py(py);
    frames::init(gil);
    let _own = OwnWork::begin();
    // Stdlib tracemalloc hooked below us would see headered blocks 16 bytes bigger and at
    // another address: no headers then (see `allocator_hooks::install`).
    let stdlib_tracing = py
        .import("_tracemalloc")
        .and_then(|m| m.call_method0("is_tracing"))
        .and_then(|r| r.is_truthy())
        .unwrap_or(true);
    NFRAME.store(nframe, Ordering::Relaxed);
    let user_rules = USER_RULES.borrow_mut(gil).and_then(|rules| (*rules).clone());
    if let Some(mut slot) = TRACER.borrow_mut(gil) {
        match slot.as_mut() {
            Some(t) => t.scratch.resize(nframe, RawFrame::UNKNOWN),
            None => {
                let mut t = Tracer::new(nframe);
                t.set_user_rules(user_rules);
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
        // Free lists closed (3.13: floats, tuples, lists, dicts, dict key tables; 3.11/3.12:
        // floats), so that every such object is allocated and freed where the hooks see it.
        // On 3.13 this replaces the reference tracer's call at every object's creation and
        // death (up to a fifth of an object-heavy program's work in sampled mode; blind to
        // key tables), installed only where the lists cannot be closed.
        let closed = closed_free_lists::close(gil);
        allocator_hooks::install(gil, !stdlib_tracing, !closed);
        TRACING.store(true, Ordering::Relaxed);
        // 3.11/3.12: every dict, list and tuple created from now on is allocated, not popped
        // from a free list (see csrc/free_list_bypass.c), so that it is blamed on the line
        // that created it. Sampled mode too, although it costs ~5% of an allocation-heavy
        // loop: without it, a sampled temporary parked in a free list and popped by a line
        // that keeps it stays blamed on the temporary's line, and a leak fed from a free list
        // (a request that frees ten dicts and keeps one) is named at the churn's line
        // (bench_sampled_accuracy: a line of temporaries read +110% live, the line that kept
        // its dicts +40%).
        frames::set_free_list_bypass(gil, true);
    }
    Ok(())
}

/// Which files are library code for the user-frame search of `Tracer::capture` (fnmatch
/// patterns, as the watcher computes them); all empty: no rules, tracebacks as tracemalloc's.
/// In force until `stop()`.
pub fn set_user_code_rules(
    py: Python<'_>,
    library: &[String],
    include: &[String],
    exclude: &[String],
) {
    let rules = SiteRules::from_patterns(library, include, exclude);
    let rules = (!rules.is_empty()).then(|| Arc::new(rules));
    let _own = OwnWork::begin();
    let gil = MainGil::from_py(py);
    if let Some(mut slot) = USER_RULES.borrow_mut(gil) {
        *slot = rules.clone();
    }
    with_tracer(gil, |t| t.set_user_rules(rules));
}

/// Stops tracing and forgets every trace.
pub fn stop(py: Python<'_>) {
    if !TRACING.swap(false, Ordering::Relaxed) {
        return;
    }
    let gil = MainGil::from_py(py);
    allocator_hooks::uninstall(gil);
    frames::set_free_list_bypass(gil, false);
    closed_free_lists::reopen(gil);
    if let Some(mut slot) = USER_RULES.borrow_mut(gil) {
        *slot = None;
    }
    with_tracer(gil, |t| t.set_user_rules(None));
    clear(py);
}

/// Forgets every trace (tracing continues).
pub fn clear(py: Python<'_>) {
    let _own = OwnWork::begin();
    let gil = MainGil::from_py(py);
    let codes = with_tracer(gil, |t| {
        t.store.clear();
        t.tracebacks.clear();
        t.depth_memo.clear();
        t.library_cache.clear();
        t.gen = t.gen.checked_add(1).unwrap_or(1);
        t.codes.take()
    })
    .unwrap_or_default();
    PENDING.lock().clear();
    if sampler::sampling() {
        sampler::forget_all();
    }
    GENERATION.fetch_add(1, Ordering::Relaxed);
    with_resolver(gil, |resolver| resolver.clear());
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
    let gil = MainGil::from_py(py);
    // Letting go of one code object can free blocks whose tracebacks named others, which
    // then become unused or orphaned in turn: a few rounds, until nothing changes.
    for _ in 0..4 {
        let mut codes = with_tracer(gil, |t| t.drop_unused()).unwrap_or_default();
        codes.extend(with_tracer(gil, |t| t.take_orphans()).unwrap_or_default());
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
    let orphans = with_tracer(MainGil::from_py(py), |t| t.take_orphans()).unwrap_or_default();
    code_registry::release(py, orphans);
}

/// `(traced, peak)` in bytes.
pub fn traced_memory(py: Python<'_>) -> (u64, u64) {
    if !is_tracing() {
        return (0, 0);
    }
    let gil = MainGil::from_py(py);
    with_tracer(gil, |t| {
        t.forget_parked(gil);
        (t.store.traced(), t.store.peak())
    })
    .unwrap_or((0, 0))
}

pub fn reset_peak(py: Python<'_>) {
    with_tracer(MainGil::from_py(py), |t| t.store.reset_peak());
}

/// Bytes heaptrail itself uses to store traces.
pub fn own_memory(py: Python<'_>) -> usize {
    with_tracer(MainGil::from_py(py), |t| t.heap_bytes()).unwrap_or(0)
}

/// Number of live traces.
pub fn trace_count(py: Python<'_>) -> usize {
    with_tracer(MainGil::from_py(py), |t| t.store.len()).unwrap_or(0)
}

/// The traceback (most recent frame first) of the block at `addr`, if traced.
pub fn block_traceback(py: Python<'_>, addr: usize) -> Option<Vec<(Filename, u32)>> {
    if !is_tracing() {
        return None;
    }
    let _own = OwnWork::begin();
    let gil = MainGil::from_py(py);
    let frames: Vec<RawFrame> = with_tracer(gil, |t| {
        t.trace_of(addr)
            .map(|(_, tb)| t.tracebacks.frames(tb).to_vec())
    })??;
    Some(with_resolver(gil, |resolver| {
        frames
            .into_iter()
            // SAFETY: GIL held; the frames' code objects are held by the registry until
            // `clear`, which needs the GIL we hold.
            .map(|f| unsafe { resolver.resolve(py, f) })
            .collect()
    }))
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
    let gil = MainGil::from_py(py);
    let (tracebacks, compactions): (Vec<Vec<RawFrame>>, u64) = with_tracer(gil, |t| {
        let frames = (0..t.tracebacks.len() as u32)
            .map(|id| t.tracebacks.frames(id).to_vec())
            .collect();
        (frames, t.compactions)
    })?;
    let matching: Vec<bool> = with_resolver(gil, |resolver| {
        tracebacks
            .iter()
            .map(|frames| {
                let resolved: Vec<_> = frames
                    .iter()
                    // SAFETY: GIL held; the frames' code objects are held by the registry.
                    .map(|f| unsafe { resolver.resolve(py, *f) })
                    .collect();
                wanted(&resolved)
            })
            .collect()
    });
    let mut blocks = rustc_hash::FxHashSet::default();
    let same = with_tracer(gil, |t| {
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
    })?;
    same.then_some(blocks)
}
