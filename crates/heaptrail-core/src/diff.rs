//! `Snapshot.compare_to`: group two snapshots the same way and pair the groups.
//!
//! As stdlib `_compare_grouped_stats`: a group in both snapshots gives the new totals and their
//! differences; a group only in the new snapshot has its full totals as differences; a group only
//! in the old one has size and count 0 and negative differences. The result is sorted by
//! decreasing `(abs(size_diff), size, abs(count_diff), count, traceback)`.
//!
//! The two snapshots have unrelated id tables, so both are grouped into one shared
//! [`KeySpace`](crate::group) that merges filenames and frames by text; equal keys then have
//! equal ids and the join is a hash lookup on small integer slices.

use crate::group::{compare_keys, group_by, AnalysisError, Groups, KeyFrame, KeySpace, KeyType};
use crate::model::Snapshot;
use rustc_hash::FxHashMap;

/// `tracemalloc.StatisticDiff`. `frames` are most recent first, like the model.
#[derive(Clone, Debug, PartialEq)]
pub struct StatisticDiff {
    pub frames: Vec<KeyFrame>,
    pub size: u64,
    pub size_diff: i64,
    pub count: u64,
    pub count_diff: i64,
}

/// `new.compare_to(old, key_type, cumulative)`.
pub fn compare_to(
    new: &Snapshot,
    old: &Snapshot,
    key: KeyType,
    cumulative: bool,
) -> Result<Vec<StatisticDiff>, AnalysisError> {
    let mut space = KeySpace::default();
    let new_groups = group_by(&mut space, new, key, cumulative)?;
    let old_groups = group_by(&mut space, old, key, cumulative)?;
    let old_index = JoinIndex::new(&old_groups, key, space.frame_count());
    let mut old_matched = vec![false; old_groups.list.len()];

    // (key, size, size_diff, count, count_diff), keys still as ids for cheap sorting.
    type Row<'a> = (&'a [u32], u64, i64, u64, i64);
    let mut rows: Vec<Row> = Vec::with_capacity(new_groups.list.len() + old_groups.list.len());
    for g in &new_groups.list {
        let k = new_groups.key(g);
        let (old_size, old_count) = match old_index.get(k) {
            Some(i) => {
                old_matched[i] = true;
                (old_groups.list[i].size, old_groups.list[i].count)
            }
            None => (0, 0),
        };
        rows.push((
            k,
            g.size,
            signed_diff(g.size, old_size),
            g.count,
            signed_diff(g.count, old_count),
        ));
    }
    for (g, _) in old_groups
        .list
        .iter()
        .zip(&old_matched)
        .filter(|(_, &m)| !m)
    {
        rows.push((
            old_groups.key(g),
            0,
            signed_diff(0, g.size),
            0,
            signed_diff(0, g.count),
        ));
    }

    let order = space.frame_order();
    let sort_key = |r: &Row| (r.2.unsigned_abs(), r.1, r.4.unsigned_abs(), r.3);
    rows.sort_unstable_by(|a, b| {
        sort_key(b)
            .cmp(&sort_key(a))
            .then_with(|| compare_keys(&order, b.0, a.0))
    });
    Ok(rows
        .into_iter()
        .map(|(k, size, size_diff, count, count_diff)| StatisticDiff {
            frames: space.key_frames(k),
            size,
            size_diff,
            count,
            count_diff,
        })
        .collect())
}

/// Finds the old group with a given key. Single-frame keys (`lineno`, `filename`) are one key
/// frame id, so a dense vector beats hashing; traceback keys are hashed as slices.
enum JoinIndex<'g> {
    Dense(Vec<u32>),
    Hashed(FxHashMap<&'g [u32], usize>),
}

impl<'g> JoinIndex<'g> {
    fn new(groups: &'g Groups, key: KeyType, frame_count: usize) -> Self {
        if key == KeyType::Traceback {
            JoinIndex::Hashed(
                groups
                    .list
                    .iter()
                    .enumerate()
                    .map(|(i, g)| (groups.key(g), i))
                    .collect(),
            )
        } else {
            let mut dense = vec![u32::MAX; frame_count];
            for (i, g) in groups.list.iter().enumerate() {
                dense[groups.key(g)[0] as usize] = i as u32;
            }
            JoinIndex::Dense(dense)
        }
    }

    fn get(&self, key: &[u32]) -> Option<usize> {
        match self {
            JoinIndex::Dense(d) => match d[key[0] as usize] {
                u32::MAX => None,
                i => Some(i as usize),
            },
            JoinIndex::Hashed(h) => h.get(key).copied(),
        }
    }
}

