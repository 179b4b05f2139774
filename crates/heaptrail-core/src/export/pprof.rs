//! pprof heap profiles: gzipped `profile.proto`, as `go tool pprof` and Grafana Pyroscope read
//! them.
//!
//! Layout, following Go's heap profiles so that tools treat it as one:
//! * sample types `alloc_objects/count`, `alloc_space/bytes`, `inuse_objects/count`,
//!   `inuse_space/bytes`; `default_sample_type` is `inuse_space`. A snapshot holds live
//!   blocks only, so the `alloc_*` values equal the `inuse_*` ones (the pair is there because
//!   viewers look for it);
//! * period type `space/bytes`, period 1: every traced byte is in the profile; in sampled mode
//!   the period is the sample rate (mean bytes between sample points, as Go's heap profiles
//!   state theirs) and the values are already the unbiased estimates (a comment says so);
//! * one sample per distinct traceback (all domains together), leaf first;
//! * one location per distinct `filename:lineno` and function (a line can run in two: a
//!   lambda and the function around it), with one line pointing at its function;
//! * one function per Python function when its name is known, recorded in the snapshot or
//!   read from the source (name `module.Qual.name`, system name the qualified name,
//!   `start_line` the `def` line), else one per frame named `basename:lineno` (see
//!   [`super::frame_names`]);
//! * one mapping (`python`) that says functions, file names and line numbers are all present,
//!   so no viewer tries to symbolize addresses.

use flate2::write::GzEncoder;
use flate2::Compression;
use prost::Message;
use rustc_hash::FxHashMap;
use std::io::{self, Write};

use super::frame_names::{FrameNames, FunctionIds, FunctionKey};
use super::pprof_proto::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};
use super::ExportOptions;
use crate::model::{Snapshot, StackFrame, TracebackId};
use crate::stacks::stack_totals;

/// Interns strings into a profile's string table (entry 0 is `""`, as the format requires).
struct Strings {
    table: Vec<String>,
    ids: FxHashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut s = Strings {
            table: Vec::new(),
            ids: FxHashMap::default(),
        };
        s.id("");
        s
    }

    fn id(&mut self, text: &str) -> i64 {
        if let Some(&id) = self.ids.get(text) {
            return id;
        }
        let id = self.table.len() as i64;
        self.table.push(text.to_owned());
        self.ids.insert(text.to_owned(), id);
        id
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One sample of a profile: the live bytes and blocks under a traceback of the snapshot
/// (negative in a delta profile: what was freed), and its labels.
pub struct StackSample<'a> {
    pub traceback: TracebackId,
    pub size: i64,
    pub count: i64,
    pub labels: &'a [(String, String)],
}

/// The profile message for `snapshot` (not yet encoded): one sample per traceback holding
/// live memory, no labels.
pub fn build_profile(snapshot: &Snapshot, names: &FrameNames, options: &ExportOptions) -> Profile {
    let samples = stack_totals(snapshot).into_iter().map(|t| StackSample {
        traceback: t.traceback,
        size: clamp(t.size),
        count: clamp(t.count),
        labels: &[],
    });
    build_profile_of(snapshot, names, options, samples, &[])
}

