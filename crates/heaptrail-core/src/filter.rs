//! `Snapshot.filter_traces`: keep the traces that pass `Filter` / `DomainFilter` rules, with the
//! standard library's semantics:
//!
//! * a trace is kept if at least one inclusive filter matches it (when there is any inclusive
//!   filter) and every exclusive filter lets it through;
//! * a [`FrameFilter`] looks at the most recent frame, or with `all_frames` at any frame; filenames
//!   are normalized (`.pyc` -> `.py`) before matching; `lineno: None` matches every line;
//! * a [`FrameFilter`] with a `domain` also requires (inclusive) or exempts (exclusive) that domain.
//!
//! Speed: a snapshot holds ~1M traces but only thousands of distinct tracebacks and filenames, so
//! each filter decides once per filename and once per traceback (lazily, memoized); the per-trace
//! work is a table lookup plus the domain test.
//!
//! Divergence: stdlib fails with `IndexError` on a trace with no frame at all (CPython's
//! `_tracemalloc` never produces one: it records the frame `("<unknown>", 0)` instead). Here an
//! empty traceback is treated as that single `("<unknown>", 0)` frame, in both modes.

use crate::fnmatch::{normalize_filename, Pattern};
use crate::model::{FrameId, Snapshot, Trace, TracebackId};

/// The frame an empty traceback stands for (what CPython records when it has no frame).
pub const UNKNOWN_FILENAME: &str = "<unknown>";

/// `tracemalloc.Filter`.
#[derive(Clone, Debug)]
pub struct FrameFilter {
    pub inclusive: bool,
    /// Built from the *normalized* pattern (see [`FrameFilter::new`]).
    pub pattern: Pattern,
    pub lineno: Option<i64>,
    pub all_frames: bool,
    pub domain: Option<u64>,
}

/// A filter as accepted by `Snapshot.filter_traces`.
#[derive(Clone, Debug)]
pub enum TraceFilter {
    /// `tracemalloc.Filter`.
    Frame(FrameFilter),
    /// `tracemalloc.DomainFilter`.
    Domain { inclusive: bool, domain: u64 },
}

impl TraceFilter {
    pub fn inclusive(&self) -> bool {
        match self {
            TraceFilter::Frame(f) => f.inclusive,
            TraceFilter::Domain { inclusive, .. } => *inclusive,
        }
    }
}

impl FrameFilter {
    /// `Filter(inclusive, filename_pattern, lineno, all_frames, domain)`: normalizes the pattern
    /// the way the stdlib constructor does.
    pub fn new(
        inclusive: bool,
        filename_pattern: &str,
        lineno: Option<i64>,
        all_frames: bool,
        domain: Option<u64>,
    ) -> Self {
        let pattern = Pattern::new(&normalize_filename(filename_pattern));
        FrameFilter {
            inclusive,
            pattern,
            lineno,
            all_frames,
            domain,
        }
    }

    /// `Filter._match_frame_impl`: does this frame match the pattern and line, ignoring
    /// `inclusive`?
    pub fn frame_matches(&self, filename: &str, lineno: i64) -> bool {
        self.pattern.matches(&normalize_filename(filename)) && self.line_matches(lineno)
    }

    /// `Filter._match_frame`: [`Self::frame_matches`], inverted for an exclusive filter.
    pub fn match_frame(&self, filename: &str, lineno: i64) -> bool {
        self.frame_matches(filename, lineno) == self.inclusive
    }

    /// `Filter._match_traceback` on `(filename, lineno)` frames given most recent first. An empty
    /// traceback counts as the single frame `("<unknown>", 0)` (see the module docs).
    pub fn match_traceback<'a>(&self, frames: impl IntoIterator<Item = (&'a str, i64)>) -> bool {
        let mut hits = frames
            .into_iter()
            .map(|(f, l)| self.frame_matches(f, l))
            .peekable();
        if hits.peek().is_none() {
            return self.verdict(std::iter::once(self.frame_matches(UNKNOWN_FILENAME, 0)));
        }
        self.verdict(hits)
    }

    fn line_matches(&self, lineno: i64) -> bool {
        match self.lineno {
            None => true,
            Some(want) => want == lineno,
        }
    }

    /// Turns per-frame hits (most recent first, at least one) into the filter's answer for the
    /// traceback. With `all_frames` the stdlib answers `inclusive` if any frame matched and
    /// `not inclusive` otherwise; without it, `first_hit XOR not inclusive`. Both are
    /// `hit == inclusive`.
    fn verdict(&self, mut hits: impl Iterator<Item = bool>) -> bool {
        let hit = if self.all_frames {
            hits.any(|h| h)
        } else {
            hits.next().unwrap_or(false)
        };
        hit == self.inclusive
    }
}

