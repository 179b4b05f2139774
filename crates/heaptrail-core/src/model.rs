//! The snapshot data model: interned filenames, frames and tracebacks, and the traces that point
//! at them.
//!
//! A snapshot of a busy service holds about a million traces but only a few thousand distinct
//! tracebacks, so everything is interned: a trace is 16 bytes (domain, size, traceback id), and
//! grouping works on traceback ids before it ever looks at a frame.
//!
//! Frame order follows CPython's `_tracemalloc`: a traceback's frames are stored **most recent
//! first**. (The Python `Traceback` class shows them oldest first; that reversal happens in the
//! Python shell, exactly as the standard library does it.)

use crate::sampling::{self, SampleRate, Weight};
use rustc_hash::FxHashMap;
use std::sync::Arc;

/// A filename as stored in a snapshot. Shared, so results can carry it without copying.
pub type Filename = Arc<str>;

/// Index into [`Snapshot::filenames`].
pub type FilenameId = u32;
/// Index into [`Snapshot::frames`].
pub type FrameId = u32;
/// Index into [`Snapshot::tracebacks`].
pub type TracebackId = u32;

/// `total_nframe` of a traceback whose total depth is not known (stdlib: `None`).
pub const TOTAL_NFRAME_UNKNOWN: u32 = u32::MAX;

/// One frame: a filename and a line number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frame {
    pub filename: FilenameId,
    pub lineno: u32,
}

/// A traceback: up to `traceback_limit` frames, most recent first, plus the depth of the stack
/// it was cut from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Traceback {
    pub frames: Box<[FrameId]>,
    /// Depth of the whole stack when the block was allocated, or [`TOTAL_NFRAME_UNKNOWN`].
    pub total_nframe: u32,
}

/// One live memory block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Trace {
    pub domain: u32,
    pub size: u64,
    pub traceback: TracebackId,
}

/// An immutable set of traces with the tables they point into.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub filenames: Vec<Filename>,
    pub frames: Vec<Frame>,
    pub tracebacks: Vec<Traceback>,
    pub traces: Vec<Trace>,
    /// Maximum number of frames per traceback when the snapshot was taken.
    pub traceback_limit: u32,
    /// Sampled mode's rate when the snapshot was taken (mean bytes between sample points),
    /// 0 for exact mode. In a sampled snapshot each trace is a sample, and every size and
    /// count computed from the traces is an estimate (see [`Snapshot::weight`]).
    pub sample_rate: u64,
}

impl Snapshot {
    pub fn filename(&self, frame: FrameId) -> &Filename {
        &self.filenames[self.frames[frame as usize].filename as usize]
    }

    pub fn frame(&self, frame: FrameId) -> Frame {
        self.frames[frame as usize]
    }

    pub fn traceback(&self, id: TracebackId) -> &Traceback {
        &self.tracebacks[id as usize]
    }

    /// The sampled mode's rate, None for an exact snapshot.
    pub fn rate(&self) -> Option<SampleRate> {
        SampleRate::new(self.sample_rate)
    }

    /// What trace `t` counts for: its own size and one block, or in a sampled snapshot the
    /// bytes and blocks (in `sampling::BLOCK` units) it stands for.
    #[inline]
    pub fn weight(&self, t: &Trace) -> Weight {
        Weight::of(t.size, self.rate())
    }

    /// `(bytes, blocks)` per traceback id: what every grouping starts from (estimates in a
    /// sampled snapshot, rounded per traceback).
    pub fn per_traceback(&self) -> Vec<(u64, u64)> {
        let mut acc = vec![(0u64, 0u64); self.tracebacks.len()];
        for t in &self.traces {
            let w = self.weight(t);
            let e = &mut acc[t.traceback as usize];
            e.0 += w.bytes;
            e.1 += w.blocks;
        }
        for e in &mut acc {
            e.1 = sampling::blocks(e.1);
        }
        acc
    }

    /// Total size of all traces (an estimate in a sampled snapshot).
    pub fn total_size(&self) -> u64 {
        self.traces.iter().map(|t| self.weight(t).bytes).sum()
    }

