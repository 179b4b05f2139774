//! Snapshots: the live traces (or the totals per traceback) copied with the GIL held, in
//! short stretches, and built into a core [`Snapshot`] without it.

use super::{
    is_tracing, traceback_limit, with_resolver, with_tracer, OwnWork, GENERATION,
    LAST_SNAPSHOT_PAUSE_NS, MAX_HOLD,
};
use crate::engine::gil::MainGil;
use crate::engine::code_registry;
use crate::engine::frames::RawFrame;
use crate::engine::sampler;
use crate::engine::traceback_interner::TbId;
use heaptrail_core::model::{Function, NO_FUNCTION};
use heaptrail_core::{Filename, Snapshot, SnapshotBuilder};
use pyo3::prelude::*;
use rustc_hash::FxHashMap;
use std::sync::atomic::Ordering;

/// A snapshot of every live trace, with line numbers and functions resolved. `None` when not
/// tracing.
///
/// The application is paused (GIL held) only while the trace table is copied and in short
/// stretches of line-number resolution; the snapshot itself is built without the GIL.
pub fn take_snapshot(py: Python<'_>) -> Option<Snapshot> {
    take(py, Kind::Traces).map(|(snapshot, _)| snapshot)
}

/// The live bytes and blocks of every traceback: a snapshot holding the tracebacks (no
/// traces), and `(bytes, blocks)` per snapshot traceback id. What the leak watcher needs each
/// window; the copy is of a few thousand totals, not of every trace, so the pause does not
/// grow with the heap. `None` when not tracing.
pub fn take_totals(py: Python<'_>) -> Option<(Snapshot, Vec<(u64, u64)>)> {
    take(py, Kind::Totals)
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Traces,
    Totals,
}

fn take(py: Python<'_>, kind: Kind) -> Option<(Snapshot, Vec<(u64, u64)>)> {
    loop {
        if !is_tracing() {
            return None;
        }
        if let Some(taken) = try_take(py, kind) {
            return Some(taken);
        }
        // The traces were cleared while we let other threads run: start over.
    }
}

/// What the GIL-held copy gives, besides the tracebacks in use.
enum Copied {
    /// (size, compact traceback id) per trace; sizes of 4 GiB and more by trace index.
    Traces {
        sizes: Vec<(u32, u32)>,
        big_sizes: Vec<(usize, u64)>,
    },
    /// (bytes, blocks) per compact traceback id.
    Totals(Vec<(u64, u64)>),
}

