//! The live-block table: address -> (size, traceback id), plus traced/peak counters and the
//! live bytes and blocks of each traceback (what the leak watcher reads every window: a copy
//! of a few thousand totals instead of a million traces).
//!
//! In sampled mode every trace is a sample and counts for its weight (`heaptrail_core::
//! sampling`): the counters and totals are then estimates. Blocks are kept in the totals in
//! fixed-point units (`sampling::BLOCK` per block in exact mode) so that fractional weights
//! add and subtract exactly.
//!
//! This is the structure every allocation and every free touches, so it is kept small: a
//! trace is 16 bytes in an open-addressing table (8-byte address key, 4-byte size, 4-byte
//! traceback id). The rare block of 4 GiB or more keeps its real size in a side table.

use crate::engine::traceback_interner::TbId;
use hashbrown::HashMap;
use heaptrail_core::sampling::{SampleRate, Weight};
use rustc_hash::FxBuildHasher;

/// Size stored in a `Packed` when the real size lives in `TraceStore::big_sizes`.
const BIG: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Packed {
    size: u32,
    tb: TbId,
}

#[derive(Default)]
pub struct TraceStore {
    traces: HashMap<usize, Packed, FxBuildHasher>,
    big_sizes: HashMap<usize, u64, FxBuildHasher>,
    /// Live traces kept in block headers (see `block_headers.rs`), counted here so that the
    /// counters cover every trace.
    headered: usize,
    /// `(bytes, block units)` live per traceback id, over both kinds of trace.
    totals: Vec<(u64, u64)>,
    traced: u64,
    peak: u64,
    /// Sampled mode's rate (None: exact). Set only while the store is empty.
    rate: Option<SampleRate>,
}

impl TraceStore {
    /// Live traces, in this table and in block headers.
    pub fn len(&self) -> usize {
        self.traces.len() + self.headered
    }

    pub fn headered_len(&self) -> usize {
        self.headered
    }

    /// Counts a trace kept in a block header.
    #[inline]
    pub fn count_in(&mut self, size: u64, tb: TbId) {
        self.headered += 1;
        self.live_in(size, tb);
    }

    /// Forgets a trace kept in a block header.
    #[inline]
    pub fn count_out(&mut self, size: u64, tb: TbId) {
        self.headered = self.headered.saturating_sub(1);
        self.live_out(size, tb);
    }

    /// Puts sampled mode (Some) or exact mode in force; the store must be empty.
    pub fn set_rate(&mut self, rate: Option<SampleRate>) {
        debug_assert!(self.len() == 0 || self.rate == rate);
        self.rate = rate;
    }

    /// What a trace of `size` bytes counts for.
    #[inline]
    fn weight(&self, size: u64) -> Weight {
        Weight::of(size, self.rate)
    }

    #[inline]
    fn live_in(&mut self, size: u64, tb: TbId) {
        let w = self.weight(size);
        self.traced += w.bytes;
        if self.traced > self.peak {
            self.peak = self.traced;
        }
        let i = tb as usize;
        if i >= self.totals.len() {
            self.totals.resize(i + 1, (0, 0));
        }
        let t = &mut self.totals[i];
        t.0 += w.bytes;
        t.1 += w.blocks;
    }

    #[inline]
    fn live_out(&mut self, size: u64, tb: TbId) {
        let w = self.weight(size);
        self.traced -= w.bytes.min(self.traced);
        if let Some(t) = self.totals.get_mut(tb as usize) {
            t.0 -= w.bytes.min(t.0);
            t.1 = t.1.saturating_sub(w.blocks);
        }
    }

    /// `(bytes, block units)` live per traceback id (ids past the end have none): exact, or
    /// estimates in sampled mode; `sampling::blocks` turns units into blocks.
    pub fn totals(&self) -> &[(u64, u64)] {
        &self.totals
    }

    /// Records the block at `addr`; returns true if it replaced an entry at that address.
    pub fn add(&mut self, addr: usize, size: usize, tb: TbId) -> bool {
        let size = size as u64;
        let is_big = size >= BIG as u64;
        let packed = Packed {
            size: if is_big { BIG } else { size as u32 },
            tb,
        };
        // A block freed behind our back (e.g. while tracing was paused) may still be listed
        // under a reused address: replace it, keeping the counters right.
        let replaced = self.traces.insert(addr, packed);
        if let Some(old) = replaced {
            let old_size = self.take_size(addr, old);
            self.live_out(old_size, old.tb);
        }
        if is_big {
            self.big_sizes.insert(addr, size);
        }
        self.live_in(size, tb);
        replaced.is_some()
    }

    /// The size of a trace that is leaving the table.
    fn take_size(&mut self, addr: usize, p: Packed) -> u64 {
        if p.size == BIG {
            self.big_sizes.remove(&addr).unwrap_or(0)
        } else {
            p.size as u64
        }
    }

    /// Forgets the block at `addr`. Returns false when it was not traced.
    pub fn remove(&mut self, addr: usize) -> bool {
        match self.traces.remove(&addr) {
            Some(p) => {
                let size = self.take_size(addr, p);
                self.live_out(size, p.tb);
                true
            }
            None => false,
        }
    }

