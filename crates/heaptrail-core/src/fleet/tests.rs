//! The fleet aggregation on hand-written windows: processes per family and pid, each at its
//! latest window, one entry per leak (line and pattern) with its counts, rates, holder and
//! times; and reading real files with the problems a directory of reports has.

use super::*;
use crate::html::report::read_report;
use std::io::Write as _;

/// A leak entry: (file, line, pattern, holder, rate, size).
type L<'a> = (&'a str, u32, &'a str, Option<&'a str>, f64, u64);

fn window(pid: u32, n: u64, time: f64, verdict: &str, leaks: &[L]) -> String {
    let entries: Vec<String> = leaks
        .iter()
        .map(|(f, l, pattern, holder, bps, size)| {
            let holder = holder.map_or("null".to_owned(), |h| format!("\"{h}\""));
            format!(
                r#"{{"site":{{"filename":"{f}","lineno":{l}}},"holder":{holder},"holder_type":null,"path":[],"pattern":"{pattern}","hint":"","size":{size},"count":10,"bytes_per_second":{bps},"sites":[{{"filename":"{f}","lineno":{l},"role":"element","size":{size},"count":10,"bytes_per_second":{bps}}}],"feeding_line":null}}"#
            )
        })
        .collect();
    let sites: Vec<String> = leaks
        .iter()
        .map(|(f, l, pattern, _, bps, size)| {
            format!(
                r#"{{"filename":"{f}","lineno":{l},"size":{size},"bytes_per_second":{bps},"verdict":"leak","pattern":"{pattern}"}}"#
            )
        })
        .collect();
    format!(
        r#"{{"schema":"heaptrail.watch/2","time":{time},"pid":{pid},"window":{n},"interval":1.0,"rss_bytes":1000,"traced_bytes":500,"traced_peak_bytes":600,"process_verdict":"{verdict}","sites":[{}],"leaks":[{}]}}"#,
        sites.join(","),
        entries.join(",")
    )
}

fn report(lines: &[String]) -> Report {
    read_report(lines.join("\n").as_bytes(), None).unwrap()
}

const X: &str = "/app/x.py";
const Y: &str = "/app/y.py";

/// pids 1 and 2 share `a.jsonl` (workers of `heaptrail run`), pid 3 writes `b.jsonl`.
fn fleet() -> Fleet {
    let a = report(&[
        window(1, 1, 100.0, "ok", &[]),
        window(
            2,
            1,
            100.5,
            "python-growth",
            &[(X, 5, "unbounded-list", Some("x.LOG"), 30.0, 3000)],
        ),
        window(
            1,
            2,
            101.0,
            "python-growth",
            &[(X, 5, "unbounded-list", Some("x.LOG"), 10.0, 1000)],
        ),
        // pid 2 no longer shows X (fixed), but now shows Y.
        window(
            2,
            2,
            101.5,
            "python-growth",
            &[(Y, 9, "unbounded-cache", None, 5.0, 500)],
        ),
    ]);
    let b = report(&[
        window(3, 1, 99.0, "ok", &[]),
        window(
            3,
            2,
            102.0,
            "python-growth",
            &[(X, 5, "unbounded-list", Some("x.LOG"), 20.0, 2000)],
        ),
    ]);
    let mut builder = FleetBuilder::default();
    builder.add_report("a.jsonl", "a.jsonl", a);
    builder.add_report("b.jsonl", "b.jsonl", b);
    builder.finish()
}

