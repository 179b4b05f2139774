//! Interning of captured tracebacks: each distinct (frames, total depth) gets a small id, so a
//! live trace costs 8 bytes of traceback reference instead of a copy of its stack.

use crate::frames::RawFrame;
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
    entries: Vec<Entry>,
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
    pub fn len(&self) -> usize {
        self.entries.len()
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
        let id = self.entries.len() as TbId;
        self.entries.push(Entry {
            start: self.frames.len() as u32,
            len: frames.len() as u16,
            total_nframe,
            hash,
        });
        self.frames.extend_from_slice(frames);
        self.needs_user_frame.push(needs_user_frame);
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
}
