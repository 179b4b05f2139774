//! Heap profiles of a running process, as the watcher's HTTP endpoint (`/debug/pprof/heap`)
//! and the Pyroscope sender serve them: live memory per traceback, each sample labelled with
//! what the watcher concluded about its site (`verdict`, and `pattern` for a leak), so that a
//! viewer can keep only the leaks (`go tool pprof -tagfocus verdict=leak`).
//!
//! Two kinds, as Go's `net/http/pprof` serves them:
//! * [`heap_profile`]: the live heap now;
//! * [`delta_profile`]: what changed between two moments (Go's `?seconds=N`): live bytes and
//!   blocks at the end minus at the start, per traceback. A growing line has positive values;
//!   memory freed meanwhile shows as negative ones.
//!
//! The input is a snapshot with its `(bytes, blocks)` per traceback (the tracer's totals, or
//! [`Snapshot::per_traceback`] of a full snapshot). The two snapshots of a delta have unrelated
//! ids, so their tracebacks are first merged by text.

use rustc_hash::FxHashMap;

use super::frame_names::FrameNames;
use super::pprof::{build_profile_of, StackSample};
use super::pprof_proto::Profile;
use super::ExportOptions;
use crate::model::{Snapshot, SnapshotBuilder, TracebackId, NO_FUNCTION};
use crate::sites::{SiteFinder, SiteRules};

/// Labels per site: `(filename, line)` -> `[(key, value)]`, and the rules that find a
/// traceback's site (the watcher's: the innermost frame in the user's code).
#[derive(Default)]
pub struct SiteLabels {
    pub rules: SiteRules,
    pub by_site: FxHashMap<(String, u32), Vec<(String, String)>>,
}

/// The live heap of `snapshot`, whose `per_tb[i]` is the `(bytes, blocks)` live under
/// traceback `i`.
pub fn heap_profile(
    snapshot: &Snapshot,
    per_tb: &[(u64, u64)],
    labels: &SiteLabels,
    options: &ExportOptions,
) -> Profile {
    let values: Vec<(i64, i64)> = per_tb
        .iter()
        .map(|&(s, c)| (signed(s), signed(c)))
        .collect();
    labelled_profile(snapshot, &values, labels, options, &[])
}

/// The growth from `before` to `after` (each a snapshot and its per-traceback totals), over
/// `seconds` (said in the profile's comments and `duration_nanos`).
pub fn delta_profile(
    before: (&Snapshot, &[(u64, u64)]),
    after: (&Snapshot, &[(u64, u64)]),
    seconds: f64,
    labels: &SiteLabels,
    options: &ExportOptions,
) -> Profile {
    let mut merged = SnapshotBuilder::new(after.0.traceback_limit);
    merged.set_sample_rate(after.0.sample_rate);
    let mut values: Vec<(i64, i64)> = Vec::new();
    for ((snapshot, per_tb), sign) in [(after, 1i64), (before, -1i64)] {
        for (tb, &(size, count)) in per_tb.iter().enumerate().take(snapshot.tracebacks.len()) {
            if count == 0 {
                continue;
            }
            let id = intern_traceback(&mut merged, snapshot, tb as TracebackId) as usize;
            if values.len() <= id {
                values.resize(id + 1, (0, 0));
            }
            let v = &mut values[id];
            v.0 = v.0.saturating_add(sign * signed(size));
            v.1 = v.1.saturating_add(sign * signed(count));
        }
    }
    let merged = merged.finish();
    let options = ExportOptions {
        duration_nanos: Some((seconds * 1e9) as i64),
        ..options.clone()
    };
    let note = format!(
        "delta profile: live memory at the end of {seconds} s minus at its start, per stack; \
         negative values were freed meanwhile"
    );
    labelled_profile(&merged, &values, labels, &options, &[note])
}

/// `snapshot`'s traceback `tb` interned into `into` by text, with its functions.
fn intern_traceback(
    into: &mut SnapshotBuilder,
    snapshot: &Snapshot,
    tb: TracebackId,
) -> TracebackId {
    let (mut frames, mut functions) = (Vec::new(), Vec::new());
    for sf in snapshot.stack(tb) {
        let filename = into.intern_shared_filename(snapshot.filename(sf.frame));
        frames.push(into.intern_frame(filename, snapshot.frame(sf.frame).lineno));
        functions.push(match snapshot.function(sf.function) {
            Some(f) => into.intern_function(&f.qualname, f.first_lineno),
            None => NO_FUNCTION,
        });
    }
    into.intern_traceback_with_functions(&frames, &functions, snapshot.traceback(tb).total_nframe)
}

