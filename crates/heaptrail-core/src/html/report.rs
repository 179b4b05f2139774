//! Reading a watcher report: JSON Lines of schema `heaptrail.watch/2` (or the older
//! `heaptrail.watch/1`, which has no leak entries), one window per line, as
//! `heaptrail run --report FILE` / `heaptrail.watch(report=...)` append them.
//! The window type is the schema's owner, [`crate::watch_report::WindowReport`].
//!
//! The file is streamed, never held whole: per window only the process figures and each
//! reported site's size are kept (for the charts), plus the full site rows of the latest window
//! of each run (for the table and the flame graph). Memory is therefore a small fraction of the
//! file size, however long the service ran.
//!
//! Runs: several processes can append to one file (a command and the Python processes it
//! starts; restarts of a container whose process is always pid 1). Windows are grouped by pid,
//! and a window number that does not increase for a pid starts a new run of that pid.
//!
//! Bad lines: the first line must be a `heaptrail.watch/2` (or `/1`) window, or the file is refused (it is
//! not a report). After that, a line that is not a valid window (a process killed in the
//! middle of a write, a stray line) is skipped with a warning naming its line number: the rest
//! of a long report is still worth seeing. Lines longer than [`MAX_LINE_BYTES`] are skipped
//! without being buffered.

use crate::watch_report::{is_known_schema, LeakKey, LeakRow, WindowReport, SCHEMA};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Deserialize;
use std::fmt;
use std::io::{self, BufRead};

pub use crate::watch_report::SiteRow;

/// A window line longer than this is skipped (real ones are a few KiB).
pub const MAX_LINE_BYTES: usize = 16 << 20;
/// Process ids listed in [`Report::pids`].
pub const MAX_LISTED_PIDS: usize = 1000;
/// Distinct leaks (line and pattern) whose first and last times a run keeps.
pub const MAX_LEAK_KEYS: usize = 10_000;
/// Warnings kept word for word; further ones are only counted.
pub const MAX_WARNINGS: usize = 20;

/// Why a file cannot be read as a report at all.
#[derive(Debug)]
pub enum ReportError {
    Io(io::Error),
    /// The file holds no window (empty, or only blank lines).
    Empty,
    /// The first line is not a window of a supported schema: the file is not a report.
    NotAReport {
        line: usize,
        reason: String,
    },
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportError::Io(e) => write!(f, "{e}"),
            ReportError::Empty => f.write_str("no window in the file (it is empty)"),
            ReportError::NotAReport { line, reason } => {
                write!(f, "line {line}: not a heaptrail watcher report: {reason}")
            }
        }
    }
}

impl std::error::Error for ReportError {}

impl From<io::Error> for ReportError {
    fn from(e: io::Error) -> Self {
        ReportError::Io(e)
    }
}

/// Only the schema, to explain why a line that is not a valid window was refused.
#[derive(Deserialize)]
struct SchemaProbe {
    schema: Option<serde_json::Value>,
}

/// Process figures of one window.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    pub time: f64,
    pub window: u64,
    pub rss_bytes: u64,
    pub traced_bytes: u64,
    pub traced_peak_bytes: u64,
    pub process_verdict: String,
    pub process_confidence: Option<f64>,
}

/// A site's size in one window of its run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SitePoint {
    /// Index into [`Run::windows`].
    pub window_index: u32,
    pub size: u64,
    /// Index into [`Run::verdict_names`].
    pub verdict: u8,
}

/// The windows of one process run.
#[derive(Debug, Default)]
pub struct Run {
    pub pid: u32,
    /// Line of the file where the run's first window is.
    pub first_line: usize,
    pub interval: Option<f64>,
    pub windows: Vec<Window>,
    /// `(filename, lineno)` per site id.
    pub sites: Vec<(String, u32)>,
    /// Size over time per site id, in window order; windows where the site was not reported
    /// are missing.
    pub series: Vec<Vec<SitePoint>>,
    /// Verdict strings met in this run (site points refer to them by index).
    pub verdict_names: Vec<String>,
    /// The rows of the latest window, most severe first as written.
    pub last_sites: Vec<SiteRow>,
    /// The leak entries of the latest window (see [`WindowReport::take_leaks`]).
    pub last_leaks: Vec<LeakRow>,
    /// Unix times of the first and the last window that reported each leak (line and
    /// pattern): when a fleet first and last saw it. Bounded by the distinct leaks.
    pub leak_times: FxHashMap<LeakKey, (f64, f64)>,
    site_ids: FxHashMap<(String, u32), u32>,
}

