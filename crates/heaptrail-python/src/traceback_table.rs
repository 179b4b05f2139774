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
    index: HashTable<TbId>,
    /// The last traceback interned: allocation-heavy loops hit the same site over and over.
    last: Option<TbId>,
}

fn hash_traceback(frames: &[RawFrame], total_nframe: u16) -> u64 {
    let mut h = rustc_hash::FxBuildHasher.build_hasher();
    total_nframe.hash(&mut h);
    for f in frames {
        (f.code as usize).hash(&mut h);
        f.lasti.hash(&mut h);
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
        e.total_nframe == total_nframe && self.frames(id) == frames
    }

    /// Returns the id of an existing equal traceback, if any.
    pub fn find(&mut self, frames: &[RawFrame], total_nframe: u16) -> Option<TbId> {
        if let Some(last) = self.last {
            if self.matches(last, frames, total_nframe) {
                return Some(last);
            }
        }
        let hash = hash_traceback(frames, total_nframe);
        let found = self
            .index
            .find(hash, |&id| self.entries[id as usize].hash == hash && self.matches(id, frames, total_nframe))
            .copied();
        if found.is_some() {
            self.last = found;
        }
        found
    }

    /// Adds a traceback known not to be in the table yet.
    pub fn insert_new(&mut self, frames: &[RawFrame], total_nframe: u16) -> TbId {
        let hash = hash_traceback(frames, total_nframe);
        let id = self.entries.len() as TbId;
        self.entries.push(Entry {
            start: self.frames.len() as u32,
            len: frames.len() as u16,
            total_nframe,
            hash,
        });
        self.frames.extend_from_slice(frames);
        let entries = &self.entries;
        self.index.insert_unique(hash, id, |&i| entries[i as usize].hash);
        self.last = Some(id);
        id
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Bytes of heap this table uses (for `get_tracemalloc_memory`).
    pub fn heap_bytes(&self) -> usize {
        self.frames.capacity() * std::mem::size_of::<RawFrame>()
            + self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.index.capacity() * (std::mem::size_of::<TbId>() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(code: usize, lasti: i32) -> RawFrame {
        RawFrame { code: code as *mut _, lasti }
    }

    #[test]
    fn interns_equal_tracebacks_once() {
        let mut t = TracebackTable::default();
        let a = [f(16, 1), f(32, 2)];
        assert_eq!(t.find(&a, 5), None);
        let id = t.insert_new(&a, 5);
        assert_eq!(t.find(&a, 5), Some(id));
        assert_eq!(t.find(&a, 6), None);
        let b = t.insert_new(&a[..1], 5);
        assert_ne!(id, b);
        assert_eq!(t.frames(id), &a);
        assert_eq!(t.frames(b), &a[..1]);
        assert_eq!(t.find(&a, 5), Some(id));
    }
}