#[test]
fn each_leak_once_with_its_processes_rates_and_holder() {
    let f = fleet();
    assert_eq!(f.processes.len(), 3);
    assert_eq!(f.windows, 6);
    assert_eq!((f.first_time, f.last_time), (Some(99.0), Some(102.0)));
    assert_eq!(f.leaks.len(), 2);
    let x = &f.leaks[0];
    assert_eq!((x.site.filename.as_str(), x.site.lineno), (X, 5));
    assert_eq!(x.pattern, "unbounded-list");
    assert_eq!(x.processes, 2, "pid 2's latest window no longer shows it");
    assert_eq!(x.bytes_per_second, 30.0);
    assert_eq!(
        x.process_bytes_per_second,
        Spread {
            median: 15.0,
            min: 10.0,
            max: 20.0
        }
    );
    assert_eq!((x.size, x.count), (3000, 20));
    assert_eq!(
        (x.holder.as_deref(), x.holder_processes, x.other_holders),
        (Some("x.LOG"), 2, 0)
    );
    assert!(
        x.hint.starts_with("collection that only grows"),
        "the pattern's fix: {}",
        x.hint
    );
    // First reported by pid 2 (which no longer shows it), last by pid 3.
    assert_eq!((x.first_seen, x.last_seen), (100.5, 102.0));
    let pids: Vec<(&str, u32)> = x
        .seen_in
        .iter()
        .map(|p| (p.source.as_str(), p.pid))
        .collect();
    assert_eq!(pids, [("a.jsonl", 1), ("b.jsonl", 3)]);
    let y = &f.leaks[1];
    assert_eq!(
        (y.site.lineno, y.processes, y.bytes_per_second),
        (9, 1, 5.0)
    );
    assert_eq!((y.holder.as_deref(), y.holder_processes), (None, 1));
    assert_eq!(f.leaking_processes(), 3);
}

#[test]
fn process_verdicts_of_the_latest_windows() {
    let f = fleet();
    assert_eq!(f.verdict_counts(), [("python-growth", 3)]);
    assert_eq!(
        f.process_verdicts["ok"], 0,
        "every known verdict is in the document"
    );
    let procs: Vec<(u32, u64, u64, usize)> = f
        .processes
        .iter()
        .map(|p| (p.id.pid, p.window, p.windows, p.leaks))
        .collect();
    assert_eq!(procs, [(1, 2, 2, 1), (2, 2, 2, 1), (3, 2, 2, 1)]);
}

#[test]
fn the_same_pid_is_one_process_per_family_and_rotations_join() {
    let old = report(&[window(
        7,
        1,
        10.0,
        "python-growth",
        &[(X, 5, "unbounded-list", Some("h"), 4.0, 40)],
    )]);
    let new = report(&[window(7, 2, 20.0, "ok", &[])]);
    let other = report(&[window(
        7,
        1,
        15.0,
        "python-growth",
        &[(X, 5, "unbounded-list", Some("h"), 6.0, 60)],
    )]);
    let mut builder = FleetBuilder::default();
    builder.add_report("a.jsonl", "a.jsonl.1", old);
    builder.add_report("a.jsonl", "a.jsonl", new);
    builder.add_report("host2/a.jsonl", "host2/a.jsonl", other);
    let f = builder.finish();
    assert_eq!(
        f.processes.len(),
        2,
        "pid 7 of a.jsonl (two files) and pid 7 of host2"
    );
    assert_eq!((f.processes[0].window, f.processes[0].windows), (2, 2));
    assert_eq!(
        f.processes[0].process_verdict, "ok",
        "the newest file's window"
    );
    assert_eq!(f.leaks.len(), 1);
    assert_eq!(f.leaks[0].processes, 1, "only host2's pid 7 still shows it");
    assert_eq!(
        f.leaks[0].first_seen, 10.0,
        "first reported in the rotated file"
    );
    assert_eq!(f.verdict_counts(), [("ok", 1), ("python-growth", 1)]);
}

#[test]
fn a_restarted_pid_counts_at_its_latest_run() {
    let r = report(&[
        window(
            1,
            1,
            1.0,
            "python-growth",
            &[(X, 5, "unbounded-list", None, 1.0, 1)],
        ),
        window(
            1,
            2,
            2.0,
            "python-growth",
            &[(X, 5, "unbounded-list", None, 1.0, 1)],
        ),
        window(1, 1, 3.0, "ok", &[]), // restarted
    ]);
    let mut builder = FleetBuilder::default();
    builder.add_report("r", "r", r);
    let f = builder.finish();
    assert_eq!(f.processes.len(), 1);
    assert_eq!((f.processes[0].window, f.processes[0].windows), (1, 3));
    assert!(f.leaks.is_empty());
}