/// Memo states for lazily computed booleans.
const UNKNOWN: u8 = 0;
const NO: u8 = 1;
const YES: u8 = 2;

/// A [`FrameFilter`] bound to one snapshot, remembering its answers per filename and traceback.
struct BoundFrameFilter<'f> {
    filter: &'f FrameFilter,
    /// The filter's `domain` as a domain class (see [`DomainClasses`]).
    domain_class: Option<usize>,
    /// Pattern result per filename id.
    file_hit: Vec<u8>,
    /// `_match_traceback` result per traceback id.
    traceback_verdict: Vec<u8>,
}

impl<'f> BoundFrameFilter<'f> {
    fn frame_hit(&mut self, snapshot: &Snapshot, frame: FrameId) -> bool {
        let frame = snapshot.frame(frame);
        let memo = &mut self.file_hit[frame.filename as usize];
        if *memo == UNKNOWN {
            let name = &snapshot.filenames[frame.filename as usize];
            *memo = if self.filter.pattern.matches(&normalize_filename(name)) {
                YES
            } else {
                NO
            };
        }
        *memo == YES && self.filter.line_matches(i64::from(frame.lineno))
    }

    fn traceback_matches(&mut self, snapshot: &Snapshot, id: TracebackId) -> bool {
        let memo = self.traceback_verdict[id as usize];
        if memo != UNKNOWN {
            return memo == YES;
        }
        let frames = &snapshot.traceback(id).frames;
        let answer = if frames.is_empty() {
            self.filter.match_traceback(std::iter::empty())
        } else {
            let filter = self.filter;
            filter.verdict(frames.iter().map(|&f| self.frame_hit(snapshot, f)))
        };
        self.traceback_verdict[id as usize] = if answer { YES } else { NO };
        answer
    }

    /// `Filter._match(trace)` for a trace of traceback `id` whose domain is in `class`.
    fn matches(&mut self, snapshot: &Snapshot, id: TracebackId, class: usize) -> bool {
        let res = self.traceback_matches(snapshot, id);
        match self.domain_class {
            None => res,
            Some(d) if self.filter.inclusive => res && class == d,
            Some(d) => res || class != d,
        }
    }
}

enum BoundFilter<'f> {
    Frame(BoundFrameFilter<'f>),
    Domain { inclusive: bool, class: usize },
}

impl BoundFilter<'_> {
    fn matches(&mut self, snapshot: &Snapshot, id: TracebackId, class: usize) -> bool {
        match self {
            BoundFilter::Frame(f) => f.matches(snapshot, id, class),
            // `DomainFilter._match`: `(domain == self.domain) ^ (not self.inclusive)`.
            BoundFilter::Domain {
                inclusive,
                class: d,
            } => (class == *d) == *inclusive,
        }
    }
}

/// Filters only ever test a domain for equality with the few domains they name, so a trace's
/// domain matters only through its *class*: the index of the named domain it equals, or
/// `len()` for "none of them". A trace's fate is then a function of (traceback, class), which
/// is small enough to memoize densely.
struct DomainClasses(Vec<u64>);

impl DomainClasses {
    fn new(filters: &[TraceFilter]) -> Self {
        let mut named = Vec::new();
        for f in filters {
            let d = match f {
                TraceFilter::Frame(ff) => ff.domain,
                TraceFilter::Domain { domain, .. } => Some(*domain),
            };
            if let Some(d) = d {
                if !named.contains(&d) {
                    named.push(d);
                }
            }
        }
        DomainClasses(named)
    }

    fn count(&self) -> usize {
        self.0.len() + 1
    }

    fn class_of(&self, domain: u64) -> usize {
        self.0
            .iter()
            .position(|&d| d == domain)
            .unwrap_or(self.0.len())
    }
}

