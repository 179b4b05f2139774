//! Interning of captured tracebacks: each distinct (frames, total depth) gets a small id, so a
//! live trace costs 8 bytes of traceback reference instead of a copy of its stack.

use crate::engine::frames::RawFrame;
use hashbrown::HashTable;
use std::hash::{BuildHasher, Hash, Hasher};

/// A traceback id. Ids are dense: 0..len().
pub type TbId = u32;

#[derive(Clone, Copy)]
struct Entry {
    start: u32,
    len: u16,
    total_nframe: u16,
    hash: u64,
}

#[derive(Default, Clone)]
pub struct TracebackTable {
    /// All frames of all tracebacks, back to back.
    frames: Vec<RawFrame>,
    /// By id. A dropped traceback's entry is [`FREE`] until its id is reused.
    entries: Vec<Entry>,
    /// Ids of dropped tracebacks, reused first by [`insert_new`](Self::insert_new).
    free: Vec<TbId>,
    /// Per traceback: all its frames are library code and the stack went deeper than them
    /// (see `Tracer::capture`). Only set while user-code rules are in force.
    needs_user_frame: Vec<bool>,
    index: HashTable<TbId>,
    /// Recently found tracebacks, by a cheap key (innermost frame, depth): a hot loop
    /// allocates from a handful of sites over and over, and checking one candidate is much
    /// cheaper than hashing a whole traceback.
    recent: Vec<Recent>,
}

/// A slot of `TracebackTable::recent`. It repeats the traceback's innermost frame, depth and
/// length, so that a one-frame traceback is recognised from the slot alone (one cache line
/// instead of three) and a longer one compares only its other frames.
#[derive(Clone, Copy)]
struct Recent {
    first: RawFrame,
    total_nframe: u16,
    len: u16,
    id: TbId,
}

const EMPTY_RECENT: Recent = Recent {
    first: RawFrame::UNKNOWN,
    total_nframe: 0,
    len: 0, // no traceback is empty: never matches
    id: TbId::MAX,
};

const RECENT_SLOTS: usize = 512;

/// The entry of a dropped traceback: no frames (a real traceback has at least one).
const FREE: Entry = Entry {
    start: 0,
    len: 0,
    total_nframe: 0,
    hash: 0,
};

fn recent_slot(frames: &[RawFrame], total_nframe: u16) -> usize {
    let (code, lasti) = frames
        .first()
        .map_or((0, 0), |f| (f.code as usize, f.lasti as usize));
    let mixed = (code >> 4)
        ^ lasti.wrapping_mul(0x9E37_79B9)
        ^ ((total_nframe as usize) << 7)
        ^ frames.len();
    mixed.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 7 & (RECENT_SLOTS - 1)
}

fn hash_traceback(frames: &[RawFrame], total_nframe: u16) -> u64 {
    let mut h = rustc_hash::FxBuildHasher.build_hasher();
    total_nframe.hash(&mut h);
    for &w in RawFrame::words(frames) {
        h.write_u64(w);
    }
    h.finish()
}

impl TracebackTable {
    /// The id space: every id in use is below it (dropped ids in it have no frames).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Tracebacks in the table (dropped ones not counted).
    pub fn live_len(&self) -> usize {
        self.entries.len() - self.free.len()
    }

    /// Drops every traceback `keep` says no; their ids are reused by later insertions, so a
    /// caller must drop only ids nothing refers to any more (no live trace). The frames of
    /// the kept ones are packed together again. Returns how many were dropped.
    pub fn retain(&mut self, mut keep: impl FnMut(TbId) -> bool) -> usize {
        let mut frames = Vec::with_capacity(self.frames.len());
        let mut dropped = 0;
        for id in 0..self.entries.len() {
            let e = self.entries[id];
            if e.len == 0 {
                continue; // already free
            }
            if keep(id as TbId) {
                let start = e.start as usize;
                self.entries[id].start = frames.len() as u32;
                frames.extend_from_slice(&self.frames[start..start + e.len as usize]);
            } else {
                self.entries[id] = FREE;
                self.needs_user_frame[id] = false;
                self.free.push(id as TbId);
                dropped += 1;
            }
        }
        if dropped == 0 {
            return 0;
        }
        frames.shrink_to(frames.len() * 2);
        self.frames = frames;
        // Lowest ids first, so the id space stays dense.
        self.free.sort_unstable_by(|a, b| b.cmp(a));
        self.reindex();
        dropped
    }