impl Run {
    /// The site id of `(filename, lineno)`, if the run reported it.
    pub fn site_id(&self, filename: &str, lineno: u32) -> Option<u32> {
        self.site_ids.get(&(filename.to_owned(), lineno)).copied()
    }

    fn intern_verdict(&mut self, verdict: &str) -> u8 {
        if let Some(i) = self.verdict_names.iter().position(|v| v == verdict) {
            return i as u8;
        }
        // Verdicts are a handful of words; a hostile file with hundreds of distinct ones
        // shares one slot instead of growing the table.
        if self.verdict_names.len() >= 32 {
            return 31;
        }
        self.verdict_names.push(verdict.to_owned());
        (self.verdict_names.len() - 1) as u8
    }

    fn add(&mut self, mut w: WindowReport) {
        let leaks = w.take_leaks();
        let index = self.windows.len() as u32;
        if w.interval.is_some() {
            self.interval = w.interval;
        }
        self.windows.push(Window {
            time: w.time,
            window: w.window,
            rss_bytes: w.rss_bytes,
            traced_bytes: w.traced_bytes,
            traced_peak_bytes: w.traced_peak_bytes,
            process_verdict: w.process_verdict,
            process_confidence: w.process_confidence,
        });
        for site in &w.sites {
            let verdict = self.intern_verdict(&site.verdict);
            let key = (site.filename.clone(), site.lineno);
            let id = match self.site_ids.get(&key) {
                Some(&id) => id,
                None => {
                    let id = self.sites.len() as u32;
                    self.sites.push(key.clone());
                    self.series.push(Vec::new());
                    self.site_ids.insert(key, id);
                    id
                }
            };
            let series = &mut self.series[id as usize];
            // A site listed twice in one window (not written by heaptrail) keeps its first row.
            if series.last().map(|p| p.window_index) != Some(index) {
                series.push(SitePoint {
                    window_index: index,
                    size: site.size,
                    verdict,
                });
            }
        }
        for leak in &leaks {
            let key = leak.key();
            if self.leak_times.len() >= MAX_LEAK_KEYS && !self.leak_times.contains_key(&key) {
                continue; // a hostile file's endless distinct leaks are not all timed
            }
            let times = self.leak_times.entry(key).or_insert((w.time, w.time));
            times.0 = times.0.min(w.time);
            times.1 = times.1.max(w.time);
        }
        self.last_leaks = leaks;
        self.last_sites = w.sites;
    }
}

/// A parsed report.
#[derive(Debug, Default)]
pub struct Report {
    /// In the order their first window appears in the file.
    pub runs: Vec<Run>,
    /// Every process id met (also those `pid` left out), in file order; at most
    /// [`MAX_LISTED_PIDS`].
    pub pids: Vec<u32>,
    /// Non-blank lines read.
    pub lines: usize,
    /// Lines skipped as invalid.
    pub skipped: usize,
    /// What was skipped and why, `line N: ...`, at most [`MAX_WARNINGS`].
    pub warnings: Vec<String>,
}

enum Line {
    Eof,
    Complete,
    /// The file ended without a newline after this line.
    Unterminated,
    TooLong,
}

/// Reads one line into `buf` (without the newline), or skips it when longer than `max`.
fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let chunk = match reader.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(match (any, too_long) {
                (false, _) => Line::Eof,
                (true, true) => Line::TooLong,
                (true, false) => Line::Unterminated,
            });
        }
        any = true;
        let (part, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        if !too_long {
            if buf.len() + part.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(part);
            }
        }
        let used = done.unwrap_or(chunk.len());
        reader.consume(used);
        if done.is_some() {
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Complete
            });
        }
    }
}

/// serde_json's message without its " at line 1 column N" tail (every line is parsed alone, so
/// its line is always 1), with the column instead.
fn json_reason(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let msg = text
        .rfind(" at line ")
        .map_or(text.as_str(), |i| &text[..i]);
    match e.classify() {
        serde_json::error::Category::Syntax => {
            format!("not JSON ({msg} at column {})", e.column())
        }
        serde_json::error::Category::Eof => {
            format!("incomplete JSON (cut off at column {})", e.column())
        }
        _ => format!("{msg} (column {})", e.column()),
    }
}