fn try_take(py: Python<'_>, kind: Kind) -> Option<(Snapshot, Vec<(u64, u64)>)> {
    let _own = OwnWork::begin();
    let generation = GENERATION.load(Ordering::Relaxed);
    // Code objects let go of while the GIL is released below would make the copied frames
    // dangle: checked with the generation.
    let code_epoch = code_registry::epoch();
    let mut hold = std::time::Instant::now();
    let mut longest = std::time::Duration::ZERO;
    // 1. Copy only: per trace (size, compact traceback id), or per traceback its totals, and
    //    the frames of the tracebacks that live traces use.
    let gil = MainGil::from_py(py);
    let (copied, tracebacks) = with_tracer(gil, |t| {
        t.forget_parked(gil);
        let mut used: Vec<(Vec<RawFrame>, u16)> = Vec::new();
        let mut use_tb = |tb: TbId| {
            used.push((
                t.tracebacks.frames(tb).to_vec(),
                t.tracebacks.total_nframe(tb),
            ));
            (used.len() - 1) as u32
        };
        let copied = match kind {
            Kind::Totals => {
                let mut totals = Vec::new();
                for (tb, &(bytes, units)) in t.store.totals().iter().enumerate() {
                    if units > 0 {
                        use_tb(tb as TbId);
                        totals.push((bytes, heaptrail_core::sampling::blocks(units)));
                    }
                }
                Copied::Totals(totals)
            }
            Kind::Traces => {
                let mut compact: Vec<u32> = vec![u32::MAX; t.tracebacks.len()];
                // 8 bytes a trace: the copy is the one part of a snapshot that cannot be
                // split up.
                let mut sizes: Vec<(u32, u32)> = Vec::with_capacity(t.store.len());
                let mut big_sizes: Vec<(usize, u64)> = Vec::new();
                let mut copy = |size: u64, tb: TbId| {
                    let slot = &mut compact[tb as usize];
                    if *slot == u32::MAX {
                        *slot = use_tb(tb);
                    }
                    if size >= u32::MAX as u64 {
                        big_sizes.push((sizes.len(), size));
                    }
                    sizes.push((size.min(u32::MAX as u64) as u32, *slot));
                };
                t.store.for_each_trace(&mut copy);
                t.for_each_headered(|_, size, tb| copy(size, tb));
                Copied::Traces { sizes, big_sizes }
            }
        };
        (copied, used)
    })?;
    // 2. Resolve each distinct frame once: its line, and the function its code object names
    //    (read once per code object, from the object's fields). New code objects make this
    //    slow (a line table to decode each), so every MAX_HOLD the GIL is released for a
    //    moment to let the application run.
    let mut frame_ids: FxHashMap<RawFrame, u32> = FxHashMap::default();
    let mut resolved: Vec<(Filename, u32, Option<Function>)> = Vec::new();
    let mut compact_tracebacks: Vec<(Vec<u32>, u16)> = Vec::with_capacity(tracebacks.len());
    for (frames, total) in tracebacks {
        let mut ids = Vec::with_capacity(frames.len());
        for f in frames {
            let id = match frame_ids.get(&f) {
                Some(&id) => id,
                None => {
                    resolved.push(with_resolver(gil, |resolver| {
                        // SAFETY: GIL held; the registry holds the frame's code object,
                        // unless a `clear` ran while the GIL was released, which the
                        // generation check below catches before any frame is resolved.
                        unsafe { resolver.resolve_with_function(py, f) }
                    }));
                    let id = (resolved.len() - 1) as u32;
                    frame_ids.insert(f, id);
                    id
                }
            };
            ids.push(id);
            if hold.elapsed() > MAX_HOLD {
                longest = longest.max(hold.elapsed());
                py.detach(|| ());
                hold = std::time::Instant::now();
                if GENERATION.load(Ordering::Relaxed) != generation
                    || code_registry::epoch() != code_epoch
                {
                    return None;
                }
            }
        }
        compact_tracebacks.push((ids, total));
    }
    let tracebacks = compact_tracebacks;
    longest = longest.max(hold.elapsed());
    // 3. Build the snapshot without the GIL: the application runs meanwhile.
    LAST_SNAPSHOT_PAUSE_NS.store(longest.as_nanos() as u64, Ordering::Relaxed);
    let limit = traceback_limit() as u32;
    let rate = sampler::rate().map_or(0, |r| r.bytes());
    Some(py.detach(move || {
        let mut builder = SnapshotBuilder::new(limit);
        builder.set_sample_rate(rate);
        let frame_ids: Vec<(u32, u32)> = resolved
            .iter()
            .map(|(name, lineno, function)| {
                let fid = builder.intern_shared_filename(name);
                let function = match function {
                    Some(f) => builder.intern_function(&f.qualname, f.first_lineno),
                    None => NO_FUNCTION,
                };
                (builder.intern_frame(fid, *lineno), function)
            })
            .collect();
        let (mut ids, mut functions) = (Vec::new(), Vec::new());
        let tb_ids: Vec<u32> = tracebacks
            .iter()
            .map(|(frames, total)| {
                ids.clear();
                functions.clear();
                for &f in frames {
                    let (frame, function) = frame_ids[f as usize];
                    ids.push(frame);
                    functions.push(function);
                }
                builder.intern_traceback_with_functions(&ids, &functions, *total as u32)
            })
            .collect();
        match copied {
            Copied::Traces { sizes, big_sizes } => {
                builder.reserve_traces(sizes.len());
                let mut big = big_sizes.into_iter().peekable();
                for (i, (size, tb)) in sizes.into_iter().enumerate() {
                    let size = match big.peek() {
                        Some(&(at, real)) if at == i => {
                            big.next();
                            real
                        }
                        _ => size as u64,
                    };
                    builder.push_trace(0, size, tb_ids[tb as usize]);
                }
                (builder.finish(), Vec::new())
            }
            Copied::Totals(totals) => {
                // Two raw tracebacks can resolve to the same frames: their totals add up.
                let mut per_tb: Vec<(u64, u64)> = Vec::new();
                for (&(bytes, blocks), &id) in totals.iter().zip(&tb_ids) {
                    let id = id as usize;
                    if id >= per_tb.len() {
                        per_tb.resize(id + 1, (0, 0));
                    }
                    per_tb[id].0 += bytes;
                    per_tb[id].1 += blocks;
                }
                let snapshot = builder.finish();
                per_tb.resize(snapshot.tracebacks.len(), (0, 0));
                (snapshot, per_tb)
            }
        }
    }))
}
