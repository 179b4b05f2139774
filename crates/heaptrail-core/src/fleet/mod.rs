//! The fleet summary: the watch reports of many processes (every gunicorn worker, every host)
//! read together, each leak listed once however many processes show it.
//!
//! * **A process** is a report family and a pid. A family is one report file with its rotated
//!   copies (`leaks.jsonl`, `leaks.jsonl.1`, ... see [`sources`]): reports carry no host name,
//!   so processes of different hosts are told apart by their files, and the workers of
//!   `heaptrail run` (which share one file, a pid on each line) by their pids. A pid that
//!   restarted inside one family is one process, at its latest run.
//! * **Each process counts with its latest window**: the leaks it shows now, its current
//!   process verdict. A leak that a process's latest window no longer lists (fixed, or not
//!   proven any more) does not count for that process.
//! * **A leak** is its line (`filename:lineno`) and its pattern, as the watcher's leak entries
//!   name them. Its figures add up the processes that show it: how many, the total growth rate
//!   and the spread of the per-process rates, the live bytes, the holder most of them name; and
//!   when any window of any process first and last reported it.
//!
//! Files: this one (the types, which are the `heaptrail.fleet/1` JSON document: [`SCHEMA`],
//! [`Fleet::to_json`]; and [`FleetBuilder`], which keeps each process's latest window),
//! `leaks` (one entry per leak over the processes), [`sources`] (report families, reading
//! files), [`text`] (the terminal summary); the HTML page is `crate::html::fleet_page`. Files
//! are read with the watch report reader (`crate::html::report`), one at a time, so memory
//! stays that of one file plus the per-process latest windows.

mod leaks;
pub mod sources;
pub mod text;

use crate::html::report::{Report, Window};
use crate::trend::ProcessVerdict;
use crate::watch_report::{LeakKey, LeakRow, Line};
use leaks::fleet_leaks;
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::collections::BTreeMap;

pub use sources::read_fleet;

/// The schema of the fleet summary's JSON document.
pub const SCHEMA: &str = "heaptrail.fleet/1";
/// Warnings kept word for word over all files; further ones are only counted.
pub const MAX_WARNINGS: usize = 100;

/// A process: its report family and pid.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ProcessId {
    /// The report file (without a rotation suffix) the process wrote to.
    pub source: String,
    pub pid: u32,
}

/// A process as its latest window shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FleetProcess {
    #[serde(flatten)]
    pub id: ProcessId,
    /// The latest window: its number and unix time.
    pub window: u64,
    pub time: f64,
    /// Windows read of this process, in all its files and runs.
    pub windows: u64,
    pub process_verdict: String,
    pub rss_bytes: u64,
    pub traced_bytes: u64,
    /// Leak entries of the latest window.
    pub leaks: usize,
}

/// The spread of a figure over processes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// None for no values.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

/// One leak, over every process whose latest window shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FleetLeak {
    /// The line to look at.
    pub site: Line,
    pub pattern: String,
    /// The pattern's one-line fix (empty for `unknown`).
    pub hint: String,
    /// Processes whose latest window shows the leak.
    pub processes: usize,
    /// Sum over those processes of their growth rate, bytes per second.
    pub bytes_per_second: f64,
    /// Median, min and max of the per-process growth rates.
    pub process_bytes_per_second: Spread,
    /// Live bytes and blocks, summed over those processes.
    pub size: u64,
    pub count: u64,
    /// The holder most of those processes name (None when none found one).
    pub holder: Option<String>,
    /// How many of them name that holder.
    pub holder_processes: usize,
    /// How many other holders the rest name.
    pub other_holders: usize,
    /// Unix times of the first and the last window, of any process read, that reported it.
    pub first_seen: f64,
    pub last_seen: f64,
    /// The processes that show it.
    pub seen_in: Vec<ProcessId>,
}

/// A file that was read, and what it gave.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FileRead {
    pub path: String,
    pub windows: u64,
    /// Lines skipped as invalid (a cut last line, a stray line).
    pub skipped_lines: usize,
}

/// A file that gave nothing, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SkippedFile {
    pub path: String,
    pub reason: String,
}

/// The summary of a fleet (the `heaptrail.fleet/1` document, see [`Fleet::to_json`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Fleet {
    pub schema: &'static str,
    /// Which window of each process the figures come from.
    pub basis: &'static str,
    pub files: Vec<FileRead>,
    pub skipped_files: Vec<SkippedFile>,
    /// Windows read, over all files.
    pub windows: u64,
    /// Unix times of the earliest and the latest window read.
    pub first_time: Option<f64>,
    pub last_time: Option<f64>,
    /// Processes per process verdict (of their latest window); every known verdict is listed.
    pub process_verdicts: BTreeMap<String, usize>,
    /// Every leak, fastest-growing (in total) first.
    pub leaks: Vec<FleetLeak>,
    /// Every process, in the order they were met.
    pub processes: Vec<FleetProcess>,
    /// What was skipped inside the files that were read, `path: line N: ...`.
    pub warnings: Vec<String>,
}

/// The JSON document: the fleet's fields in reading order, the leaks cut to a limit.
#[derive(Serialize)]
struct Document<'a> {
    schema: &'static str,
    basis: &'static str,
    process_count: usize,
    leak_count: usize,
    windows: u64,
    first_time: Option<f64>,
    last_time: Option<f64>,
    process_verdicts: &'a BTreeMap<String, usize>,
    leaks: &'a [FleetLeak],
    processes: &'a [FleetProcess],
    files: &'a [FileRead],
    skipped_files: &'a [SkippedFile],
    warnings: &'a [String],
}