/// Why `line` is not a window, worded for the user.
fn explain(line: &[u8], e: &serde_json::Error) -> String {
    if e.is_data() {
        if let Ok(probe) = serde_json::from_slice::<SchemaProbe>(line) {
            match probe.schema {
                None => return "no \"schema\" field (not a window of a watcher report)".into(),
                Some(serde_json::Value::String(s)) if !is_known_schema(&s) => {
                    return format!(
                        "schema {} is not {SCHEMA}, the one this heaptrail reads",
                        serde_json::Value::String(s)
                    );
                }
                _ => {}
            }
        }
    }
    json_reason(e)
}

fn parse_window(line: &[u8]) -> Result<WindowReport, String> {
    let w: WindowReport = serde_json::from_slice(line).map_err(|e| explain(line, &e))?;
    if !is_known_schema(&w.schema) {
        return Err(format!(
            "schema {} is not {SCHEMA}, the one this heaptrail reads",
            serde_json::Value::String(w.schema)
        ));
    }
    if !w.time.is_finite() {
        return Err("\"time\" is not a finite number".into());
    }
    Ok(w)
}

/// Reads a whole report. `pid` keeps only that process's windows (others are still checked).
pub fn read_report(mut reader: impl BufRead, pid: Option<u32>) -> Result<Report, ReportError> {
    let mut report = Report::default();
    // Run index of the current run of each pid.
    let mut current: FxHashMap<u32, usize> = FxHashMap::default();
    let mut seen: FxHashSet<u32> = FxHashSet::default();
    let mut buf = Vec::new();
    let mut lineno = 0usize;
    let mut first = true;
    loop {
        let kind = read_line(&mut reader, &mut buf, MAX_LINE_BYTES)?;
        if matches!(kind, Line::Eof) {
            break;
        }
        lineno += 1;
        let parsed = match kind {
            Line::TooLong => Err(format!("longer than {} MiB", MAX_LINE_BYTES >> 20)),
            _ if buf.iter().all(u8::is_ascii_whitespace) => continue,
            Line::Unterminated => parse_window(&buf).map_err(|reason| {
                if reason.starts_with("incomplete JSON") {
                    format!(
                        "{reason}: the last line is unfinished (was the process still writing?)"
                    )
                } else {
                    reason
                }
            }),
            _ => parse_window(&buf),
        };
        report.lines += 1;
        let window = match parsed {
            Ok(w) => w,
            Err(reason) if first => {
                return Err(ReportError::NotAReport {
                    line: lineno,
                    reason,
                })
            }
            Err(reason) => {
                report.skipped += 1;
                if report.warnings.len() < MAX_WARNINGS {
                    report
                        .warnings
                        .push(format!("line {lineno}: {reason}; skipped"));
                }
                continue;
            }
        };
        first = false;
        if report.pids.len() < MAX_LISTED_PIDS && seen.insert(window.pid) {
            report.pids.push(window.pid);
        }
        if pid.is_some_and(|p| p != window.pid) {
            continue;
        }
        let run = match current.get(&window.pid) {
            Some(&i) if report.runs[i].windows.last().map(|w| w.window) < Some(window.window) => i,
            _ => {
                report.runs.push(Run {
                    pid: window.pid,
                    first_line: lineno,
                    ..Run::default()
                });
                current.insert(window.pid, report.runs.len() - 1);
                report.runs.len() - 1
            }
        };
        report.runs[run].add(window);
    }
    if first {
        return Err(ReportError::Empty);
    }
    if report.skipped > report.warnings.len() {
        let more = report.skipped - report.warnings.len();
        report
            .warnings
            .push(format!("... and {more} more invalid lines skipped"));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(pid: u32, n: u64, sites: &str) -> String {
        format!(
            r#"{{"schema":"heaptrail.watch/1","time":{t},"pid":{pid},"window":{n},"interval":0.5,"rss_bytes":1000,"traced_bytes":500,"traced_peak_bytes":600,"process_verdict":"ok","process_confidence":0.5,"sites":[{sites}]}}"#,
            t = 1000.0 + n as f64
        )
    }

    fn site(file: &str, line: u32, size: u64, verdict: &str) -> String {
        format!(
            r#"{{"filename":"{file}","lineno":{line},"traceback":[["{file}",{line}],["main.py",3]],"size":{size},"size_diff":10,"count":2,"count_diff":1,"bytes_per_second":12.5,"verdict":"{verdict}","confidence":0.9,"windows":4,"growth_bytes":30}}"#
        )
    }

    fn read(text: &str) -> Result<Report, ReportError> {
        read_report(text.as_bytes(), None)
    }

    #[test]
    fn windows_sites_and_series() {
        let text = [
            window(7, 1, &site("a.py", 1, 100, "warming-up")),
            window(
                7,
                2,
                &[site("a.py", 1, 200, "leak"), site("b.py", 2, 5, "plateau")].join(","),
            ),
            window(7, 3, &site("a.py", 1, 300, "leak")),
        ]
        .join("\n");
        let r = read(&(text + "\n")).unwrap();
        assert_eq!((r.lines, r.skipped, r.runs.len()), (3, 0, 1));
        let run = &r.runs[0];
        assert_eq!((run.pid, run.first_line, run.interval), (7, 1, Some(0.5)));
        assert_eq!(run.windows.len(), 3);
        assert_eq!(run.windows[2].window, 3);
        assert_eq!(run.windows[0].rss_bytes, 1000);
        let a = run.site_id("a.py", 1).unwrap() as usize;
        let sizes: Vec<_> = run.series[a].iter().map(|p| p.size).collect();
        assert_eq!(sizes, [100, 200, 300]);
        let verdicts: Vec<_> = run.series[a]
            .iter()
            .map(|p| run.verdict_names[p.verdict as usize].as_str())
            .collect();
        assert_eq!(verdicts, ["warming-up", "leak", "leak"]);
        let b = run.site_id("b.py", 2).unwrap() as usize;
        assert_eq!(run.series[b][0].window_index, 1);
        assert_eq!(run.last_sites.len(), 1);
        let last = &run.last_sites[0];
        assert_eq!(last.traceback, [("a.py".into(), 1), ("main.py".into(), 3)]);
        assert_eq!(
            (last.size, last.count, last.verdict.as_str()),
            (300, 2, "leak")
        );
        assert_eq!(last.bytes_per_second, 12.5);
        assert_eq!(last.held_by, None);
    }

    #[test]
    fn pids_and_restarts_make_runs() {
        let text = [
            window(1, 1, ""),
            window(2, 1, ""),
            window(1, 2, ""),
            window(2, 2, ""),
            window(1, 1, ""), // pid 1 again from window 1: a restart
            window(1, 2, ""),
        ]
        .join("\n");
        let r = read(&text).unwrap();
        let runs: Vec<_> = r
            .runs
            .iter()
            .map(|run| (run.pid, run.first_line, run.windows.len()))
            .collect();
        assert_eq!(runs, [(1, 1, 2), (2, 2, 2), (1, 5, 2)]);
        assert_eq!(r.pids, [1, 2]);
        let only2 = read_report(text.as_bytes(), Some(2)).unwrap();
        assert_eq!(only2.runs.len(), 1);
        assert_eq!(only2.pids, [1, 2]);
        assert_eq!(only2.runs[0].pid, 2);
    }

    #[test]
    fn bad_lines_after_the_first_are_skipped_with_their_line_number() {
        let text = format!(
            "{}\n\n{{\"schema\":\"heaptrail.watch/1\",\"time\":1}}\nnot json\n{}\n{}",
            window(1, 1, ""),
            window(1, 2, ""),
            &window(1, 3, "")[..40]
        );
        let r = read(&text).unwrap();
        assert_eq!(r.runs[0].windows.len(), 2);
        assert_eq!((r.lines, r.skipped), (5, 3));
        assert_eq!(r.warnings.len(), 3);
        assert!(
            r.warnings[0].starts_with("line 3: missing field `pid`"),
            "{:?}",
            r.warnings
        );
        assert!(
            r.warnings[1].starts_with("line 4: not JSON"),
            "{:?}",
            r.warnings
        );
        assert!(
            r.warnings[2].starts_with("line 6: incomplete JSON")
                && r.warnings[2].contains("still writing"),
            "{:?}",
            r.warnings
        );
    }

    #[test]
    fn a_file_that_is_not_a_report_is_refused_at_its_first_line() {
        let msg = |t: &str| read(t).unwrap_err().to_string();
        assert_eq!(
            msg("\n{\"a\": 1}\n"),
            "line 2: not a heaptrail watcher report: no \"schema\" field (not a window of a \
             watcher report)"
        );
        assert_eq!(
            msg(r#"{"schema":"heaptrail.watch/9","x":1}"#),
            "line 1: not a heaptrail watcher report: schema \"heaptrail.watch/9\" is not \
             heaptrail.watch/2, the one this heaptrail reads"
        );
        assert!(msg("{oops").starts_with("line 1: not a heaptrail watcher report: not JSON"));
        assert!(msg(&window(1, 1, "").replace("\"pid\":1", "\"pid\":-1"))
            .contains("invalid value: integer `-1`"));
        assert_eq!(msg(""), "no window in the file (it is empty)");
        assert_eq!(msg("\n  \n"), "no window in the file (it is empty)");
        // Not UTF-8.
        let mut bytes = window(1, 1, &site("a.py", 1, 1, "leak")).into_bytes();
        let at = bytes.iter().position(|&b| b == b'a').unwrap();
        bytes[at] = 0xff;
        assert!(read_report(&bytes[..], None).is_err());
    }

    #[test]
    fn overlong_lines_are_skipped_without_buffering() {
        let mut reader = io::Cursor::new(b"0123456789\nabc\nxyz".to_vec());
        let mut buf = Vec::new();
        assert!(matches!(
            read_line(&mut reader, &mut buf, 5).unwrap(),
            Line::TooLong
        ));
        assert!(buf.is_empty());
        assert!(matches!(
            read_line(&mut reader, &mut buf, 5).unwrap(),
            Line::Complete
        ));
        assert_eq!(buf, b"abc");
        assert!(matches!(
            read_line(&mut reader, &mut buf, 5).unwrap(),
            Line::Unterminated
        ));
        assert_eq!(buf, b"xyz");
        assert!(matches!(
            read_line(&mut reader, &mut buf, 5).unwrap(),
            Line::Eof
        ));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
        let text = format!("{}\n{deep}\n", window(1, 1, ""));
        let r = read(&text).unwrap();
        assert_eq!(r.skipped, 1);
        assert!(r.warnings[0].starts_with("line 2: "), "{:?}", r.warnings);
        let nested_sites = format!(
            "{}\n{}\n",
            window(1, 1, ""),
            window(1, 2, "").replace("\"sites\":[]", &format!("\"sites\":{deep}"))
        );
        let r = read(&nested_sites).unwrap();
        assert_eq!((r.skipped, r.runs[0].windows.len()), (1, 1));
    }

    #[test]
    fn crlf_line_ends_and_unknown_fields_are_accepted() {
        let line =
            window(3, 1, &site("a.py", 1, 10, "leak")).replace("\"pid\"", "\"new\":[1],\"pid\"");
        let r = read(&format!("{line}\r\n")).unwrap();
        assert_eq!(r.runs[0].last_sites[0].size, 10);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]
        /// Reports are files from elsewhere: whatever bytes a valid report is mutated into,
        /// reading it gives a report or an error, and a report always renders.
        #[test]
        fn mutated_reports_never_panic(
            edits in proptest::collection::vec((0usize..4096, proptest::prelude::any::<u8>()), 0..12),
            cut in 0usize..4096,
        ) {
            let text = [
                window(7, 1, &site("a.py", 1, 100, "warming-up")),
                window(7, 2, &[site("a.py", 1, 200, "leak"), site("b.py", 2, 5, "plateau")].join(",")),
                window(8, 1, &site("c.py", 3, 50, "suspect")),
            ]
            .join("\n");
            let mut bytes = text.into_bytes();
            for (at, byte) in edits {
                let i = at % bytes.len();
                bytes[i] = byte;
            }
            bytes.truncate(cut.max(1).min(bytes.len()));
            if let Ok(report) = read_report(&bytes[..], None) {
                let opts = crate::html::PageOptions { title: "t", subtitle: "s", limit: 10 };
                let page = crate::html::report_page(&report, &opts);
                proptest::prop_assert!(page.contains("</html>"));
            }
        }
    }
}