    /// Checks that every id points inside its table. Snapshots built with [`SnapshotBuilder`]
    /// are valid by construction; this guards snapshots assembled by hand or decoded from files.
    pub fn validate(&self) -> Result<(), String> {
        let nfiles = self.filenames.len();
        for (i, f) in self.frames.iter().enumerate() {
            if f.filename as usize >= nfiles {
                return Err(format!(
                    "frame {i} points at filename {} of {nfiles}",
                    f.filename
                ));
            }
        }
        let nframes = self.frames.len();
        for (i, tb) in self.tracebacks.iter().enumerate() {
            if let Some(bad) = tb.frames.iter().find(|&&f| f as usize >= nframes) {
                return Err(format!("traceback {i} points at frame {bad} of {nframes}"));
            }
        }
        let ntb = self.tracebacks.len();
        for (i, t) in self.traces.iter().enumerate() {
            if t.traceback as usize >= ntb {
                return Err(format!(
                    "trace {i} points at traceback {} of {ntb}",
                    t.traceback
                ));
            }
        }
        Ok(())
    }
}

/// Builds a [`Snapshot`], interning filenames, frames and tracebacks as they arrive.
#[derive(Default)]
pub struct SnapshotBuilder {
    snapshot: Snapshot,
    filename_ids: FxHashMap<Filename, FilenameId>,
    frame_ids: FxHashMap<Frame, FrameId>,
    traceback_ids: FxHashMap<Traceback, TracebackId>,
}

impl SnapshotBuilder {
    pub fn new(traceback_limit: u32) -> Self {
        let mut b = Self::default();
        b.snapshot.traceback_limit = traceback_limit;
        b
    }

    /// Marks the snapshot being built as sampled at `rate` bytes (0: exact).
    pub fn set_sample_rate(&mut self, rate: u64) {
        self.snapshot.sample_rate = rate;
    }

    pub fn intern_filename(&mut self, name: &str) -> FilenameId {
        if let Some(&id) = self.filename_ids.get(name) {
            return id;
        }
        let id = self.snapshot.filenames.len() as FilenameId;
        let name: Filename = Arc::from(name);
        self.snapshot.filenames.push(name.clone());
        self.filename_ids.insert(name, id);
        id
    }

    /// Interns a filename that is already shared (no copy of the text).
    pub fn intern_shared_filename(&mut self, name: &Filename) -> FilenameId {
        if let Some(&id) = self.filename_ids.get(name) {
            return id;
        }
        let id = self.snapshot.filenames.len() as FilenameId;
        self.snapshot.filenames.push(name.clone());
        self.filename_ids.insert(name.clone(), id);
        id
    }

    pub fn intern_frame(&mut self, filename: FilenameId, lineno: u32) -> FrameId {
        let frame = Frame { filename, lineno };
        let frames = &mut self.snapshot.frames;
        *self.frame_ids.entry(frame).or_insert_with(|| {
            frames.push(frame);
            (frames.len() - 1) as FrameId
        })
    }

    pub fn intern_traceback(&mut self, frames: &[FrameId], total_nframe: u32) -> TracebackId {
        let tb = Traceback {
            frames: frames.into(),
            total_nframe,
        };
        if let Some(&id) = self.traceback_ids.get(&tb) {
            return id;
        }
        let id = self.snapshot.tracebacks.len() as TracebackId;
        self.snapshot.tracebacks.push(tb.clone());
        self.traceback_ids.insert(tb, id);
        id
    }

    pub fn push_trace(&mut self, domain: u32, size: u64, traceback: TracebackId) {
        self.snapshot.traces.push(Trace {
            domain,
            size,
            traceback,
        });
    }

    pub fn reserve_traces(&mut self, additional: usize) {
        self.snapshot.traces.reserve(additional);
    }

    pub fn finish(self) -> Snapshot {
        self.snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_interns_everything_once() {
        let mut b = SnapshotBuilder::new(5);
        let a = b.intern_filename("a.py");
        assert_eq!(a, b.intern_filename("a.py"));
        let f1 = b.intern_frame(a, 1);
        assert_eq!(f1, b.intern_frame(a, 1));
        let f2 = b.intern_frame(a, 2);
        assert_ne!(f1, f2);
        let tb = b.intern_traceback(&[f1, f2], 7);
        assert_eq!(tb, b.intern_traceback(&[f1, f2], 7));
        assert_ne!(tb, b.intern_traceback(&[f1, f2], 8));
        b.push_trace(0, 10, tb);
        let s = b.finish();
        assert_eq!(s.filenames.len(), 1);
        assert_eq!(s.frames.len(), 2);
        assert_eq!(s.tracebacks.len(), 2);
        assert_eq!(s.total_size(), 10);
        assert!(s.validate().is_ok());
    }

    #[test]
    fn validate_catches_dangling_ids() {
        let mut s = Snapshot::default();
        s.traces.push(Trace {
            domain: 0,
            size: 1,
            traceback: 0,
        });
        assert!(s.validate().is_err());
    }
}