impl Fleet {
    /// The JSON document, with the first `limit` leaks (all for 0); `leak_count` is the
    /// number of leaks in all.
    pub fn to_json(&self, limit: usize) -> String {
        let shown = if limit == 0 {
            self.leaks.len()
        } else {
            limit.min(self.leaks.len())
        };
        let doc = Document {
            schema: self.schema,
            basis: self.basis,
            process_count: self.processes.len(),
            leak_count: self.leaks.len(),
            windows: self.windows,
            first_time: self.first_time,
            last_time: self.last_time,
            process_verdicts: &self.process_verdicts,
            leaks: &self.leaks[..shown],
            processes: &self.processes,
            files: &self.files,
            skipped_files: &self.skipped_files,
            warnings: &self.warnings,
        };
        serde_json::to_string(&doc).expect("plain data serializes")
    }

    /// Processes whose latest window shows at least one leak.
    pub fn leaking_processes(&self) -> usize {
        self.processes.iter().filter(|p| p.leaks > 0).count()
    }

    /// Process verdicts with their number of processes, `ok` first, then the kinds of growth
    /// (as [`ProcessVerdict::ALL`]), then names this heaptrail does not know; none with 0.
    pub fn verdict_counts(&self) -> Vec<(&str, usize)> {
        let rank = |name: &str| {
            ProcessVerdict::ALL
                .iter()
                .position(|v| v.as_str() == name)
                .unwrap_or(ProcessVerdict::ALL.len())
        };
        let mut counts: Vec<(&str, usize)> = self
            .process_verdicts
            .iter()
            .filter(|(_, &n)| n > 0)
            .map(|(k, &n)| (k.as_str(), n))
            .collect();
        counts.sort_by_key(|&(name, _)| (rank(name), name));
        counts
    }
}

/// The latest state of one process while reports are added.
struct ProcessState {
    id: ProcessId,
    last: Window,
    windows: u64,
    leaks: Vec<LeakRow>,
}

/// Builds a [`Fleet`] from reports added one file at a time, each family's files oldest
/// first, so that a later file's window of a process replaces an earlier one.
#[derive(Default)]
pub struct FleetBuilder {
    index: FxHashMap<ProcessId, usize>,
    processes: Vec<ProcessState>,
    leak_times: FxHashMap<LeakKey, (f64, f64)>,
    files: Vec<FileRead>,
    skipped_files: Vec<SkippedFile>,
    warnings: Vec<String>,
    more_warnings: usize,
    windows: u64,
    first_time: Option<f64>,
    last_time: Option<f64>,
}

impl FleetBuilder {
    /// Adds the report read from `path`, a file of the family `source`.
    pub fn add_report(&mut self, source: &str, path: &str, report: Report) {
        let mut windows = 0u64;
        for w in &report.warnings {
            self.warn(format!("{path}: {w}"));
        }
        for run in report.runs {
            let (Some(first), Some(last)) = (run.windows.first(), run.windows.last()) else {
                continue;
            };
            windows += run.windows.len() as u64;
            self.first_time = Some(self.first_time.map_or(first.time, |t| t.min(first.time)));
            self.last_time = Some(self.last_time.map_or(last.time, |t| t.max(last.time)));
            for (key, (a, b)) in run.leak_times {
                let times = self.leak_times.entry(key).or_insert((a, b));
                times.0 = times.0.min(a);
                times.1 = times.1.max(b);
            }
            let id = ProcessId {
                source: source.to_owned(),
                pid: run.pid,
            };
            let last = last.clone();
            let count = run.windows.len() as u64;
            match self.index.get(&id) {
                Some(&i) => {
                    let state = &mut self.processes[i];
                    state.windows += count;
                    state.last = last;
                    state.leaks = run.last_leaks;
                }
                None => {
                    self.index.insert(id.clone(), self.processes.len());
                    self.processes.push(ProcessState {
                        id,
                        last,
                        windows: count,
                        leaks: run.last_leaks,
                    });
                }
            }
        }
        self.windows += windows;
        self.files.push(FileRead {
            path: path.to_owned(),
            windows,
            skipped_lines: report.skipped,
        });
    }

    /// Notes a file that gave nothing, and why.
    pub fn skip_file(&mut self, path: &str, reason: String) {
        self.skipped_files.push(SkippedFile {
            path: path.to_owned(),
            reason,
        });
    }

    fn warn(&mut self, warning: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(warning);
        } else {
            self.more_warnings += 1;
        }
    }

    pub fn finish(mut self) -> Fleet {
        if self.more_warnings > 0 {
            let more = self.more_warnings;
            self.warnings.push(format!("... and {more} more warnings"));
        }
        let mut process_verdicts: BTreeMap<String, usize> = ProcessVerdict::ALL
            .iter()
            .map(|v| (v.as_str().to_owned(), 0))
            .collect();
        for p in &self.processes {
            *process_verdicts
                .entry(p.last.process_verdict.clone())
                .or_default() += 1;
        }
        let leaks = fleet_leaks(&self.processes, &self.leak_times);
        let processes = self
            .processes
            .into_iter()
            .map(|p| FleetProcess {
                window: p.last.window,
                time: p.last.time,
                windows: p.windows,
                process_verdict: p.last.process_verdict,
                rss_bytes: p.last.rss_bytes,
                traced_bytes: p.last.traced_bytes,
                leaks: p.leaks.len(),
                id: p.id,
            })
            .collect();
        Fleet {
            schema: SCHEMA,
            basis: "the latest window of each process",
            files: self.files,
            skipped_files: self.skipped_files,
            windows: self.windows,
            first_time: self.first_time,
            last_time: self.last_time,
            process_verdicts,
            leaks,
            processes,
            warnings: self.warnings,
        }
    }
}

#[cfg(test)]
mod tests;