/// The profile message for `samples`, tracebacks of `snapshot`, with `notes` added to the
/// profile's comments.
pub fn build_profile_of<'a>(
    snapshot: &Snapshot,
    names: &FrameNames,
    options: &ExportOptions,
    stack_samples: impl IntoIterator<Item = StackSample<'a>>,
    notes: &[String],
) -> Profile {
    let mut strings = Strings::new();
    let vt = |t: &str, u: &str, s: &mut Strings| ValueType {
        r#type: s.id(t),
        unit: s.id(u),
    };
    let sample_type = vec![
        vt("alloc_objects", "count", &mut strings),
        vt("alloc_space", "bytes", &mut strings),
        vt("inuse_objects", "count", &mut strings),
        vt("inuse_space", "bytes", &mut strings),
    ];
    let period_type = Some(vt("space", "bytes", &mut strings));
    let default_sample_type = strings.id("inuse_space");
    let mapping = vec![Mapping {
        id: 1,
        filename: strings.id("python"),
        has_functions: true,
        has_filenames: true,
        has_line_numbers: true,
        ..Default::default()
    }];

    let mut function_ids = FunctionIds::default();
    let mut functions = Vec::new();
    // One location per line and function, ids from 1 in order of first use.
    let mut location_ids: FxHashMap<Option<StackFrame>, u64> = FxHashMap::default();
    let mut locations = Vec::new();
    let mut samples = Vec::new();
    for sample in stack_samples {
        let stack = snapshot.stack(sample.traceback);
        let mut location_id = Vec::with_capacity(stack.len().max(1));
        if stack.len() == 0 {
            // Blocks allocated with no Python frame on the stack: one pseudo-location, so
            // that their memory shows up under a name instead of only in the total.
            let next = location_ids.len() as u64 + 1;
            let loc = *location_ids.entry(None).or_insert(next);
            location_id.push(loc);
            let (function_id, new) = function_ids.get_or_insert(FunctionKey::Unknown);
            if new {
                let name = strings.id("<unknown>");
                functions.push(Function {
                    id: function_id,
                    name,
                    system_name: 0,
                    filename: 0,
                    start_line: 0,
                });
                locations.push(Location {
                    id: loc,
                    mapping_id: 1,
                    address: 0,
                    line: vec![Line {
                        function_id,
                        line: 0,
                    }],
                });
            }
        }
        // Both the model and pprof list frames leaf first.
        for sf in stack {
            let next = location_ids.len() as u64 + 1;
            let loc = *location_ids.entry(Some(sf)).or_insert(next);
            location_id.push(loc);
            if loc != next {
                continue;
            }
            let (function_id, new) = function_ids.get_or_insert(names.function_key(sf));
            if new {
                let name = strings.id(&names.function_name(sf));
                // The system name must differ from the name, or pprof "demangles" the name
                // as C++ and cuts everything between `<` and `>` (`<frozen abc>:106`).
                let system_name = match names.qualname(sf) {
                    Some(q) => strings.id(q),
                    None => 0,
                };
                functions.push(Function {
                    id: function_id,
                    name,
                    system_name,
                    filename: strings.id(snapshot.filename(sf.frame)),
                    start_line: i64::from(names.start_line(sf)),
                });
            }
            locations.push(Location {
                id: loc,
                mapping_id: 1,
                address: 0,
                line: vec![Line {
                    function_id,
                    line: i64::from(snapshot.frame(sf.frame).lineno),
                }],
            });
        }
        let (size, count) = (sample.size, sample.count);
        let label = sample
            .labels
            .iter()
            .map(|(key, value)| Label {
                key: strings.id(key),
                str: strings.id(value),
            })
            .collect();
        samples.push(Sample {
            location_id,
            value: vec![count, size, count, size],
            label,
        });
    }

    let mut comment =
        vec![strings.id("heaptrail snapshot: live memory blocks only, so alloc_* equal inuse_*")];
    if snapshot.traceback_limit > 0 {
        comment.push(strings.id(&format!(
            "traceback limit {} frames per stack",
            snapshot.traceback_limit
        )));
    }
    if let Some(rate) = snapshot.rate() {
        comment.push(strings.id(&format!(
            "sampled: one sample point every {} bytes on average; values are estimates",
            rate.bytes()
        )));
    }
    for note in notes {
        comment.push(strings.id(note));
    }
    Profile {
        sample_type,
        sample: samples,
        mapping,
        location: locations,
        function: functions,
        string_table: strings.table,
        time_nanos: options.time_nanos.unwrap_or(0),
        duration_nanos: options.duration_nanos.unwrap_or(0),
        period_type,
        period: snapshot
            .rate()
            .map_or(1, |r| r.bytes().min(i64::MAX as u64) as i64),
        comment,
        default_sample_type,
    }
}