fn bind<'f>(
    filter: &'f TraceFilter,
    snapshot: &Snapshot,
    classes: &DomainClasses,
) -> BoundFilter<'f> {
    match filter {
        TraceFilter::Frame(ff) => BoundFilter::Frame(BoundFrameFilter {
            filter: ff,
            domain_class: ff.domain.map(|d| classes.class_of(d)),
            file_hit: vec![UNKNOWN; snapshot.filenames.len()],
            traceback_verdict: vec![UNKNOWN; snapshot.tracebacks.len()],
        }),
        TraceFilter::Domain { inclusive, domain } => BoundFilter::Domain {
            inclusive: *inclusive,
            class: classes.class_of(*domain),
        },
    }
}

/// The traces for which `keep` is true, in order. Whether a trace is kept is as good as random
/// to the branch predictor, so every trace is written and the write position only advances
/// for kept ones (branch-free), then the tail is cut off.
fn compact(traces: &[Trace], mut keep: impl FnMut(&Trace) -> bool) -> Vec<Trace> {
    let blank = Trace {
        domain: 0,
        size: 0,
        traceback: 0,
    };
    let mut out = vec![blank; traces.len()];
    let mut n = 0;
    for t in traces {
        out[n] = *t;
        n += usize::from(keep(t));
    }
    out.truncate(n);
    out.shrink_to_fit();
    out
}

