//! The fleet summary as `heaptrail report` prints it on a terminal: what was read, the process
//! verdicts, then each leak once with its process count, rates, live bytes, holder, pattern,
//! fix and when it was seen.

use super::{Fleet, FleetLeak};
use crate::html::format::{count, rate, size, utc};
use crate::watch_report::site_text;
use std::fmt::Write;

/// `s` with control characters (terminal escape sequences in a hostile file's names) replaced
/// by U+FFFD.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// The summary, the first `limit` leaks (all for 0). Ends with a newline.
pub fn render(fleet: &Fleet, limit: usize) -> String {
    let mut out = String::new();
    let processes = fleet.processes.len();
    let files = fleet.files.len();
    let _ = write!(
        out,
        "Fleet: {processes} {} in {files} report {}, {} {}",
        plural(processes, "process", "processes"),
        plural(files, "file", "files"),
        count(fleet.windows),
        plural(fleet.windows as usize, "window", "windows"),
    );
    if let (Some(a), Some(b)) = (fleet.first_time, fleet.last_time) {
        let _ = write!(out, " from {} to {}", utc(a), utc(b));
    }
    out.push_str(".\nEach process counts with its latest window.\n");
    let verdicts: Vec<String> = fleet
        .verdict_counts()
        .iter()
        .map(|(name, n)| format!("{} {n}", printable(name)))
        .collect();
    let _ = writeln!(out, "Process verdicts: {}", verdicts.join(", "));
    out.push('\n');

    if fleet.leaks.is_empty() {
        out.push_str("No leak in the latest window of any process.\n");
        return out;
    }
    let leaking = fleet.leaking_processes();
    let _ = writeln!(
        out,
        "{} {} in {leaking} of {processes} {}, fastest-growing first:",
        fleet.leaks.len(),
        plural(fleet.leaks.len(), "leak", "leaks"),
        plural(processes, "process", "processes"),
    );
    let shown = if limit == 0 {
        fleet.leaks.len()
    } else {
        limit.min(fleet.leaks.len())
    };
    for (i, leak) in fleet.leaks[..shown].iter().enumerate() {
        out.push('\n');
        leak_lines(&mut out, i + 1, leak, processes);
    }
    if shown < fleet.leaks.len() {
        let _ = writeln!(
            out,
            "\n{} more {} not shown (--limit)",
            fleet.leaks.len() - shown,
            plural(fleet.leaks.len() - shown, "leak", "leaks")
        );
    }
    out
}

fn leak_lines(out: &mut String, index: usize, leak: &FleetLeak, processes: usize) {
    // `#1 app/cache.py:42 in Cache.remember: unbounded-cache`; `#1 app/cache.py:42
    // unbounded-cache` when the reports recorded no function for the line.
    let site = site_text(
        &leak.site.filename,
        leak.site.lineno,
        leak.site.function.as_deref(),
    );
    let named = leak.site.function.as_deref().is_some_and(|f| !f.is_empty());
    let separator = if named { ":" } else { "" };
    let _ = writeln!(
        out,
        "#{index} {}{separator} {}",
        printable(&site),
        printable(&leak.pattern)
    );
    let spread = &leak.process_bytes_per_second;
    let _ = writeln!(
        out,
        "    in {} of {processes} {}: {} in total; per process {} median ({} to {})",
        leak.processes,
        plural(processes, "process", "processes"),
        rate(leak.bytes_per_second),
        rate(spread.median),
        rate(spread.min),
        rate(spread.max),
    );
    let _ = writeln!(
        out,
        "    live: {} in {} blocks",
        size(leak.size as f64),
        count(leak.count)
    );
    match &leak.holder {
        Some(holder) => {
            let _ = write!(
                out,
                "    held by: {} (in {} of {})",
                printable(holder),
                leak.holder_processes,
                leak.processes
            );
            if leak.other_holders > 0 {
                let _ = write!(
                    out,
                    "; {} other {}",
                    leak.other_holders,
                    plural(leak.other_holders, "holder", "holders")
                );
            }
            out.push('\n');
        }
        None => out.push_str("    held by: not found\n"),
    }
    if !leak.hint.is_empty() {
        let _ = writeln!(out, "    fix: {}", printable(&leak.hint));
    }
    let _ = writeln!(
        out,
        "    reported from {} to {}",
        utc(leak.first_seen),
        utc(leak.last_seen)
    );
}