/// `a - b` as a signed number. Python ints do not overflow; totals beyond `i64` are not a
/// realistic heap, so saturate rather than wrap.
fn signed_diff(a: u64, b: u64) -> i64 {
    let d = i128::from(a) - i128::from(b);
    d.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{create_snapshots, frames, snapshot_from_raw};

    fn sd(
        f: &[(&str, u32)],
        size: u64,
        size_diff: i64,
        count: u64,
        count_diff: i64,
    ) -> StatisticDiff {
        StatisticDiff {
            frames: frames(f),
            size,
            size_diff,
            count,
            count_diff,
        }
    }

    // TestSnapshot.test_snapshot_group_by_line (compare_to part)
    #[test]
    fn stdlib_compare_by_line() {
        let (snapshot, snapshot2) = create_snapshots();
        assert_eq!(
            compare_to(&snapshot2, &snapshot, KeyType::Lineno, false).unwrap(),
            vec![
                sd(&[("a.py", 5)], 5002, 5000, 2, 1),
                sd(&[("c.py", 578)], 400, 400, 1, 1),
                sd(&[("b.py", 1)], 0, -66, 0, -1),
                sd(&[("<unknown>", 0)], 0, -7, 0, -1),
                sd(&[("a.py", 2)], 30, 0, 3, 0),
            ]
        );
    }

    // TestSnapshot.test_snapshot_group_by_file (compare_to part)
    #[test]
    fn stdlib_compare_by_file() {
        let (snapshot, snapshot2) = create_snapshots();
        assert_eq!(
            compare_to(&snapshot2, &snapshot, KeyType::Filename, false).unwrap(),
            vec![
                sd(&[("a.py", 0)], 5032, 5000, 5, 1),
                sd(&[("c.py", 0)], 400, 400, 1, 1),
                sd(&[("b.py", 0)], 0, -66, 0, -1),
                sd(&[("<unknown>", 0)], 0, -7, 0, -1),
            ]
        );
    }

    // TestSnapshot.test_snapshot_group_by_traceback (compare_to part)
    #[test]
    fn stdlib_compare_by_traceback() {
        let (snapshot, snapshot2) = create_snapshots();
        let tb1 = [("a.py", 2), ("b.py", 4)];
        let tb2 = [("a.py", 5), ("b.py", 4)];
        assert_eq!(
            compare_to(&snapshot2, &snapshot, KeyType::Traceback, false).unwrap(),
            vec![
                sd(&tb2, 5002, 5000, 2, 1),
                sd(&[("c.py", 578)], 400, 400, 1, 1),
                sd(&[("b.py", 1)], 0, -66, 0, -1),
                sd(&[("<unknown>", 0)], 0, -7, 0, -1),
                sd(&tb1, 30, 0, 3, 0),
            ]
        );
        assert!(compare_to(&snapshot2, &snapshot, KeyType::Traceback, true).is_err());
    }

    #[test]
    fn compare_cumulative() {
        let (snapshot, snapshot2) = create_snapshots();
        // New: a.py:2 30/3, b.py:4 5032/5, a.py:5 5002/2, c.py:578 400/1.
        // Old: b.py:1 66/1, b.py:4 32/4, a.py:2 30/3, <unknown>:0 7/1, a.py:5 2/1.
        // (Expected order checked against CPython 3.13.)
        assert_eq!(
            compare_to(&snapshot2, &snapshot, KeyType::Lineno, true).unwrap(),
            vec![
                sd(&[("b.py", 4)], 5032, 5000, 5, 1),
                sd(&[("a.py", 5)], 5002, 5000, 2, 1),
                sd(&[("c.py", 578)], 400, 400, 1, 1),
                sd(&[("b.py", 1)], 0, -66, 0, -1),
                sd(&[("<unknown>", 0)], 0, -7, 0, -1),
                sd(&[("a.py", 2)], 30, 0, 3, 0),
            ]
        );
    }

    #[test]
    fn join_is_by_text_not_by_id() {
        // Same frames interned in a different order: ids differ, groups must still pair up.
        let old = snapshot_from_raw(&[(0, 1, &[("x.py", 1)], 1), (0, 5, &[("y.py", 2)], 1)], 1);
        let new = snapshot_from_raw(&[(0, 9, &[("y.py", 2)], 1), (0, 1, &[("x.py", 1)], 1)], 1);
        assert_eq!(
            compare_to(&new, &old, KeyType::Lineno, false).unwrap(),
            vec![
                sd(&[("y.py", 2)], 9, 4, 1, 0),
                sd(&[("x.py", 1)], 1, 0, 1, 0)
            ]
        );
        // Comparing a snapshot with itself: all differences are zero.
        let same = compare_to(&new, &new, KeyType::Traceback, false).unwrap();
        assert!(same.iter().all(|d| d.size_diff == 0 && d.count_diff == 0));
        assert_eq!(same.len(), 2);
    }

    #[test]
    fn sort_uses_absolute_differences_then_traceback() {
        let old = snapshot_from_raw(&[(0, 100, &[("shrink.py", 1)], 1)], 1);
        let new = snapshot_from_raw(
            &[(0, 50, &[("grow.py", 1)], 1), (0, 50, &[("also.py", 1)], 1)],
            1,
        );
        // |-100| first; then two ties on (50, 50, 1, 1) broken by traceback, descending.
        assert_eq!(
            compare_to(&new, &old, KeyType::Lineno, false).unwrap(),
            vec![
                sd(&[("shrink.py", 1)], 0, -100, 0, -1),
                sd(&[("grow.py", 1)], 50, 50, 1, 1),
                sd(&[("also.py", 1)], 50, 50, 1, 1),
            ]
        );
    }

    #[test]
    fn signed_diff_saturates() {
        assert_eq!(signed_diff(3, 5), -2);
        assert_eq!(signed_diff(u64::MAX, 0), i64::MAX);
        assert_eq!(signed_diff(0, u64::MAX), i64::MIN);
    }
}
