//! Live memory per call stack: the common input of the flame-graph outputs (pprof samples,
//! folded stacks, the HTML report's flame graph).

use rustc_hash::FxHashMap;

use crate::model::{Snapshot, StackFrame, TracebackId};

/// Live memory allocated from one traceback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackTotal {
    pub traceback: TracebackId,
    /// Bytes in live blocks.
    pub size: u64,
    /// Live blocks.
    pub count: u64,
}

/// Sums the snapshot's traces per traceback (all domains together), largest first, ties by
/// traceback id so that the order is deterministic.
pub fn stack_totals(snapshot: &Snapshot) -> Vec<StackTotal> {
    let mut out: Vec<StackTotal> = snapshot
        .per_traceback()
        .into_iter()
        .enumerate()
        .filter(|(_, (_, count))| *count > 0)
        .map(|(traceback, (size, count))| StackTotal {
            traceback: traceback as TracebackId,
            size,
            count,
        })
        .collect();
    out.sort_unstable_by(|a, b| b.size.cmp(&a.size).then(a.traceback.cmp(&b.traceback)));
    out
}

/// `label` made safe inside a folded line: `;` separates frames and line breaks separate
/// stacks, so they become `:` and spaces.
pub fn folded_label(label: &str) -> String {
    label
        .chars()
        .map(|c| match c {
            ';' => ':',
            '\n' | '\r' => ' ',
            c => c,
        })
        .collect()
}

/// Folded stacks (`root;...;leaf`), one per traceback, with the live bytes and blocks under it.
/// `label` names a frame (its line and function); `;` and newlines in labels are replaced by `:` and spaces, since they
/// delimit frames and lines in the folded format. A traceback cut at the traceback limit starts
/// at its outermost kept frame; an empty traceback is `<unknown>`.
pub fn folded_stacks(
    snapshot: &Snapshot,
    mut label: impl FnMut(StackFrame) -> String,
) -> Vec<(String, StackTotal)> {
    let mut labels: FxHashMap<StackFrame, String> = FxHashMap::default();
    stack_totals(snapshot)
        .into_iter()
        .map(|total| {
            let mut line = String::new();
            // Frames are stored most recent first; folded stacks go from the root.
            for f in snapshot.stack(total.traceback).rev() {
                let name = labels.entry(f).or_insert_with(|| folded_label(&label(f)));
                if !line.is_empty() {
                    line.push(';');
                }
                line.push_str(name);
            }
            if line.is_empty() {
                line.push_str("<unknown>");
            }
            (line, total)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::snapshot_from_raw;

    #[test]
    fn totals_and_folded_lines_from_the_root() {
        let s = snapshot_from_raw(
            &[
                (0, 10, &[("a.py", 2), ("main.py", 1)], 2),
                (0, 30, &[("a.py", 2), ("main.py", 1)], 2),
                (0, 5, &[("b;c.py", 7)], 1),
                (0, 1, &[], 0),
            ],
            2,
        );
        let folded = folded_stacks(&s, |f| {
            format!("{}:{}", s.filename(f.frame), s.frame(f.frame).lineno)
        });
        let lines: Vec<_> = folded
            .iter()
            .map(|(l, t)| (l.as_str(), t.size, t.count))
            .collect();
        assert_eq!(
            lines,
            [
                ("main.py:1;a.py:2", 40, 2),
                ("b:c.py:7", 5, 1),
                ("<unknown>", 1, 1)
            ]
        );
        let total: u64 = stack_totals(&s).iter().map(|t| t.size).sum();
        assert_eq!(total, s.total_size());
    }
}
