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
//!
//! A frame is `filename:lineno`, what tracemalloc groups by. The function each frame ran
//! (`co_qualname`, `co_firstlineno` of its code object, read when the snapshot was taken) is
//! kept beside the tracebacks, not in the frames: one line can belong to two functions (a
//! lambda or a generator expression and the function around it), and frames and tracebacks
//! must stay equal exactly when their text is.

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

/// Index into [`Snapshot::functions`].
pub type FunctionId = u32;

/// `total_nframe` of a traceback whose total depth is not known (stdlib: `None`).
pub const TOTAL_NFRAME_UNKNOWN: u32 = u32::MAX;

/// The function of a frame the snapshot has no name for (a file written before names were
/// recorded, a stdlib tracemalloc dump, a `<unknown>` frame).
pub const NO_FUNCTION: FunctionId = u32::MAX;

/// One frame: a filename and a line number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frame {
    pub filename: FilenameId,
    pub lineno: u32,
}

/// The function a frame ran, as its code object named it when the snapshot was taken.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Function {
    /// `co_qualname`: `Cache.put`, `handler.<locals>.inner`, `<module>`, `<lambda>`.
    pub qualname: Arc<str>,
    /// `co_firstlineno`: the line of the `def` (its first decorator's when it has some).
    pub first_lineno: u32,
}

