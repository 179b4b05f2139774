//! Snapshots shared by the unit tests: the data of CPython's `test_tracemalloc.create_snapshots()`.

use crate::model::{Snapshot, SnapshotBuilder};

/// A raw trace as `_tracemalloc._get_traces()` returns it:
/// `(domain, size, frames most recent first, total_nframe)`.
pub(crate) type RawTrace<'a> = (u32, u64, &'a [(&'a str, u32)], u32);

pub(crate) fn snapshot_from_raw(raw: &[RawTrace], traceback_limit: u32) -> Snapshot {
    let mut b = SnapshotBuilder::new(traceback_limit);
    for &(domain, size, frames, total_nframe) in raw {
        let ids: Vec<_> = frames
            .iter()
            .map(|&(file, line)| {
                let f = b.intern_filename(file);
                b.intern_frame(f, line)
            })
            .collect();
        let tb = b.intern_traceback(&ids, total_nframe);
        b.push_trace(domain, size, tb);
    }
    b.finish()
}

/// An owned [`RawTrace`].
pub(crate) type OwnedRawTrace = (u32, u64, Vec<(String, u32)>, u32);

/// Turns a snapshot back into raw traces, for comparing with the stdlib's expected lists.
pub(crate) fn raw_traces(s: &Snapshot) -> Vec<OwnedRawTrace> {
    s.traces
        .iter()
        .map(|t| {
            let tb = s.traceback(t.traceback);
            let frames = tb
                .frames
                .iter()
                .map(|&f| (s.filename(f).to_string(), s.frame(f).lineno))
                .collect();
            (t.domain, t.size, frames, tb.total_nframe)
        })
        .collect()
}

pub(crate) const AB: &[(&str, u32)] = &[("a.py", 2), ("b.py", 4)];
pub(crate) const A5B: &[(&str, u32)] = &[("a.py", 5), ("b.py", 4)];
pub(crate) const B1: &[(&str, u32)] = &[("b.py", 1)];
pub(crate) const UNKNOWN: &[(&str, u32)] = &[("<unknown>", 0)];
pub(crate) const C578: &[(&str, u32)] = &[("c.py", 578)];

/// `(snapshot, snapshot2)` of `create_snapshots()`.
pub(crate) fn create_snapshots() -> (Snapshot, Snapshot) {
    let raw1: &[RawTrace] = &[
        (0, 10, AB, 3),
        (0, 10, AB, 3),
        (0, 10, AB, 3),
        (1, 2, A5B, 3),
        (2, 66, B1, 1),
        (3, 7, UNKNOWN, 1),
    ];
    let raw2: &[RawTrace] = &[
        (0, 10, AB, 3),
        (0, 10, AB, 3),
        (0, 10, AB, 3),
        (2, 2, A5B, 3),
        (2, 5000, A5B, 3),
        (4, 400, C578, 1),
    ];
    (snapshot_from_raw(raw1, 2), snapshot_from_raw(raw2, 2))
}

/// Owned `(filename, lineno)` frames, most recent first, for readable expectations.
pub(crate) fn frames(list: &[(&str, u32)]) -> Vec<(crate::model::Filename, u32)> {
    list.iter().map(|&(f, l)| (f.into(), l)).collect()
}
