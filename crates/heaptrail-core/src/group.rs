//! `Snapshot.statistics`: group traces by traceback, by line or by file, optionally cumulating
//! over every frame, and sort the groups like the standard library does.
//!
//! Keys follow stdlib `_group_by`:
//! * `traceback`: all frames (traces whose tracebacks have the same frames share a group, even
//!   if their `total_nframe` differs: the stdlib keys on the frames only);
//! * `lineno`: the most recent frame;
//! * `filename`: `(filename of the most recent frame, 0)`;
//! * cumulative (`lineno` / `filename` only): every frame of the traceback adds the trace to its
//!   group, once per occurrence, so a frame (or, for `filename`, a file) that appears twice in one
//!   traceback counts that trace twice, exactly as the stdlib loop does.
//!
//! Divergence: for `lineno` / `filename` keys the stdlib fails on a traceback with no frame;
//! here such a traceback counts as the single frame `("<unknown>", 0)`, which is what CPython's
//! `_tracemalloc` records when there is no Python frame. The `traceback` key keeps it as an empty
//! traceback, as the stdlib would.
//!
//! Speed (1M traces, thousands of tracebacks): sizes and counts are first summed per traceback
//! id; only then is each distinct traceback fanned out to its key. Keys are small integers from a
//! [`KeySpace`], which merges filenames and frames *by text*, so that snapshots whose id tables
//! differ (or contain duplicates) group and join correctly. Text is only touched to sort and to
//! build the output.

use crate::filter::UNKNOWN_FILENAME;
use crate::model::{Filename, FilenameId, FrameId, Snapshot};
use rustc_hash::FxHashMap;
use std::cmp::Ordering;
use std::collections::hash_map::Entry;
use std::fmt;
use std::str::FromStr;

/// What to group by (`key_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    Traceback,
    Filename,
    Lineno,
}

/// Errors of `statistics` / `compare_to` arguments, with the stdlib's `ValueError` messages.
#[derive(Debug)]
pub enum AnalysisError {
    UnknownKeyType(String),
    CumulativeWithTraceback,
}

impl fmt::Display for AnalysisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The extension words this one itself, with Python's repr() of the argument.
            AnalysisError::UnknownKeyType(k) => write!(f, "unknown key_type: {k:?}"),
            // (sic: "by used" is the stdlib's wording, kept so messages match.)
            AnalysisError::CumulativeWithTraceback => {
                f.write_str("cumulative mode cannot by used with key type 'traceback'")
            }
        }
    }
}

impl std::error::Error for AnalysisError {}

impl FromStr for KeyType {
    type Err = AnalysisError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "traceback" => Ok(KeyType::Traceback),
            "filename" => Ok(KeyType::Filename),
            "lineno" => Ok(KeyType::Lineno),
            _ => Err(AnalysisError::UnknownKeyType(s.to_owned())),
        }
    }
}

/// One frame of a group key: `(filename, lineno)`.
pub type KeyFrame = (Filename, u32);

/// `tracemalloc.Statistic`. `frames` are most recent first, like the model (the Python shell
/// reverses them into a `Traceback`).
#[derive(Clone, Debug, PartialEq)]
pub struct Statistic {
    pub frames: Vec<KeyFrame>,
    pub size: u64,
    pub count: u64,
}

/// `Snapshot.statistics(key_type, cumulative)`: groups sorted by decreasing
/// `(size, count, traceback)`.
pub fn statistics(
    snapshot: &Snapshot,
    key: KeyType,
    cumulative: bool,
) -> Result<Vec<Statistic>, AnalysisError> {
    let mut space = KeySpace::default();
    let mut groups = group_by(&mut space, snapshot, key, cumulative)?;
    let order = space.frame_order();
    let mut list = std::mem::take(&mut groups.list);
    list.sort_unstable_by(|a, b| {
        (b.size, b.count)
            .cmp(&(a.size, a.count))
            .then_with(|| compare_keys(&order, groups.key(b), groups.key(a)))
    });
    Ok(list
        .iter()
        .map(|g| Statistic {
            frames: space.key_frames(groups.key(g)),
            size: g.size,
            count: g.count,
        })
        .collect())
}

/// Filenames and frames merged by text across one or more snapshots. Ids are dense, so
/// per-key accumulators can be plain vectors.
#[derive(Default)]
pub(crate) struct KeySpace {
    names: Vec<Filename>,
    name_ids: FxHashMap<Filename, u32>,
    /// `(name id, lineno)` per key frame id.
    frames: Vec<(u32, u32)>,
    frame_ids: FxHashMap<(u32, u32), u32>,
}