/// One frame of a traceback as a call stack shows it: the line, and the function that ran
/// it ([`NO_FUNCTION`] when unknown).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StackFrame {
    pub frame: FrameId,
    pub function: FunctionId,
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
    /// The functions frames ran, each once (empty when the snapshot has no names).
    pub functions: Vec<Function>,
    /// Per traceback, the function of each of its frames, in the order of its `frames`
    /// ([`NO_FUNCTION`] when unknown). Empty exactly when `functions` is: a snapshot without
    /// names (older files, stdlib dumps).
    pub traceback_functions: Vec<Box<[FunctionId]>>,
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

    /// The frames of traceback `id`, most recent first, with their functions.
    pub fn stack(
        &self,
        id: TracebackId,
    ) -> impl DoubleEndedIterator<Item = StackFrame> + ExactSizeIterator + '_ {
        let functions = self.traceback_functions.get(id as usize);
        self.tracebacks[id as usize]
            .frames
            .iter()
            .enumerate()
            .map(move |(i, &frame)| StackFrame {
                frame,
                function: functions
                    .and_then(|f| f.get(i))
                    .copied()
                    .unwrap_or(NO_FUNCTION),
            })
    }

    /// The function `function` names, if any.
    pub fn function(&self, function: FunctionId) -> Option<&Function> {
        self.functions.get(function as usize)
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
        if self.functions.is_empty() != self.traceback_functions.is_empty() {
            return Err(format!(
                "{} functions but {} tracebacks with functions",
                self.functions.len(),
                self.traceback_functions.len()
            ));
        }
        if !self.traceback_functions.is_empty() {
            if self.traceback_functions.len() != self.tracebacks.len() {
                return Err(format!(
                    "functions for {} tracebacks of {}",
                    self.traceback_functions.len(),
                    self.tracebacks.len()
                ));
            }
            let nfunctions = self.functions.len();
            for (i, (tb, functions)) in self
                .tracebacks
                .iter()
                .zip(&self.traceback_functions)
                .enumerate()
            {
                if functions.len() != tb.frames.len() {
                    return Err(format!(
                        "traceback {i} has {} frames and {} functions",
                        tb.frames.len(),
                        functions.len()
                    ));
                }
                if let Some(bad) = functions
                    .iter()
                    .find(|&&f| f != NO_FUNCTION && f as usize >= nfunctions)
                {
                    return Err(format!(
                        "traceback {i} points at function {bad} of {nfunctions}"
                    ));
                }
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
    function_ids: FxHashMap<Function, FunctionId>,
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

    /// Interns a function (by name and first line: the file is the frame's).
    pub fn intern_function(&mut self, qualname: &Arc<str>, first_lineno: u32) -> FunctionId {
        let function = Function {
            qualname: qualname.clone(),
            first_lineno,
        };
        let functions = &mut self.snapshot.functions;
        *self.function_ids.entry(function).or_insert_with_key(|f| {
            functions.push(f.clone());
            (functions.len() - 1) as FunctionId
        })
    }

    /// Interns a traceback whose functions are not known.
    pub fn intern_traceback(&mut self, frames: &[FrameId], total_nframe: u32) -> TracebackId {
        self.intern_traceback_with_functions(frames, &[], total_nframe)
    }

    /// Interns a traceback with the function of each frame (`functions` is as long as
    /// `frames`, or empty when they are not known). Tracebacks are equal by their frames
    /// alone: when two with different functions meet (distinct code objects on the same lines
    /// all the way down, a rare thing), the first one's functions stay, and only the ones it
    /// did not know are filled in.
    pub fn intern_traceback_with_functions(
        &mut self,
        frames: &[FrameId],
        functions: &[FunctionId],
        total_nframe: u32,
    ) -> TracebackId {
        debug_assert!(functions.is_empty() || functions.len() == frames.len());
        let tb = Traceback {
            frames: frames.into(),
            total_nframe,
        };
        if let Some(&id) = self.traceback_ids.get(&tb) {
            if !functions.is_empty() {
                let known = &mut self.snapshot.traceback_functions[id as usize];
                for (slot, &f) in known.iter_mut().zip(functions) {
                    if *slot == NO_FUNCTION {
                        *slot = f;
                    }
                }
            }
            return id;
        }
        let id = self.snapshot.tracebacks.len() as TracebackId;
        // Kept for every traceback while building; dropped by `finish` if no name came.
        self.snapshot
            .traceback_functions
            .push(if functions.len() == frames.len() {
                functions.into()
            } else {
                vec![NO_FUNCTION; frames.len()].into()
            });
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

    pub fn finish(mut self) -> Snapshot {
        if self.snapshot.functions.is_empty() {
            self.snapshot.traceback_functions = Vec::new();
        }
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
    fn functions_ride_beside_frames_without_changing_their_identity() {
        let mut b = SnapshotBuilder::new(5);
        let a = b.intern_filename("a.py");
        let line = b.intern_frame(a, 3);
        let caller = b.intern_frame(a, 9);
        let (outer, genexpr): (Arc<str>, Arc<str>) =
            ("outer".into(), "outer.<locals>.<genexpr>".into());
        let fo = b.intern_function(&outer, 2);
        let fg = b.intern_function(&genexpr, 3);
        assert_eq!(fo, b.intern_function(&outer, 2));
        assert_ne!(
            fo,
            b.intern_function(&outer, 7),
            "same name, another def line"
        );
        // A generator expression and its function on one line: one frame, two functions.
        let tb =
            b.intern_traceback_with_functions(&[line, line, caller], &[fg, fo, NO_FUNCTION], 3);
        // The same text with another function is the same traceback: its unknown slot is
        // filled in, the known ones stay.
        let again = b.intern_traceback_with_functions(&[line, line, caller], &[fo, fo, fo], 3);
        assert_eq!(tb, again);
        assert_eq!(tb, b.intern_traceback(&[line, line, caller], 3));
        let plain = b.intern_traceback(&[caller], 1);
        b.push_trace(0, 10, tb);
        b.push_trace(0, 5, plain);
        let s = b.finish();
        assert_eq!(s.frames.len(), 2, "frames are filename:lineno only");
        assert_eq!(s.tracebacks.len(), 2);
        assert!(s.validate().is_ok());
        let stack: Vec<_> = s
            .stack(tb)
            .map(|f| (f.frame, s.function(f.function).map(|f| &*f.qualname)))
            .collect();
        assert_eq!(
            stack,
            [
                (line, Some("outer.<locals>.<genexpr>")),
                (line, Some("outer")),
                (caller, Some("outer"))
            ]
        );
        assert_eq!(s.stack(plain).next().unwrap().function, NO_FUNCTION);
        assert_eq!(s.function(fg).unwrap().first_lineno, 3);

        // Without any name, the snapshot has no function tables at all.
        let mut b = SnapshotBuilder::new(1);
        let a = b.intern_filename("a.py");
        let f = b.intern_frame(a, 1);
        b.intern_traceback(&[f], 1);
        let s = b.finish();
        assert!(s.functions.is_empty() && s.traceback_functions.is_empty());
        assert_eq!(s.stack(0).next().unwrap().function, NO_FUNCTION);
    }

    #[test]
    fn validate_catches_inconsistent_functions() {
        let mut b = SnapshotBuilder::new(5);
        let a = b.intern_filename("a.py");
        let f = b.intern_frame(a, 1);
        let q: Arc<str> = "f".into();
        let func = b.intern_function(&q, 1);
        b.intern_traceback_with_functions(&[f, f], &[func, NO_FUNCTION], 2);
        let good = b.finish();
        assert!(good.validate().is_ok());
        let mut s = good.clone();
        s.traceback_functions[0] = vec![func].into();
        assert!(s
            .validate()
            .unwrap_err()
            .contains("2 frames and 1 functions"));
        let mut s = good.clone();
        s.traceback_functions[0] = vec![func, 1].into();
        assert!(s
            .validate()
            .unwrap_err()
            .contains("points at function 1 of 1"));
        let mut s = good.clone();
        s.traceback_functions.clear();
        assert!(s.validate().is_err());
        let mut s = good;
        s.functions.clear();
        s.traceback_functions[0] = vec![NO_FUNCTION, NO_FUNCTION].into();
        assert!(
            s.validate().is_err(),
            "names for tracebacks but no function table"
        );
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