#[test]
fn a_line_with_two_patterns_is_two_leaks_and_two_holders_count_one_process() {
    let r = report(&[
        window(
            1,
            1,
            1.0,
            "python-growth",
            &[
                (X, 5, "unbounded-list", Some("a.L"), 1.0, 100),
                (X, 5, "unbounded-list", Some("a.M"), 2.0, 200),
                (X, 5, "unbounded-cache", Some("a.C"), 4.0, 400),
            ],
        ),
        window(
            2,
            1,
            1.0,
            "python-growth",
            &[(X, 5, "unbounded-list", Some("a.M"), 5.0, 10)],
        ),
        window(
            3,
            1,
            1.0,
            "python-growth",
            &[(X, 5, "unbounded-list", Some("a.L"), 5.0, 10)],
        ),
        window(
            4,
            1,
            1.0,
            "python-growth",
            &[(X, 5, "unbounded-list", None, 5.0, 10)],
        ),
    ]);
    let mut builder = FleetBuilder::default();
    builder.add_report("r", "r", r);
    let f = builder.finish();
    assert_eq!(f.leaks.len(), 2);
    let list = f
        .leaks
        .iter()
        .find(|l| l.pattern == "unbounded-list")
        .unwrap();
    assert_eq!(list.processes, 4);
    assert_eq!(list.bytes_per_second, 18.0);
    assert_eq!(
        list.process_bytes_per_second,
        Spread {
            median: 5.0,
            min: 3.0,
            max: 5.0
        }
    );
    assert_eq!(list.size, 330);
    // a.L: pids 1 and 3; a.M: pids 1 and 2; a tie goes to the name that sorts first. Pid 4
    // found no holder and does not vote.
    assert_eq!(
        (
            list.holder.as_deref(),
            list.holder_processes,
            list.other_holders
        ),
        (Some("a.L"), 2, 1)
    );
    let cache = f
        .leaks
        .iter()
        .find(|l| l.pattern == "unbounded-cache")
        .unwrap();
    assert_eq!((cache.processes, cache.bytes_per_second), (1, 4.0));
}

#[test]
fn older_schema_leak_sites_are_leaks() {
    let line = r#"{"schema":"heaptrail.watch/1","time":5,"pid":3,"window":1,"rss_bytes":1,"traced_bytes":1,"traced_peak_bytes":1,"process_verdict":"python-growth","sites":[{"filename":"/a.py","lineno":2,"size":64,"bytes_per_second":8.0,"verdict":"leak","held_by":"a.CACHE (dict)"},{"filename":"/b.py","lineno":1,"size":64,"verdict":"plateau"}]}"#;
    let mut builder = FleetBuilder::default();
    builder.add_report("r", "r", report(&[line.to_owned()]));
    let f = builder.finish();
    assert_eq!(f.leaks.len(), 1);
    let l = &f.leaks[0];
    assert_eq!(
        (l.site.lineno, l.pattern.as_str(), l.holder.as_deref()),
        (2, "unknown", Some("a.CACHE (dict)"))
    );
    assert_eq!((l.first_seen, l.last_seen, l.hint.as_str()), (5.0, 5.0, ""));
}

#[test]
fn spreads() {
    assert_eq!(Spread::of(&[]), None);
    assert_eq!(
        Spread::of(&[3.0]),
        Some(Spread {
            median: 3.0,
            min: 3.0,
            max: 3.0
        })
    );
    assert_eq!(
        Spread::of(&[9.0, 1.0, 4.0]),
        Some(Spread {
            median: 4.0,
            min: 1.0,
            max: 9.0
        })
    );
    assert_eq!(
        Spread::of(&[4.0, 1.0, 2.0, 9.0]),
        Some(Spread {
            median: 3.0,
            min: 1.0,
            max: 9.0
        })
    );
    assert_eq!(
        Spread::of(&[f64::NAN, 2.0]),
        Some(Spread {
            median: 2.0,
            min: 2.0,
            max: 2.0
        })
    );
}