/// Marks a lazily filled translation slot.
const UNSET: u32 = u32::MAX;

impl KeySpace {
    fn name_id(&mut self, name: &Filename) -> u32 {
        if let Some(&id) = self.name_ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.clone());
        self.name_ids.insert(name.clone(), id);
        id
    }

    fn frame_id(&mut self, name: u32, lineno: u32) -> u32 {
        let frames = &mut self.frames;
        *self.frame_ids.entry((name, lineno)).or_insert_with(|| {
            frames.push((name, lineno));
            (frames.len() - 1) as u32
        })
    }

    /// Number of key frames interned so far (key frame ids are below this).
    pub(crate) fn frame_count(&self) -> usize {
        self.frames.len()
    }

    /// The output form of a key.
    pub(crate) fn key_frames(&self, key: &[u32]) -> Vec<KeyFrame> {
        key.iter()
            .map(|&k| {
                let (name, lineno) = self.frames[k as usize];
                (self.names[name as usize].clone(), lineno)
            })
            .collect()
    }

    /// A sort key per key frame id that orders frames like Python's `(filename, lineno)` tuples:
    /// filename by code point (= UTF-8 byte order), then line. Computed once, after all
    /// snapshots of a comparison are interned, so sorting never touches strings.
    pub(crate) fn frame_order(&self) -> Vec<u64> {
        let mut by_name: Vec<u32> = (0..self.names.len() as u32).collect();
        by_name.sort_unstable_by(|&a, &b| self.names[a as usize].cmp(&self.names[b as usize]));
        let mut rank = vec![0u32; self.names.len()];
        for (r, &id) in by_name.iter().enumerate() {
            rank[id as usize] = r as u32;
        }
        self.frames
            .iter()
            .map(|&(name, lineno)| (u64::from(rank[name as usize]) << 32) | u64::from(lineno))
            .collect()
    }
}

/// Compares two keys as stdlib `Traceback`s compare: frames oldest first (keys are stored most
/// recent first, hence the reversal), lexicographically, a shorter prefix first.
pub(crate) fn compare_keys(order: &[u64], a: &[u32], b: &[u32]) -> Ordering {
    let rank = |&k: &u32| order[k as usize];
    a.iter().rev().map(rank).cmp(b.iter().rev().map(rank))
}

/// One group: where its key lies in [`Groups::arena`], and its totals.
#[derive(Clone, Copy)]
pub(crate) struct Group {
    start: u32,
    len: u32,
    pub size: u64,
    pub count: u64,
}

/// The groups of one snapshot. Keys (key frame ids of a [`KeySpace`], most recent first) live
/// in one flat arena so that tens of thousands of groups cost no allocation each.
pub(crate) struct Groups {
    arena: Vec<u32>,
    pub list: Vec<Group>,
}

impl Groups {
    pub(crate) fn key(&self, g: &Group) -> &[u32] {
        &self.arena[g.start as usize..][..g.len as usize]
    }
}

/// Translates one snapshot's ids into a [`KeySpace`], lazily: only frames that end up in a key
/// are hashed.
struct SnapshotKeys<'s> {
    snapshot: &'s Snapshot,
    /// Snapshot filename id -> key name id.
    name: Vec<u32>,
    /// Snapshot frame id -> key frame id of `(filename, lineno)`.
    line_frame: Vec<u32>,
    /// Snapshot filename id -> key frame id of `(filename, 0)`.
    file_frame: Vec<u32>,
}

impl<'s> SnapshotKeys<'s> {
    fn new(snapshot: &'s Snapshot) -> Self {
        SnapshotKeys {
            snapshot,
            name: vec![UNSET; snapshot.filenames.len()],
            line_frame: vec![UNSET; snapshot.frames.len()],
            file_frame: vec![UNSET; snapshot.filenames.len()],
        }
    }

    fn name(&mut self, space: &mut KeySpace, id: FilenameId) -> u32 {
        let slot = &mut self.name[id as usize];
        if *slot == UNSET {
            *slot = space.name_id(&self.snapshot.filenames[id as usize]);
        }
        *slot
    }