    /// Gives the block at `addr` a new traceback (an object reused from a free list).
    pub fn retag(&mut self, addr: usize, tb: TbId) {
        if let Some(&p) = self.traces.get(&addr) {
            let size = self.size_of(addr, p);
            self.live_out(size, p.tb);
            self.live_in(size, tb);
            if let Some(p) = self.traces.get_mut(&addr) {
                p.tb = tb;
            }
        }
    }

    pub fn get(&self, addr: usize) -> Option<(u64, TbId)> {
        self.traces
            .get(&addr)
            .map(|p| (self.size_of(addr, *p), p.tb))
    }

    fn size_of(&self, addr: usize, p: Packed) -> u64 {
        if p.size == BIG {
            self.big_sizes.get(&addr).copied().unwrap_or(0)
        } else {
            p.size as u64
        }
    }

    /// Calls `f(size, traceback)` for every live block in this table.
    pub fn for_each_trace(&self, mut f: impl FnMut(u64, TbId)) {
        if self.big_sizes.is_empty() {
            for p in self.traces.values() {
                f(p.size as u64, p.tb);
            }
        } else {
            for (&addr, &p) in &self.traces {
                f(self.size_of(addr, p), p.tb);
            }
        }
    }

    /// Calls `f(address, traceback)` for every live block.
    pub fn for_each_block(&self, mut f: impl FnMut(usize, TbId)) {
        for (&addr, p) in &self.traces {
            f(addr, p.tb);
        }
    }

    pub fn traced(&self) -> u64 {
        self.traced
    }

    pub fn peak(&self) -> u64 {
        self.peak
    }

    pub fn reset_peak(&mut self) {
        self.peak = self.traced;
    }

    pub fn clear(&mut self) {
        self.traces = HashMap::default();
        self.big_sizes = HashMap::default();
        self.headered = 0;
        self.totals = Vec::new();
        self.traced = 0;
        self.peak = 0;
        // `rate` stays: it changes only through `set_rate`.
    }

    pub fn heap_bytes(&self) -> usize {
        let slot = std::mem::size_of::<(usize, Packed)>() + 1;
        self.traces.capacity() * slot
            + self.big_sizes.capacity() * 17
            + self.totals.capacity() * std::mem::size_of::<(u64, u64)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_traced_and_peak() {
        let mut s = TraceStore::default();
        s.add(16, 100, 0);
        s.add(32, 50, 1);
        assert_eq!((s.traced(), s.peak()), (150, 150));
        assert!(s.remove(16));
        assert!(!s.remove(16));
        assert_eq!((s.traced(), s.peak()), (50, 150));
        s.reset_peak();
        assert_eq!(s.peak(), 50);
        assert_eq!(s.get(32), Some((50, 1)));
    }

    #[test]
    fn big_blocks_keep_their_size() {
        let mut s = TraceStore::default();
        let big = 5usize << 32;
        s.add(64, big, 3);
        assert_eq!(s.get(64), Some((big as u64, 3)));
        let mut seen = vec![];
        s.for_each_trace(|size, tb| seen.push((size, tb)));
        assert_eq!(seen, vec![(big as u64, 3)]);
        assert!(s.remove(64));
        assert_eq!(s.traced(), 0);
    }

    #[test]
    fn totals_per_traceback_follow_every_change() {
        let mut s = TraceStore::default();
        s.add(16, 100, 0);
        s.add(32, 50, 0);
        s.count_in(7, 2);
        s.retag(32, 1);
        const B: u64 = heaptrail_core::sampling::BLOCK;
        assert_eq!(s.totals(), &[(100, B), (50, B), (7, B)]);
        s.add(16, 10, 1); // an address reused behind our back
        s.remove(32);
        s.count_out(7, 2);
        assert_eq!(s.totals(), &[(0, 0), (10, B), (0, 0)]);
        assert_eq!((s.traced(), s.len()), (10, 1));
    }

    #[test]
    fn sampled_traces_count_for_their_weight() {
        let rate = SampleRate::new(1000).unwrap();
        let mut s = TraceStore::default();
        s.set_rate(Some(rate));
        s.add(16, 10, 0);
        s.count_in(5000, 1);
        let (small, big) = (rate.weight(10), rate.weight(5000));
        assert_eq!(s.totals(), &[(small.bytes, small.blocks), (big.bytes, big.blocks)]);
        assert_eq!(s.traced(), small.bytes + big.bytes);
        assert!(small.bytes > 900, "a 10-byte sample stands for about the rate in bytes");
        s.remove(16);
        s.count_out(5000, 1);
        assert_eq!(s.totals(), &[(0, 0), (0, 0)]);
        assert_eq!(s.traced(), 0);
    }

    #[test]
    fn replacing_an_address_keeps_counters_right() {
        let mut s = TraceStore::default();
        s.add(16, 100, 0);
        s.add(16, 10, 1);
        assert_eq!(s.traced(), 10);
        assert_eq!(s.len(), 1);
    }
}