#[test]
fn the_json_document() {
    let f = fleet();
    let doc: serde_json::Value = serde_json::from_str(&f.to_json(1)).unwrap();
    assert_eq!(doc["schema"], SCHEMA);
    assert_eq!(doc["basis"], "the latest window of each process");
    assert_eq!(
        (doc["leak_count"].as_u64(), doc["process_count"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(doc["leaks"].as_array().unwrap().len(), 1, "--limit 1");
    let x = &doc["leaks"][0];
    assert_eq!(x["site"]["lineno"], 5);
    assert_eq!(x["processes"], 2);
    assert_eq!(x["process_bytes_per_second"]["median"], 15.0);
    assert_eq!(x["seen_in"][1]["source"], "b.jsonl");
    assert_eq!(x["seen_in"][1]["pid"], 3);
    assert_eq!(doc["process_verdicts"]["python-growth"], 3);
    assert_eq!(doc["processes"][0]["pid"], 1);
    let all: serde_json::Value = serde_json::from_str(&f.to_json(0)).unwrap();
    assert_eq!(all["leaks"].as_array().unwrap().len(), 2);
}

#[test]
fn the_text() {
    let f = fleet();
    let out = text::render(&f, 0);
    assert!(
        out.starts_with(
            "Fleet: 3 processes in 2 report files, 6 windows from 1970-01-01 00:01:39 UTC"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "Each process counts with its latest window.\nProcess verdicts: python-growth 3\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("2 leaks in 3 of 3 processes, fastest-growing first:"),
        "{out}"
    );
    assert!(out.contains("#1 /app/x.py:5 unbounded-list\n    in 2 of 3 processes: +30 B/s in total; per process +15 B/s median (+10 B/s to +20 B/s)\n"), "{out}");
    assert!(
        out.contains("    held by: x.LOG (in 2 of 2)\n    fix: collection that only grows"),
        "{out}"
    );
    assert!(
        out.contains("    reported from 1970-01-01 00:01:40 UTC to 1970-01-01 00:01:42 UTC"),
        "{out}"
    );
    assert!(
        out.contains("#2 /app/y.py:9 unbounded-cache") && out.contains("held by: not found"),
        "{out}"
    );
    let one = text::render(&f, 1);
    assert!(
        one.ends_with("\n1 more leak not shown (--limit)\n"),
        "{one}"
    );
    let quiet = text::render(&FleetBuilder::default().finish(), 10);
    assert!(
        quiet.contains("No leak in the latest window of any process."),
        "{quiet}"
    );
}

/// `window(...)` with the function of `file:line` recorded in its leak entries.
fn named(window: String, file: &str, line: u32, function: &str) -> String {
    window.replace(
        &format!(r#""site":{{"filename":"{file}","lineno":{line}}}"#),
        &format!(r#""site":{{"filename":"{file}","lineno":{line},"function":"{function}"}}"#),
    )
}

#[test]
fn the_function_most_processes_name_is_shown_beside_the_line() {
    let leak = |bps| [(X, 5, "unbounded-list", Some("x.LOG"), bps, 100)];
    let a = report(&[
        named(window(1, 1, 100.0, "python-growth", &leak(1.0)), X, 5, "Log.add"),
        named(window(2, 1, 100.0, "python-growth", &leak(2.0)), X, 5, "Log.add"),
        named(window(3, 1, 100.0, "python-growth", &leak(3.0)), X, 5, "Log.old_add"),
        // Written before names were recorded: counts for the leak, not for its name.
        window(4, 1, 100.0, "python-growth", &leak(4.0)),
    ]);
    let mut builder = FleetBuilder::default();
    builder.add_report("a.jsonl", "a.jsonl", a);
    let f = builder.finish();
    assert_eq!(f.leaks.len(), 1);
    assert_eq!(f.leaks[0].processes, 4);
    assert_eq!(f.leaks[0].site.function.as_deref(), Some("Log.add"));
    let out = text::render(&f, 0);
    assert!(out.contains("#1 /app/x.py:5 in Log.add: unbounded-list\n"), "{out}");
    let doc: serde_json::Value = serde_json::from_str(&f.to_json(0)).unwrap();
    assert_eq!(doc["leaks"][0]["site"]["function"], "Log.add");
    assert_eq!(doc["leaks"][0]["site"]["filename"], X, "the line's fields are unchanged");
    // Reports without names: no field, the line alone.
    let old = fleet();
    assert_eq!(old.leaks[0].site.function, None);
    let doc: serde_json::Value = serde_json::from_str(&old.to_json(0)).unwrap();
    assert!(doc["leaks"][0]["site"].get("function").is_none());
}

#[test]
fn terminal_escapes_in_names_are_not_printed() {
    let r = report(&[window(
        1,
        1,
        1.0,
        "ok",
        &[("/a\\u001b[2J.py", 1, "unknown", Some("h\\u0007"), 1.0, 1)],
    )]);
    let mut builder = FleetBuilder::default();
    builder.add_report("r", "r", r);
    let out = text::render(&builder.finish(), 0);
    assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out:?}");
    assert!(out.contains("/a\u{FFFD}[2J.py:1"), "{out}");
}

#[test]
fn reading_files_skips_what_is_not_a_report_and_warns_about_cut_lines() {
    let dir = std::env::temp_dir().join(format!("heaptrail-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        path
    };
    let leak = [(X, 5, "unbounded-list", Some("x.LOG"), 10.0, 1000)];
    let good = write(
        "w-1.jsonl",
        &format!(
            "{}\n{}\n{}",
            window(1, 1, 1.0, "ok", &[]),
            window(1, 2, 2.0, "python-growth", &leak),
            &window(1, 3, 3.0, "ok", &[])[..50]
        ),
    );
    let empty = write("w-2.jsonl", "");
    let text = write("notes.txt", "hello\n");
    let missing = dir.join("gone.jsonl");
    let f = read_fleet(&[
        good.clone(),
        empty.clone(),
        text.clone(),
        missing.clone(),
        dir.clone(),
    ]);
    assert_eq!(f.windows, 2);
    assert_eq!(f.files.len(), 1);
    assert_eq!((f.files[0].windows, f.files[0].skipped_lines), (2, 1));
    assert_eq!(
        f.leaks.len(),
        1,
        "the cut last window does not hide the leak of the one before"
    );
    assert_eq!(f.warnings.len(), 1);
    assert!(
        f.warnings[0].starts_with(&format!("{}: line 3: incomplete JSON", good.display())),
        "{:?}",
        f.warnings
    );
    assert!(f.warnings[0].contains("still writing"), "{:?}", f.warnings);
    let skipped: Vec<(String, String)> = f
        .skipped_files
        .iter()
        .map(|s| (s.path.clone(), s.reason.clone()))
        .collect();
    assert_eq!(skipped.len(), 4, "{skipped:?}");
    assert_eq!(
        skipped[0],
        (
            empty.display().to_string(),
            "no window in the file (it is empty)".into()
        )
    );
    assert!(
        skipped[1]
            .1
            .starts_with("line 1: not a heaptrail watcher report: not JSON"),
        "{skipped:?}"
    );
    assert!(
        skipped[2].1.starts_with("cannot read it: No such file"),
        "{skipped:?}"
    );
    assert_eq!(skipped[3].1, "is a directory");
    std::fs::remove_dir_all(&dir).unwrap();
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
    /// Reports come from elsewhere: whatever a valid one is mutated into, summing it up and
    /// writing the text, the JSON and the page never panics.
    #[test]
    fn mutated_reports_never_panic(
        edits in proptest::collection::vec((0usize..4096, proptest::prelude::any::<u8>()), 0..12),
        cut in 0usize..4096,
    ) {
        let leak = [(X, 5, "unbounded-list", Some("x.LOG"), 10.0, 1000)];
        let text = [
            window(1, 1, 1.0, "ok", &leak),
            window(2, 1, 2.0, "python-growth", &leak),
            window(1, 2, 3.0, "python-growth", &[(Y, 9, "unknown", None, f64::MAX, u64::MAX)]),
        ]
        .join("\n");
        let mut bytes = text.into_bytes();
        for (at, byte) in edits {
            let i = at % bytes.len();
            bytes[i] = byte;
        }
        bytes.truncate(cut.max(1).min(bytes.len()));
        if let Ok(report) = read_report(&bytes[..], None) {
            let mut builder = FleetBuilder::default();
            builder.add_report("a", "a", report);
            let fleet = builder.finish();
            let opts = crate::html::PageOptions { title: "t", subtitle: "s", limit: 10 };
            proptest::prop_assert!(crate::html::fleet_page(&fleet, &opts).contains("</html>"));
            proptest::prop_assert!(text::render(&fleet, 0).starts_with("Fleet: "));
            let doc: serde_json::Value = serde_json::from_str(&fleet.to_json(0)).unwrap();
            proptest::prop_assert_eq!(&doc["schema"], SCHEMA);
        }
    }
}
