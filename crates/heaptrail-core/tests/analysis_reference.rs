//! The optimized analyses (id interning, per-traceback aggregation, memoized filters) against
//! a line-by-line transcription of the standard library's algorithms on plain strings, over
//! random snapshots. (The modules' unit tests hold the stdlib's own expected values; this
//! covers the combinations they do not: repeated frames, shared prefixes, ties, domains.)

use heaptrail_core::diff::compare_to;
use heaptrail_core::filter::{filter_traces, FrameFilter, TraceFilter};
use heaptrail_core::group::{statistics, KeyType};
use heaptrail_core::{Snapshot, SnapshotBuilder};
use proptest::prelude::*;
use std::collections::HashMap;

type Frames = Vec<(String, u32)>; // most recent first
type RawTrace = (u32, u64, Frames);

fn build(raw: &[RawTrace]) -> Snapshot {
    let mut b = SnapshotBuilder::new(4);
    for (domain, size, frames) in raw {
        let ids: Vec<u32> = frames
            .iter()
            .map(|(f, l)| {
                let id = b.intern_filename(f);
                b.intern_frame(id, *l)
            })
            .collect();
        let tb = b.intern_traceback(&ids, frames.len() as u32);
        b.push_trace(*domain, *size, tb);
    }
    b.finish()
}

/// stdlib `_group_by` (every traceback here has at least one frame, as in CPython).
fn reference_group(
    raw: &[RawTrace],
    key: KeyType,
    cumulative: bool,
) -> HashMap<Frames, (u64, u64)> {
    let mut stats: HashMap<Frames, (u64, u64)> = HashMap::new();
    for (_, size, frames) in raw {
        let keys: Vec<Frames> = match (key, cumulative) {
            (KeyType::Traceback, _) => vec![frames.clone()],
            (KeyType::Lineno, false) => vec![vec![frames[0].clone()]],
            (KeyType::Filename, false) => vec![vec![(frames[0].0.clone(), 0)]],
            (KeyType::Lineno, true) => frames.iter().map(|f| vec![f.clone()]).collect(),
            (KeyType::Filename, true) => frames.iter().map(|f| vec![(f.0.clone(), 0)]).collect(),
        };
        for k in keys {
            let e = stats.entry(k).or_default();
            e.0 += size;
            e.1 += 1;
        }
    }
    stats
}

/// stdlib `Traceback` order: frames oldest first, tuples compared lexicographically.
fn oldest_first(f: &Frames) -> Frames {
    f.iter().rev().cloned().collect()
}

fn reference_statistics(
    raw: &[RawTrace],
    key: KeyType,
    cumulative: bool,
) -> Vec<(Frames, u64, u64)> {
    let mut v: Vec<_> = reference_group(raw, key, cumulative)
        .into_iter()
        .map(|(k, (s, c))| (k, s, c))
        .collect();
    v.sort_by_key(|r| std::cmp::Reverse((r.1, r.2, oldest_first(&r.0))));
    v
}

fn reference_compare(
    new: &[RawTrace],
    old: &[RawTrace],
    key: KeyType,
    cumulative: bool,
) -> Vec<(Frames, u64, i64, u64, i64)> {
    let new_g = reference_group(new, key, cumulative);
    let mut old_g = reference_group(old, key, cumulative);
    let mut v = Vec::new();
    for (k, (s, c)) in new_g {
        let (os, oc) = old_g.remove(&k).unwrap_or((0, 0));
        v.push((k, s, s as i64 - os as i64, c, c as i64 - oc as i64));
    }
    for (k, (s, c)) in old_g {
        v.push((k, 0, -(s as i64), 0, -(c as i64)));
    }
    let sk = |r: &(Frames, u64, i64, u64, i64)| {
        (
            r.2.unsigned_abs(),
            r.1,
            r.4.unsigned_abs(),
            r.3,
            oldest_first(&r.0),
        )
    };
    v.sort_by_key(|r| std::cmp::Reverse(sk(r)));
    v
}

/// stdlib `Filter._match` / `DomainFilter._match`, one trace at a time, no memo.
fn reference_match(f: &TraceFilter, (domain, _, frames): &RawTrace) -> bool {
    let domain = u64::from(*domain);
    match f {
        TraceFilter::Domain {
            inclusive,
            domain: d,
        } => (domain == *d) == *inclusive,
        TraceFilter::Frame(ff) => {
            let res = ff.match_traceback(frames.iter().map(|(n, l)| (n.as_str(), i64::from(*l))));
            match ff.domain {
                None => res,
                Some(d) if ff.inclusive => res && domain == d,
                Some(d) => res || domain != d,
            }
        }
    }
}