    /// Turns every frame of a code object in `codes` into [`RawFrame::UNKNOWN`] (the code
    /// objects are about to be let go of, and their addresses may then be reused by new code
    /// objects, whose frames must not match these). Returns how many frames changed. The index
    /// is rebuilt with the new contents' hashes; tracebacks that become equal stay apart.
    pub fn erase_codes(&mut self, codes: &rustc_hash::FxHashSet<usize>) -> usize {
        let mut erased = 0;
        for frame in self.frames.iter_mut() {
            if !frame.code.is_null() && codes.contains(&(frame.code as usize)) {
                *frame = RawFrame::UNKNOWN;
                erased += 1;
            }
        }
        if erased == 0 {
            return 0;
        }
        for id in 0..self.entries.len() {
            let e = self.entries[id];
            if e.len != 0 {
                self.entries[id].hash = hash_traceback(self.frames(id as TbId), e.total_nframe);
            }
        }
        self.reindex();
        erased
    }

    /// Rebuilds the hash index from the entries' stored hashes and empties the recent cache:
    /// after entries were dropped, moved or changed.
    fn reindex(&mut self) {
        self.index.clear();
        let entries = &self.entries;
        for (id, e) in entries.iter().enumerate() {
            if e.len != 0 {
                self.index.insert_unique(e.hash, id as TbId, |&i| entries[i as usize].hash);
            }
        }
        for r in self.recent.iter_mut() {
            *r = EMPTY_RECENT;
        }
    }

    /// Every frame of the tracebacks in the table.
    pub fn all_frames(&self) -> impl Iterator<Item = &RawFrame> {
        self.entries
            .iter()
            .flat_map(|e| &self.frames[e.start as usize..e.start as usize + e.len as usize])
    }

    pub fn frames(&self, id: TbId) -> &[RawFrame] {
        let e = &self.entries[id as usize];
        &self.frames[e.start as usize..e.start as usize + e.len as usize]
    }

    pub fn total_nframe(&self, id: TbId) -> u16 {
        self.entries[id as usize].total_nframe
    }

    fn matches(&self, id: TbId, frames: &[RawFrame], total_nframe: u16) -> bool {
        let e = &self.entries[id as usize];
        e.total_nframe == total_nframe
            && RawFrame::words(self.frames(id)) == RawFrame::words(frames)
    }

    /// Returns the id of an existing equal traceback, if any.
    #[inline]
    pub fn find(&mut self, frames: &[RawFrame], total_nframe: u16) -> Option<TbId> {
        if self.recent.is_empty() {
            self.recent = vec![EMPTY_RECENT; RECENT_SLOTS];
        }
        let slot = recent_slot(frames, total_nframe);
        let r = self.recent[slot];
        if r.len as usize == frames.len()
            && r.total_nframe == total_nframe
            && frames.first() == Some(&r.first)
            && (frames.len() == 1
                || RawFrame::words(&self.frames(r.id)[1..]) == RawFrame::words(&frames[1..]))
        {
            return Some(r.id);
        }
        self.find_slow(slot, frames, total_nframe)
    }

    #[inline(never)]
    fn find_slow(&mut self, slot: usize, frames: &[RawFrame], total_nframe: u16) -> Option<TbId> {
        let hash = hash_traceback(frames, total_nframe);
        let found = self
            .index
            .find(hash, |&id| {
                self.entries[id as usize].hash == hash && self.matches(id, frames, total_nframe)
            })
            .copied();
        if let Some(id) = found {
            self.remember(slot, frames, total_nframe, id);
        }
        found
    }

    /// Whether `id` is all library frames of a deeper stack (see `Tracer::capture`).
    #[inline]
    pub fn needs_user_frame(&self, id: TbId) -> bool {
        self.needs_user_frame[id as usize]
    }