    /// The key frame for snapshot frame `id` under `key` (`Filename` drops the line).
    fn frame(&mut self, space: &mut KeySpace, id: FrameId, key: KeyType) -> u32 {
        let frame = self.snapshot.frame(id);
        if key == KeyType::Filename {
            if self.file_frame[frame.filename as usize] == UNSET {
                let name = self.name(space, frame.filename);
                self.file_frame[frame.filename as usize] = space.frame_id(name, 0);
            }
            self.file_frame[frame.filename as usize]
        } else {
            if self.line_frame[id as usize] == UNSET {
                let name = self.name(space, frame.filename);
                self.line_frame[id as usize] = space.frame_id(name, frame.lineno);
            }
            self.line_frame[id as usize]
        }
    }
}

/// stdlib `Snapshot._group_by`, unsorted. Groups of one snapshot have distinct keys; every
/// group has `count > 0`.
pub(crate) fn group_by(
    space: &mut KeySpace,
    snapshot: &Snapshot,
    key: KeyType,
    cumulative: bool,
) -> Result<Groups, AnalysisError> {
    if cumulative && key == KeyType::Traceback {
        return Err(AnalysisError::CumulativeWithTraceback);
    }
    // Pass 1: totals per traceback id. This is the only loop over the traces.
    let per_traceback = snapshot.per_traceback();
    let used = per_traceback
        .iter()
        .enumerate()
        .filter(|(_, &(_, count))| count > 0);

    let mut keys = SnapshotKeys::new(snapshot);
    let mut arena = Vec::new();
    let mut list = Vec::new();
    if key == KeyType::Traceback {
        // Pass 2: translate each used traceback into the arena...
        for (tb, &(size, count)) in used {
            let start = arena.len() as u32;
            for &f in snapshot.tracebacks[tb].frames.iter() {
                arena.push(keys.frame(space, f, key));
            }
            let len = arena.len() as u32 - start;
            list.push(Group {
                start,
                len,
                size,
                count,
            });
        }
        // ...then merge the ones with identical frames (by text). Duplicates are rare (same
        // frames, different `total_nframe`, or duplicated table entries); their arena slots stay
        // behind unused.
        let groups = Groups { arena, list };
        let mut first: FxHashMap<&[u32], usize> = FxHashMap::default();
        first.reserve(groups.list.len());
        let mut merged: Vec<Group> = Vec::with_capacity(groups.list.len());
        for g in &groups.list {
            match first.entry(groups.key(g)) {
                Entry::Occupied(e) => {
                    let m = &mut merged[*e.get()];
                    m.size += g.size;
                    m.count += g.count;
                }
                Entry::Vacant(e) => {
                    e.insert(merged.len());
                    merged.push(*g);
                }
            }
        }
        drop(first);
        return Ok(Groups {
            arena: groups.arena,
            list: merged,
        });
    }

    // Pass 2 for single-frame keys: accumulate per key frame id in a dense vector.
    let mut acc: Vec<(u64, u64)> = Vec::new();
    fn add(acc: &mut Vec<(u64, u64)>, k: u32, size: u64, count: u64) {
        if acc.len() <= k as usize {
            acc.resize(k as usize + 1, (0, 0));
        }
        acc[k as usize].0 += size;
        acc[k as usize].1 += count;
    }
    let mut unknown = UNSET;
    for (tb, &(size, count)) in used {
        let frames = &snapshot.tracebacks[tb].frames;
        if frames.is_empty() {
            if unknown == UNSET {
                let name = space.name_id(&Filename::from(UNKNOWN_FILENAME));
                unknown = space.frame_id(name, 0);
            }
            add(&mut acc, unknown, size, count);
        } else if cumulative {
            for &f in frames.iter() {
                add(&mut acc, keys.frame(space, f, key), size, count);
            }
        } else {
            add(&mut acc, keys.frame(space, frames[0], key), size, count);
        }
    }
    for (k, &(size, count)) in acc.iter().enumerate().filter(|(_, &(_, count))| count > 0) {
        list.push(Group {
            start: arena.len() as u32,
            len: 1,
            size,
            count,
        });
        arena.push(k as u32);
    }
    Ok(Groups { arena, list })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{create_snapshots, frames, snapshot_from_raw, RawTrace};

    fn stat(f: &[(&str, u32)], size: u64, count: u64) -> Statistic {
        Statistic {
            frames: frames(f),
            size,
            count,
        }
    }

    fn lineno(name: &str, line: u32) -> Vec<(&str, u32)> {
        vec![(name, line)]
    }

    // TestSnapshot.test_snapshot_group_by_line
    #[test]
    fn stdlib_group_by_line() {
        let (snapshot, snapshot2) = create_snapshots();
        assert_eq!(
            statistics(&snapshot, KeyType::Lineno, false).unwrap(),
            vec![
                stat(&lineno("b.py", 1), 66, 1),
                stat(&lineno("a.py", 2), 30, 3),
                stat(&lineno("<unknown>", 0), 7, 1),
                stat(&lineno("a.py", 5), 2, 1),
            ]
        );
        assert_eq!(
            statistics(&snapshot2, KeyType::Lineno, false).unwrap(),
            vec![
                stat(&lineno("a.py", 5), 5002, 2),
                stat(&lineno("c.py", 578), 400, 1),
                stat(&lineno("a.py", 2), 30, 3),
            ]
        );
    }

    // TestSnapshot.test_snapshot_group_by_file
    #[test]
    fn stdlib_group_by_file() {
        let (snapshot, snapshot2) = create_snapshots();
        assert_eq!(
            statistics(&snapshot, KeyType::Filename, false).unwrap(),
            vec![
                stat(&lineno("b.py", 0), 66, 1),
                stat(&lineno("a.py", 0), 32, 4),
                stat(&lineno("<unknown>", 0), 7, 1),
            ]
        );
        assert_eq!(
            statistics(&snapshot2, KeyType::Filename, false).unwrap(),
            vec![
                stat(&lineno("a.py", 0), 5032, 5),
                stat(&lineno("c.py", 0), 400, 1)
            ]
        );
    }

    // TestSnapshot.test_snapshot_group_by_traceback
    #[test]
    fn stdlib_group_by_traceback() {
        let (snapshot, snapshot2) = create_snapshots();
        let tb1 = [("a.py", 2), ("b.py", 4)];
        let tb2 = [("a.py", 5), ("b.py", 4)];
        assert_eq!(
            statistics(&snapshot, KeyType::Traceback, false).unwrap(),
            vec![
                stat(&[("b.py", 1)], 66, 1),
                stat(&tb1, 30, 3),
                stat(&[("<unknown>", 0)], 7, 1),
                stat(&tb2, 2, 1),
            ]
        );
        assert_eq!(
            statistics(&snapshot2, KeyType::Traceback, false).unwrap(),
            vec![
                stat(&tb2, 5002, 2),
                stat(&[("c.py", 578)], 400, 1),
                stat(&tb1, 30, 3)
            ]
        );
        let err = statistics(&snapshot, KeyType::Traceback, true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cumulative mode cannot by used with key type 'traceback'"
        );
    }

    // TestSnapshot.test_snapshot_group_by_cumulative
    #[test]
    fn stdlib_group_by_cumulative() {
        let (snapshot, _) = create_snapshots();
        assert_eq!(
            statistics(&snapshot, KeyType::Filename, true).unwrap(),
            vec![
                stat(&lineno("b.py", 0), 98, 5),
                stat(&lineno("a.py", 0), 32, 4),
                stat(&lineno("<unknown>", 0), 7, 1),
            ]
        );
        assert_eq!(
            statistics(&snapshot, KeyType::Lineno, true).unwrap(),
            vec![
                stat(&lineno("b.py", 1), 66, 1),
                stat(&lineno("b.py", 4), 32, 4),
                stat(&lineno("a.py", 2), 30, 3),
                stat(&lineno("<unknown>", 0), 7, 1),
                stat(&lineno("a.py", 5), 2, 1),
            ]
        );
    }

    #[test]
    fn key_type_parsing_and_messages() {
        assert_eq!("traceback".parse::<KeyType>().unwrap(), KeyType::Traceback);
        assert_eq!("filename".parse::<KeyType>().unwrap(), KeyType::Filename);
        assert_eq!("lineno".parse::<KeyType>().unwrap(), KeyType::Lineno);
        assert!(matches!(
            "Lineno".parse::<KeyType>(),
            Err(AnalysisError::UnknownKeyType(k)) if k == "Lineno"
        ));
    }

    #[test]
    fn cumulative_counts_repeated_frames_twice() {
        // Recursion: x.py:1 appears twice in one traceback; stdlib counts the trace twice.
        let s = snapshot_from_raw(&[(0, 10, &[("x.py", 1), ("x.py", 1), ("x.py", 2)], 3)], 5);
        assert_eq!(
            statistics(&s, KeyType::Lineno, true).unwrap(),
            vec![
                stat(&lineno("x.py", 1), 20, 2),
                stat(&lineno("x.py", 2), 10, 1)
            ]
        );
        assert_eq!(
            statistics(&s, KeyType::Filename, true).unwrap(),
            vec![stat(&lineno("x.py", 0), 30, 3)]
        );
    }

    #[test]
    fn tracebacks_differing_only_in_total_nframe_share_a_group() {
        let f: &[(&str, u32)] = &[("a.py", 1)];
        let s = snapshot_from_raw(&[(0, 1, f, 1), (0, 2, f, 7)], 5);
        assert_eq!(s.tracebacks.len(), 2);
        assert_eq!(
            statistics(&s, KeyType::Traceback, false).unwrap(),
            vec![stat(f, 3, 2)]
        );
    }

    #[test]
    fn duplicate_table_entries_are_merged_by_text() {
        // A hand-built snapshot whose filename table holds "a.py" twice.
        let mut s = snapshot_from_raw(&[(0, 1, &[("a.py", 1)], 1), (0, 2, &[("b.py", 1)], 1)], 1);
        s.filenames[1] = "a.py".into();
        assert_eq!(
            statistics(&s, KeyType::Lineno, false).unwrap(),
            vec![stat(&[("a.py", 1)], 3, 2)]
        );
        assert_eq!(
            statistics(&s, KeyType::Traceback, false).unwrap(),
            vec![stat(&[("a.py", 1)], 3, 2)]
        );
    }

    #[test]
    fn ties_break_on_traceback_oldest_frame_first() {
        // Same size and count everywhere: order is by traceback, descending, compared oldest
        // frame first; a shorter prefix is smaller.
        let raw: &[RawTrace] = &[
            (0, 5, &[("z.py", 1), ("a.py", 9)], 2), // oldest a.py:9
            (0, 5, &[("a.py", 1), ("b.py", 1)], 2), // oldest b.py:1
            (0, 5, &[("b.py", 1)], 1),              // prefix of the one above
            (0, 5, &[("a.py", 10)], 1),
            (0, 5, &[("B.py", 1)], 1), // uppercase sorts before lowercase
            (0, 5, &[("é.py", 1)], 1), // non-ASCII sorts after ASCII
        ];
        let s = snapshot_from_raw(raw, 2);
        let got: Vec<Vec<KeyFrame>> = statistics(&s, KeyType::Traceback, false)
            .unwrap()
            .into_iter()
            .map(|st| st.frames)
            .collect();
        let want: Vec<Vec<KeyFrame>> = vec![
            frames(&[("é.py", 1)]),
            frames(&[("a.py", 1), ("b.py", 1)]),
            frames(&[("b.py", 1)]),
            frames(&[("a.py", 10)]),
            frames(&[("z.py", 1), ("a.py", 9)]),
            frames(&[("B.py", 1)]),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn empty_tracebacks() {
        let s = snapshot_from_raw(&[(0, 4, &[], 0), (0, 1, &[("<unknown>", 0)], 1)], 1);
        assert_eq!(
            statistics(&s, KeyType::Lineno, false).unwrap(),
            vec![stat(&[("<unknown>", 0)], 5, 2)]
        );
        assert_eq!(
            statistics(&s, KeyType::Filename, true).unwrap(),
            vec![stat(&[("<unknown>", 0)], 5, 2)]
        );
        assert_eq!(
            statistics(&s, KeyType::Traceback, false).unwrap(),
            vec![stat(&[], 4, 1), stat(&[("<unknown>", 0)], 1, 1)]
        );
    }

    #[test]
    fn unused_tracebacks_and_zero_sizes() {
        let mut s = snapshot_from_raw(&[(0, 0, &[("a.py", 1)], 1)], 1);
        // A table entry that no trace uses must not produce a group.
        s.filenames.push("unused.py".into());
        s.frames.push(crate::model::Frame {
            filename: 1,
            lineno: 3,
        });
        s.tracebacks.push(crate::model::Traceback {
            frames: Box::new([1]),
            total_nframe: 1,
        });
        assert!(s.validate().is_ok());
        for key in [KeyType::Lineno, KeyType::Filename, KeyType::Traceback] {
            let st = statistics(&s, key, false).unwrap();
            assert_eq!(st.len(), 1, "{key:?}");
            assert_eq!((st[0].size, st[0].count), (0, 1));
        }
        assert!(statistics(&Snapshot::default(), KeyType::Lineno, true)
            .unwrap()
            .is_empty());
    }
}