/// `Snapshot.filter_traces(filters)`: a new snapshot with the traces that pass, in their original
/// order. The id tables are copied unchanged (entries no trace uses any more are harmless: every
/// analysis starts from the traces). An empty `filters` returns a copy.
pub fn filter_traces(snapshot: &Snapshot, filters: &[TraceFilter]) -> Snapshot {
    let mut out = Snapshot {
        filenames: snapshot.filenames.clone(),
        frames: snapshot.frames.clone(),
        tracebacks: snapshot.tracebacks.clone(),
        traces: Vec::new(),
        traceback_limit: snapshot.traceback_limit,
        sample_rate: snapshot.sample_rate,
        functions: snapshot.functions.clone(),
        traceback_functions: snapshot.traceback_functions.clone(),
    };
    if filters.is_empty() {
        out.traces = snapshot.traces.clone();
        return out;
    }
    let classes = DomainClasses::new(filters);
    let bind_all = |inclusive: bool| -> Vec<BoundFilter> {
        filters
            .iter()
            .filter(|f| f.inclusive() == inclusive)
            .map(|f| bind(f, snapshot, &classes))
            .collect()
    };
    let (mut include, mut exclude) = (bind_all(true), bind_all(false));

    // `Snapshot._filter_trace`, memoized per (traceback, domain class).
    let width = classes.count();
    let mut keep = vec![UNKNOWN; snapshot.tracebacks.len() * width];
    let mut decide = |id: TracebackId, class: usize| {
        (include.is_empty() || include.iter_mut().any(|f| f.matches(snapshot, id, class)))
            && exclude.iter_mut().all(|f| f.matches(snapshot, id, class))
    };
    out.traces = compact(&snapshot.traces, |t| {
        let class = classes.class_of(u64::from(t.domain));
        let slot = &mut keep[t.traceback as usize * width + class];
        if *slot == UNKNOWN {
            *slot = if decide(t.traceback, class) { YES } else { NO };
        }
        *slot == YES
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{
        create_snapshots, raw_traces, snapshot_from_raw, OwnedRawTrace, RawTrace, A5B, AB, B1,
        UNKNOWN as UNK,
    };

    fn raw(list: &[RawTrace]) -> Vec<OwnedRawTrace> {
        raw_traces(&snapshot_from_raw(list, 2))
    }

    fn ff(inclusive: bool, pattern: &str) -> FrameFilter {
        FrameFilter::new(inclusive, pattern, None, false, None)
    }

    // TestSnapshot.test_filter_traces
    #[test]
    fn stdlib_filter_traces() {
        let (snapshot, _) = create_snapshots();
        let original = snapshot.clone();
        let filter1 = TraceFilter::Frame(ff(false, "b.py"));
        let filter2 = TraceFilter::Frame(FrameFilter::new(true, "a.py", Some(2), false, None));
        let filter3 = TraceFilter::Frame(FrameFilter::new(true, "a.py", Some(5), false, None));

        let snapshot3 = filter_traces(&snapshot, &[filter1]);
        assert_eq!(
            raw_traces(&snapshot3),
            raw(&[
                (0, 10, AB, 3),
                (0, 10, AB, 3),
                (0, 10, AB, 3),
                (1, 2, A5B, 3),
                (3, 7, UNK, 1)
            ])
        );
        assert_eq!(snapshot, original);

        let snapshot4 = filter_traces(&snapshot3, &[filter2, filter3]);
        assert_eq!(
            raw_traces(&snapshot4),
            raw(&[
                (0, 10, AB, 3),
                (0, 10, AB, 3),
                (0, 10, AB, 3),
                (1, 2, A5B, 3)
            ])
        );

        let snapshot5 = filter_traces(&snapshot, &[]);
        assert_eq!(snapshot5, snapshot);
    }

    // TestSnapshot.test_filter_traces_domain
    #[test]
    fn stdlib_filter_traces_domain() {
        let (snapshot, _) = create_snapshots();
        let filter1 = TraceFilter::Frame(FrameFilter::new(false, "a.py", None, false, Some(1)));
        let filter2 = TraceFilter::Frame(FrameFilter::new(true, "a.py", None, false, Some(1)));
        let expected = raw(&[
            (0, 10, AB, 3),
            (0, 10, AB, 3),
            (0, 10, AB, 3),
            (2, 66, B1, 1),
            (3, 7, UNK, 1),
        ]);
        assert_eq!(raw_traces(&filter_traces(&snapshot, &[filter1])), expected);
        // (The stdlib test means to check the inclusive filter here but re-runs filter1.)
        assert_eq!(
            raw_traces(&filter_traces(&snapshot, &[filter2])),
            raw(&[(1, 2, A5B, 3)])
        );
    }

    // TestSnapshot.test_filter_traces_domain_filter
    #[test]
    fn stdlib_filter_traces_domain_filter() {
        let (snapshot, _) = create_snapshots();
        let filter1 = TraceFilter::Domain {
            inclusive: false,
            domain: 3,
        };
        let filter2 = TraceFilter::Domain {
            inclusive: true,
            domain: 3,
        };
        assert_eq!(
            raw_traces(&filter_traces(&snapshot, &[filter1])),
            raw(&[
                (0, 10, AB, 3),
                (0, 10, AB, 3),
                (0, 10, AB, 3),
                (1, 2, A5B, 3),
                (2, 66, B1, 1)
            ])
        );
        assert_eq!(
            raw_traces(&filter_traces(&snapshot, &[filter2])),
            raw(&[(3, 7, UNK, 1)])
        );
    }

    // TestFilters.test_filter_attributes (the parts that exist on the Rust side)
    #[test]
    fn stdlib_filter_attributes() {
        let f = ff(true, "abc");
        assert!(f.inclusive);
        assert_eq!(f.pattern.as_str(), "abc");
        assert_eq!(f.lineno, None);
        assert!(!f.all_frames);
        let f = FrameFilter::new(false, "test.pyc", Some(123), true, None);
        assert_eq!(f.pattern.as_str(), "test.py");
        assert_eq!(f.lineno, Some(123));
        assert!(f.all_frames);
    }

    // TestFilters.test_filter_match
    #[test]
    fn stdlib_filter_match() {
        let check = |f: FrameFilter, expected: [bool; 6]| {
            let got = [
                f.match_frame("abc", 0),
                f.match_frame("abc", 5),
                f.match_frame("abc", 10),
                f.match_frame("12356", 0),
                f.match_frame("12356", 5),
                f.match_frame("12356", 10),
            ];
            assert_eq!(got, expected, "{f:?}");
        };
        let (t, x) = (true, false);
        check(ff(true, "abc"), [t, t, t, x, x, x]);
        check(ff(false, "abc"), [x, x, x, t, t, t]);
        check(
            FrameFilter::new(true, "abc", Some(5), false, None),
            [x, t, x, x, x, x],
        );
        check(
            FrameFilter::new(false, "abc", Some(5), false, None),
            [t, x, t, t, t, t],
        );
        check(
            FrameFilter::new(true, "abc", Some(0), false, None),
            [t, x, x, x, x, x],
        );
        check(
            FrameFilter::new(false, "abc", Some(0), false, None),
            [x, t, t, t, t, t],
        );
    }

    // TestFilters.test_filter_match_filename
    #[test]
    fn stdlib_filter_match_filename() {
        let fm = |inclusive, filename, pattern| ff(inclusive, pattern).match_frame(filename, 0);
        assert!(fm(true, "abc", "abc"));
        assert!(!fm(true, "12356", "abc"));
        assert!(!fm(true, "<unknown>", "abc"));
        assert!(!fm(false, "abc", "abc"));
        assert!(fm(false, "12356", "abc"));
        assert!(fm(false, "<unknown>", "abc"));
    }

    // TestFilters.test_filter_match_trace, both through `match_traceback` and through a snapshot.
    #[test]
    fn stdlib_filter_match_trace() {
        let t1: &[(&str, u32)] = &[("a.py", 2), ("b.py", 3)];
        let t2: &[(&str, u32)] = &[("b.py", 4), ("b.py", 5)];
        let t3: &[(&str, u32)] = &[("c.py", 5), ("<unknown>", 0)];
        let unknown: &[(&str, u32)] = &[("<unknown>", 0)];
        let tbs = [t1, t2, t3, unknown];
        let snapshot =
            snapshot_from_raw(&tbs.iter().map(|tb| (0, 1, *tb, 2)).collect::<Vec<_>>(), 2);

        let cases: [(bool, &str, bool, [bool; 4]); 7] = [
            (true, "b.py", true, [true, true, false, false]),
            (true, "b.py", false, [false, true, false, false]),
            (false, "b.py", true, [false, false, true, true]),
            (false, "b.py", false, [true, false, true, true]),
            (false, "<unknown>", false, [true, true, true, false]),
            (true, "<unknown>", true, [false, false, true, true]),
            (false, "<unknown>", true, [true, true, false, false]),
        ];
        for (inclusive, pattern, all_frames, expected) in cases {
            let f = FrameFilter::new(inclusive, pattern, None, all_frames, None);
            let got: Vec<bool> = tbs
                .iter()
                .map(|tb| f.match_traceback(tb.iter().map(|&(n, l)| (n, i64::from(l)))))
                .collect();
            assert_eq!(
                got, expected,
                "{pattern} inclusive={inclusive} all={all_frames}"
            );
            // The snapshot path (memoized per traceback) must agree.
            let kept = filter_traces(&snapshot, &[TraceFilter::Frame(f)]);
            let kept_ids: Vec<u32> = kept.traces.iter().map(|t| t.traceback).collect();
            let want_ids: Vec<u32> = (0..4u32).filter(|&i| expected[i as usize]).collect();
            // A single filter decides alone, whether it includes or excludes.
            assert_eq!(
                kept_ids, want_ids,
                "{pattern} inclusive={inclusive} all={all_frames}"
            );
        }
    }

    #[test]
    fn empty_traceback_is_unknown_frame() {
        let snapshot = snapshot_from_raw(&[(0, 1, &[], 0), (0, 2, AB, 2)], 2);
        let keep_unknown = TraceFilter::Frame(ff(true, "<unknown>"));
        assert_eq!(filter_traces(&snapshot, &[keep_unknown]).traces.len(), 1);
        let f = FrameFilter::new(true, "<unk*", Some(0), true, None);
        assert!(f.match_traceback(std::iter::empty()));
    }

    #[test]
    fn include_any_exclude_all_and_domains() {
        let (snapshot, _) = create_snapshots();
        // Include a.py or domain 2, exclude domain 0.
        let filters = [
            TraceFilter::Frame(ff(true, "a.py")),
            TraceFilter::Domain {
                inclusive: true,
                domain: 2,
            },
            TraceFilter::Domain {
                inclusive: false,
                domain: 0,
            },
        ];
        assert_eq!(
            raw_traces(&filter_traces(&snapshot, &filters)),
            raw(&[(1, 2, A5B, 3), (2, 66, B1, 1)])
        );
        // Exclusive frame filter restricted to a domain only excludes within that domain.
        let filters = [TraceFilter::Frame(FrameFilter::new(
            false,
            "*",
            None,
            true,
            Some(0),
        ))];
        assert_eq!(
            raw_traces(&filter_traces(&snapshot, &filters)),
            raw(&[(1, 2, A5B, 3), (2, 66, B1, 1), (3, 7, UNK, 1)])
        );
        // `.pyc` frames match `.py` patterns.
        let pyc = snapshot_from_raw(&[(0, 1, &[("m.pyc", 1)], 1)], 1);
        assert_eq!(
            filter_traces(&pyc, &[TraceFilter::Frame(ff(true, "m.py"))])
                .traces
                .len(),
            1
        );
    }
}