/// Writes the gzipped profile to `out`.
pub fn write(
    snapshot: &Snapshot,
    names: &FrameNames,
    options: &ExportOptions,
    out: &mut dyn Write,
) -> io::Result<()> {
    write_profile(&build_profile(snapshot, names, options), out)
}

/// Writes `profile` gzipped to `out`, as pprof files and endpoints carry it.
pub fn write_profile(profile: &Profile, out: &mut dyn Write) -> io::Result<()> {
    let bytes = profile.encode_to_vec();
    let mut gz = GzEncoder::new(out, Compression::default());
    gz.write_all(&bytes)?;
    gz.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::snapshot_from_raw;
    use flate2::read::GzDecoder;
    use std::io::Read;

    fn decode(bytes: &[u8]) -> Profile {
        let mut raw = Vec::new();
        GzDecoder::new(bytes).read_to_end(&mut raw).unwrap();
        Profile::decode(raw.as_slice()).unwrap()
    }

    #[test]
    fn round_trip_through_prost() {
        let s = snapshot_from_raw(
            &[
                (0, 100, &[("/app/a.py", 2), ("/app/main.py", 9)], 2),
                (0, 50, &[("/app/a.py", 2), ("/app/main.py", 9)], 2),
                (0, 7, &[("/app/main.py", 9)], 1),
                (5, 1, &[], 0),
            ],
            3,
        );
        let names = FrameNames::new(&s, false);
        let opts = ExportOptions {
            time_nanos: Some(1_700_000_000_000_000_000),
            ..Default::default()
        };
        let mut out = Vec::new();
        write(&s, &names, &opts, &mut out).unwrap();
        assert_eq!(&out[..2], &[0x1f, 0x8b], "gzip magic");
        let p = decode(&out);
        let st = |i: i64| p.string_table[i as usize].as_str();
        assert_eq!(st(0), "");
        let types: Vec<_> = p
            .sample_type
            .iter()
            .map(|t| (st(t.r#type), st(t.unit)))
            .collect();
        assert_eq!(
            types,
            [
                ("alloc_objects", "count"),
                ("alloc_space", "bytes"),
                ("inuse_objects", "count"),
                ("inuse_space", "bytes")
            ]
        );
        assert_eq!(st(p.default_sample_type), "inuse_space");
        let period = p.period_type.unwrap();
        assert_eq!(
            (st(period.r#type), st(period.unit), p.period),
            ("space", "bytes", 1)
        );
        assert_eq!(p.time_nanos, 1_700_000_000_000_000_000);

        let loc = |id: u64| p.location.iter().find(|l| l.id == id).unwrap();
        let func = |id: u64| p.function.iter().find(|f| f.id == id).unwrap();
        let stack = |s: &Sample| -> Vec<String> {
            s.location_id
                .iter()
                .map(|&id| {
                    let line = loc(id).line[0];
                    let f = func(line.function_id);
                    format!("{} {}:{}", st(f.name), st(f.filename), line.line)
                })
                .collect()
        };
        let got: Vec<_> = p
            .sample
            .iter()
            .map(|s| (stack(s), s.value.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    vec![
                        "a.py:2 /app/a.py:2".to_owned(),
                        "main.py:9 /app/main.py:9".to_owned()
                    ],
                    vec![2, 150, 2, 150]
                ),
                (
                    vec!["main.py:9 /app/main.py:9".to_owned()],
                    vec![1, 7, 1, 7]
                ),
                (vec!["<unknown> :0".to_owned()], vec![1, 1, 1, 1]),
            ]
        );
        // Every id is defined once; every location has the mapping that says "symbolized".
        assert_eq!(p.location.len(), 3);
        assert_eq!(p.function.len(), 3);
        assert!(p.location.iter().all(|l| l.mapping_id == 1));
        assert!(p.mapping[0].has_functions && p.mapping[0].has_line_numbers);
    }

    #[test]
    fn functions_from_source_group_lines() {
        let dir = std::env::temp_dir().join(format!("heaptrail-pprof-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("svc.py");
        std::fs::write(
            &file,
            "class Cache:\n    def put(self):\n        a = []\n        b = {}\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let s = snapshot_from_raw(&[(0, 10, &[(path, 3)], 1), (0, 20, &[(path, 4)], 1)], 1);
        let names = FrameNames::new(&s, true);
        let p = build_profile(&s, &names, &ExportOptions::default());
        assert_eq!(p.location.len(), 2);
        assert_eq!(p.function.len(), 1, "two lines of one function");
        let f = p.function[0];
        assert_eq!(p.string_table[f.name as usize], "svc.Cache.put");
        assert_eq!(p.string_table[f.system_name as usize], "Cache.put");
        assert_eq!(f.start_line, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn recorded_functions_win_over_the_source_and_split_shared_lines() {
        use crate::model::{SnapshotBuilder, NO_FUNCTION};
        // The file on disk says line 3 is in `Other.moved`; the snapshot recorded that it ran in
        // `Cache.put` (the source changed since). Line 3 also runs a lambda defined there.
        let dir = std::env::temp_dir().join(format!("heaptrail-pprof-rec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("svc.py");
        std::fs::write(
            &file,
            "class Other:\n    def moved(self):\n        a = []\n        b = {}\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let mut b = SnapshotBuilder::new(3);
        let f = b.intern_filename(path);
        let (l3, l4) = (b.intern_frame(f, 3), b.intern_frame(f, 4));
        let put = b.intern_function(&"Cache.put".into(), 2);
        let lambda = b.intern_function(&"Cache.put.<locals>.<lambda>".into(), 3);
        let t1 = b.intern_traceback_with_functions(&[l3, l3], &[lambda, put], 2);
        // No function recorded for this frame (an older snapshot merged in): the source names it.
        let t2 = b.intern_traceback_with_functions(&[l4], &[NO_FUNCTION], 1);
        b.push_trace(0, 10, t1);
        b.push_trace(0, 20, t2);
        let s = b.finish();
        let p = build_profile(&s, &FrameNames::new(&s, true), &ExportOptions::default());
        let st = |i: i64| p.string_table[i as usize].as_str();
        let mut names: Vec<_> = p
            .function
            .iter()
            .map(|f| (st(f.name), st(f.system_name), f.start_line))
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                ("svc.Cache.put", "Cache.put", 2),
                (
                    "svc.Cache.put.<locals>.<lambda>",
                    "Cache.put.<locals>.<lambda>",
                    3
                ),
                ("svc.Other.moved", "Other.moved", 2),
            ]
        );
        // Line 3 is two locations: one per function that ran it.
        assert_eq!(p.location.len(), 3);
        let lines: Vec<_> = p.sample[1]
            .location_id
            .iter()
            .map(|&id| {
                let l = p.location.iter().find(|l| l.id == id).unwrap();
                let f = p
                    .function
                    .iter()
                    .find(|f| f.id == l.line[0].function_id)
                    .unwrap();
                (st(f.system_name), l.line[0].line)
            })
            .collect();
        assert_eq!(
            lines,
            [("Cache.put.<locals>.<lambda>", 3), ("Cache.put", 3)]
        );
        // Without source lookup the recorded names stay; the unnamed frame is `file:line`.
        let p = build_profile(&s, &FrameNames::new(&s, false), &ExportOptions::default());
        let mut names: Vec<_> = p
            .function
            .iter()
            .map(|f| p.string_table[f.name as usize].as_str())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "svc.Cache.put",
                "svc.Cache.put.<locals>.<lambda>",
                "svc.py:4"
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