fn to_frames(v: &[(std::sync::Arc<str>, u32)]) -> Frames {
    v.iter().map(|(f, l)| (f.to_string(), *l)).collect()
}

const FILES: &[&str] = &[
    "a.py",
    "b.py",
    "B.py",
    "a.pyc",
    "é.py",
    "x/y.py",
    "<unknown>",
    "a",
];
const PATTERNS: &[&str] = &[
    "a.py",
    "*.py",
    "b*",
    "[ab].py",
    "<unknown>",
    "*y*",
    "[!a]*",
    "a.pyc",
];

fn frames_strategy() -> impl Strategy<Value = Frames> {
    prop::collection::vec(
        (prop::sample::select(FILES), 0u32..4).prop_map(|(f, l)| (f.to_string(), l)),
        1..5,
    )
}

fn traces_strategy() -> impl Strategy<Value = Vec<RawTrace>> {
    // A small pool of tracebacks shared by many traces, like a real heap.
    prop::collection::vec(frames_strategy(), 1..8).prop_flat_map(|pool| {
        let n = pool.len();
        prop::collection::vec(
            (
                0u32..3,
                prop::sample::select(vec![0u64, 1, 7, 100, 5000]),
                0..n,
            ),
            0..40,
        )
        .prop_map(move |v| {
            v.into_iter()
                .map(|(d, s, i)| (d, s, pool[i].clone()))
                .collect()
        })
    })
}

fn filter_strategy() -> impl Strategy<Value = TraceFilter> {
    prop_oneof![
        (any::<bool>(), 0u64..3)
            .prop_map(|(inclusive, domain)| TraceFilter::Domain { inclusive, domain }),
        (
            any::<bool>(),
            prop::sample::select(PATTERNS),
            prop::option::of(0i64..3),
            any::<bool>(),
            prop::option::of(0u64..3),
        )
            .prop_map(|(inc, pat, line, all, dom)| {
                TraceFilter::Frame(FrameFilter::new(inc, pat, line, all, dom))
            }),
    ]
}

const KEYS: [(KeyType, bool); 5] = [
    (KeyType::Traceback, false),
    (KeyType::Lineno, false),
    (KeyType::Filename, false),
    (KeyType::Lineno, true),
    (KeyType::Filename, true),
];

proptest! {
    #[test]
    fn statistics_match_reference(raw in traces_strategy()) {
        let snapshot = build(&raw);
        for (key, cumulative) in KEYS {
            let got: Vec<_> = statistics(&snapshot, key, cumulative)
                .unwrap()
                .into_iter()
                .map(|s| (to_frames(&s.frames), s.size, s.count))
                .collect();
            prop_assert_eq!(got, reference_statistics(&raw, key, cumulative), "{:?} {}", key, cumulative);
        }
    }

    #[test]
    fn compare_to_matches_reference(new in traces_strategy(), old in traces_strategy()) {
        let (ns, os) = (build(&new), build(&old));
        for (key, cumulative) in KEYS {
            let got: Vec<_> = compare_to(&ns, &os, key, cumulative)
                .unwrap()
                .into_iter()
                .map(|d| (to_frames(&d.frames), d.size, d.size_diff, d.count, d.count_diff))
                .collect();
            prop_assert_eq!(got, reference_compare(&new, &old, key, cumulative), "{:?} {}", key, cumulative);
        }
    }

    #[test]
    fn filter_traces_matches_reference(
        raw in traces_strategy(),
        filters in prop::collection::vec(filter_strategy(), 0..4),
    ) {
        let snapshot = build(&raw);
        let got = filter_traces(&snapshot, &filters);
        let (include, exclude): (Vec<_>, Vec<_>) = filters.iter().partition(|f| f.inclusive());
        let want: Vec<usize> = (0..raw.len())
            .filter(|&i| {
                (include.is_empty() || include.iter().any(|f| reference_match(f, &raw[i])))
                    && exclude.iter().all(|f| reference_match(f, &raw[i]))
            })
            .collect();
        let want_traces: Vec<_> = want.iter().map(|&i| snapshot.traces[i]).collect();
        prop_assert_eq!(&got.traces, &want_traces);
        prop_assert_eq!(got.traceback_limit, snapshot.traceback_limit);
        prop_assert!(got.validate().is_ok());
    }
}