/// One sample per traceback with a non-zero value, biggest first, labelled by its site.
fn labelled_profile(
    snapshot: &Snapshot,
    values: &[(i64, i64)],
    labels: &SiteLabels,
    options: &ExportOptions,
    notes: &[String],
) -> Profile {
    let mut finder = SiteFinder::new(snapshot, &labels.rules);
    let mut order: Vec<TracebackId> = (0..values.len().min(snapshot.tracebacks.len()))
        .filter(|&i| values[i] != (0, 0))
        .map(|i| i as TracebackId)
        .collect();
    order.sort_unstable_by(|&a, &b| {
        values[b as usize]
            .0
            .cmp(&values[a as usize].0)
            .then(a.cmp(&b))
    });
    let site_labels: Vec<&[(String, String)]> = order
        .iter()
        .map(|&tb| {
            if labels.by_site.is_empty() {
                return &[][..];
            }
            let (filename, lineno) = finder.site(tb);
            labels
                .by_site
                .get(&(filename.to_string(), lineno))
                .map_or(&[][..], |l| l.as_slice())
        })
        .collect();
    let names = FrameNames::new(snapshot, options.read_sources);
    let samples = order
        .iter()
        .zip(site_labels)
        .map(|(&tb, labels)| StackSample {
            traceback: tb,
            size: values[tb as usize].0,
            count: values[tb as usize].1,
            labels,
        });
    build_profile_of(snapshot, &names, options, samples, notes)
}

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::pprof_proto::Profile;
    use crate::test_fixtures::snapshot_from_raw;

    /// (stack as "file:line" leaf first, inuse bytes, inuse blocks, labels "k=v") per sample.
    fn rows(p: &Profile) -> Vec<(Vec<String>, i64, i64, Vec<String>)> {
        let st = |i: i64| p.string_table[i as usize].clone();
        let loc = |id: u64| {
            let l = p.location.iter().find(|l| l.id == id).unwrap();
            let f = p
                .function
                .iter()
                .find(|f| f.id == l.line[0].function_id)
                .unwrap();
            format!("{}:{}", st(f.filename), l.line[0].line)
        };
        p.sample
            .iter()
            .map(|s| {
                (
                    s.location_id.iter().map(|&id| loc(id)).collect(),
                    s.value[3],
                    s.value[2],
                    s.label
                        .iter()
                        .map(|l| format!("{}={}", st(l.key), st(l.str)))
                        .collect(),
                )
            })
            .collect()
    }

    fn labels() -> SiteLabels {
        let mut by_site = FxHashMap::default();
        by_site.insert(
            ("/app/cache.py".to_string(), 7),
            vec![
                ("verdict".to_string(), "leak".to_string()),
                ("pattern".to_string(), "unbounded-cache".to_string()),
            ],
        );
        SiteLabels {
            rules: SiteRules::from_patterns(&["/usr/lib/*"], &[], &[]),
            by_site,
        }
    }

    #[test]
    fn live_samples_carry_their_sites_labels_found_past_library_frames() {
        let s = snapshot_from_raw(
            &[
                (0, 500, &[("/usr/lib/json.py", 3), ("/app/cache.py", 7)], 2),
                (0, 40, &[("/app/other.py", 1)], 1),
            ],
            5,
        );
        let p = heap_profile(&s, &s.per_traceback(), &labels(), &ExportOptions::default());
        let r = rows(&p);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].0, ["/usr/lib/json.py:3", "/app/cache.py:7"]);
        assert_eq!((r[0].1, r[0].2), (500, 1));
        assert_eq!(r[0].3, ["verdict=leak", "pattern=unbounded-cache"]);
        assert!(
            r[1].3.is_empty(),
            "a site the watcher did not judge has no labels"
        );
    }

    #[test]
    fn delta_is_after_minus_before_matched_by_text_across_snapshots() {
        // Different trace orders, so the two snapshots number their tracebacks differently.
        let before = snapshot_from_raw(
            &[
                (0, 30, &[("/app/gone.py", 2)], 1),
                (0, 100, &[("/usr/lib/json.py", 3), ("/app/cache.py", 7)], 2),
                (0, 10, &[("/app/flat.py", 4)], 1),
            ],
            5,
        );
        let after = snapshot_from_raw(
            &[
                (0, 10, &[("/app/flat.py", 4)], 1),
                (0, 100, &[("/usr/lib/json.py", 3), ("/app/cache.py", 7)], 2),
                (0, 300, &[("/usr/lib/json.py", 3), ("/app/cache.py", 7)], 2),
                (0, 5, &[("/app/new.py", 9)], 1),
            ],
            5,
        );
        let p = delta_profile(
            (&before, &before.per_traceback()),
            (&after, &after.per_traceback()),
            30.0,
            &labels(),
            &ExportOptions::default(),
        );
        let r = rows(&p);
        let brief: Vec<_> = r
            .iter()
            .map(|(st, b, n, _)| (st[0].as_str(), *b, *n))
            .collect();
        // The unchanged line is left out; the grown one first, the freed one last.
        assert_eq!(
            brief,
            [
                ("/usr/lib/json.py:3", 300, 1),
                ("/app/new.py:9", 5, 1),
                ("/app/gone.py:2", -30, -1)
            ]
        );
        assert_eq!(r[0].3, ["verdict=leak", "pattern=unbounded-cache"]);
        assert_eq!(p.duration_nanos, 30_000_000_000);
        let comments: Vec<_> = p
            .comment
            .iter()
            .map(|&i| p.string_table[i as usize].as_str())
            .collect();
        assert!(
            comments.iter().any(|c| c.starts_with("delta profile")),
            "{comments:?}"
        );
    }
}