    /// Recomputes every traceback's [`needs_user_frame`](Self::needs_user_frame) flag.
    pub fn reflag(&mut self, mut needs_user_frame: impl FnMut(&[RawFrame], u16) -> bool) {
        for id in 0..self.entries.len() {
            let flag = needs_user_frame(self.frames(id as TbId), self.entries[id].total_nframe);
            self.needs_user_frame[id] = flag;
        }
    }

    /// Adds a traceback known not to be in the table yet.
    pub fn insert_new(
        &mut self,
        frames: &[RawFrame],
        total_nframe: u16,
        needs_user_frame: bool,
    ) -> TbId {
        let hash = hash_traceback(frames, total_nframe);
        let entry = Entry {
            start: self.frames.len() as u32,
            len: frames.len() as u16,
            total_nframe,
            hash,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.entries[id as usize] = entry;
                self.needs_user_frame[id as usize] = needs_user_frame;
                id
            }
            None => {
                self.entries.push(entry);
                self.needs_user_frame.push(needs_user_frame);
                (self.entries.len() - 1) as TbId
            }
        };
        self.frames.extend_from_slice(frames);
        let entries = &self.entries;
        self.index
            .insert_unique(hash, id, |&i| entries[i as usize].hash);
        if !self.recent.is_empty() {
            self.remember(recent_slot(frames, total_nframe), frames, total_nframe, id);
        }
        id
    }

    fn remember(&mut self, slot: usize, frames: &[RawFrame], total_nframe: u16, id: TbId) {
        if frames.is_empty() {
            return; // callers intern at least one frame; an empty key is never looked up
        }
        self.recent[slot] = Recent {
            first: frames[0],
            total_nframe,
            len: frames.len() as u16,
            id,
        };
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Bytes of heap this table uses (for `get_tracemalloc_memory`).
    pub fn heap_bytes(&self) -> usize {
        self.frames.capacity() * std::mem::size_of::<RawFrame>()
            + self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.free.capacity() * std::mem::size_of::<TbId>()
            + self.needs_user_frame.capacity()
            + self.index.capacity() * (std::mem::size_of::<TbId>() + 1)
            + self.recent.capacity() * std::mem::size_of::<Recent>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(code: usize, lasti: i64) -> RawFrame {
        RawFrame {
            code: code as *mut _,
            lasti,
        }
    }

    #[test]
    fn interns_equal_tracebacks_once() {
        let mut t = TracebackTable::default();
        let a = [f(16, 1), f(32, 2)];
        assert_eq!(t.find(&a, 5), None);
        let id = t.insert_new(&a, 5, false);
        assert_eq!(t.find(&a, 5), Some(id));
        assert_eq!(t.find(&a, 6), None);
        let b = t.insert_new(&a[..1], 5, false);
        assert_ne!(id, b);
        assert_eq!(t.frames(id), &a);
        assert_eq!(t.frames(b), &a[..1]);
        assert_eq!(t.find(&a, 5), Some(id));
    }

    #[test]
    fn dropped_tracebacks_give_their_ids_back() {
        let mut t = TracebackTable::default();
        let a = t.insert_new(&[f(16, 1)], 1, false);
        let b = t.insert_new(&[f(32, 2), f(48, 3)], 2, true);
        let c = t.insert_new(&[f(64, 4)], 1, false);
        assert_eq!(t.retain(|id| id != b), 1);
        assert_eq!((t.len(), t.live_len()), (3, 2));
        assert_eq!(t.find(&[f(32, 2), f(48, 3)], 2), None);
        assert_eq!(t.frames(a), &[f(16, 1)]);
        assert_eq!(t.frames(c), &[f(64, 4)]);
        assert_eq!(t.find(&[f(64, 4)], 1), Some(c));
        assert!(!t.needs_user_frame(b));
        let d = t.insert_new(&[f(80, 5)], 1, false);
        assert_eq!(d, b, "the dropped id is reused");
        assert_eq!(t.frames(d), &[f(80, 5)]);
        assert_eq!(t.find(&[f(80, 5)], 1), Some(d));
        assert_eq!(t.all_frames().count(), 3);
        assert_eq!(t.retain(|_| true), 0);
    }
}
