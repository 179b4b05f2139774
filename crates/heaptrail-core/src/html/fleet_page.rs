//! The page for a fleet (`heaptrail html DIR`, or several report files): each leak once with
//! the number of processes that show it, the total and per-process growth rates, the live
//! bytes, the holder, the pattern and its fix; the process verdicts; every process at its
//! latest window. The figures are [`crate::fleet`]'s; this file only lays them out.

use std::fmt::Write;

use super::escape::escape;
use super::format::{count, rate, size, utc};
use super::page::{
    badge, end_table, named_site_cell, process_class, process_meaning, stat, Page,
};
use super::PageOptions;
use crate::fleet::{Fleet, FleetLeak};

/// Processes listed in the table of processes.
const MAX_LISTED_PROCESSES: usize = 500;
/// Problems listed word for word in the box at the top.
const MAX_LISTED_PROBLEMS: usize = 30;

pub fn fleet_page(fleet: &Fleet, opts: &PageOptions) -> String {
    let subtitle = format!(
        "{} · {} {} in {} report {}",
        opts.subtitle,
        count(fleet.processes.len() as u64),
        if fleet.processes.len() == 1 {
            "process"
        } else {
            "processes"
        },
        count(fleet.files.len() as u64),
        if fleet.files.len() == 1 {
            "file"
        } else {
            "files"
        },
    );
    let mut page = Page::default();
    page.push(&problems_box(fleet));
    page.push(&summary_section(fleet));
    page.push(&leaks_section(fleet, opts.limit));
    page.push(&processes_section(fleet));
    page.finish(opts.title, &subtitle)
}

/// Files skipped whole, then lines skipped inside files.
fn problems_box(fleet: &Fleet) -> String {
    let mut items: Vec<String> = fleet
        .skipped_files
        .iter()
        .map(|s| format!("{}: {}; file skipped", s.path, s.reason))
        .collect();
    items.extend(fleet.warnings.iter().cloned());
    if items.is_empty() {
        return String::new();
    }
    let mut out = String::from("<div class=\"warn\"><b>Some files or lines were skipped</b><ul>");
    for item in items.iter().take(MAX_LISTED_PROBLEMS) {
        let _ = write!(out, "<li>{}</li>", escape(item));
    }
    if items.len() > MAX_LISTED_PROBLEMS {
        let _ = write!(
            out,
            "<li>... and {} more</li>",
            items.len() - MAX_LISTED_PROBLEMS
        );
    }
    out.push_str("</ul></div>\n");
    out
}

fn summary_section(fleet: &Fleet) -> String {
    let mut s = String::from("<section id=\"fleet\"><h2>Fleet</h2>");
    let period = match (fleet.first_time, fleet.last_time) {
        (Some(a), Some(b)) => format!(" from {} to {}", escape(&utc(a)), escape(&utc(b))),
        _ => String::new(),
    };
    let _ = write!(
        s,
        "<p class=\"note\">{} windows{period}. A process is a pid in a report file (with its \
         rotated copies); each process counts with its <b>latest window</b>: the leaks it \
         shows now and its current process verdict.</p>",
        count(fleet.windows)
    );
    s.push_str("<div class=\"stats\">");
    s.push_str(&stat("Processes", &count(fleet.processes.len() as u64)));
    s.push_str(&stat(
        "Processes leaking",
        &count(fleet.leaking_processes() as u64),
    ));
    s.push_str(&stat("Leaks", &count(fleet.leaks.len() as u64)));
    s.push_str(&stat("Report files", &count(fleet.files.len() as u64)));
    s.push_str(&stat("Windows", &count(fleet.windows)));
    s.push_str(
        "</div><h3>Process verdicts</h3><table><thead><tr><th>Verdict</th>\
                <th class=\"num\">Processes</th><th>Meaning</th></tr></thead><tbody>",
    );
    for (verdict, n) in fleet.verdict_counts() {
        let _ = write!(
            s,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"muted\">{}</td></tr>",
            badge(process_class(verdict), verdict),
            count(n as u64),
            escape(process_meaning(verdict))
        );
    }
    s.push_str("</tbody></table></section>\n");
    s
}

fn leaks_section(fleet: &Fleet, limit: usize) -> String {
    let total = fleet.processes.len();
    let mut s = String::from(
        "<section id=\"leaks\"><h2>Leaks</h2><p class=\"note\">Each leak (its line and \
         pattern) once, fastest-growing in total first. <i>Processes</i>: how many show it in \
         their latest window; <i>total</i> adds up their growth rates; <i>per process</i> is \
         the median and the range; <i>live</i> adds up their live memory at the leak; the \
         holder is the one most of them name; <i>reported</i> spans the first and the last \
         window, of any process, that reported it.</p>",
    );
    if fleet.leaks.is_empty() {
        s.push_str(
            "<p class=\"empty\">No leak in the latest window of any process.</p></section>\n",
        );
        return s;
    }
    s.push_str(
        "<table class=\"leaks\"><thead><tr><th>Leak</th><th class=\"num\">Processes</th>\
         <th class=\"num\">Total</th><th class=\"num\">Per process</th><th class=\"num\">Live</th>\
         <th>Held by</th><th>Pattern and fix</th><th>Reported</th></tr></thead><tbody>",
    );
    for leak in fleet.leaks.iter().take(limit) {
        s.push_str(&leak_row(leak, total));
    }
    end_table(
        &mut s,
        fleet.leaks.len().saturating_sub(limit),
        "leaks not shown (<code>--limit</code>)",
    );
    s.push_str("</section>\n");
    s
}

fn leak_row(leak: &FleetLeak, total: usize) -> String {
    let spread = &leak.process_bytes_per_second;
    let share = if total == 0 {
        0.0
    } else {
        leak.processes as f64 / total as f64
    };
    let holder = match &leak.holder {
        Some(h) => {
            let others = match leak.other_holders {
                0 => String::new(),
                n => format!("; {n} other {}", if n == 1 { "holder" } else { "holders" }),
            };
            format!(
                "<b class=\"mono\">{}</b><div class=\"muted\">in {} of {}{others}</div>",
                escape(h),
                leak.holder_processes,
                leak.processes
            )
        }
        None => "<span class=\"muted\">not found</span>".to_owned(),
    };
    let fix = if leak.hint.is_empty() {
        String::new()
    } else {
        format!("<div>{}</div>", escape(&leak.hint))
    };
    format!(
        "<tr><td class=\"site\">{}</td><td class=\"num\"><b>{}</b> of {}<div class=\"bar\" \
         title=\"{:.0}% of the processes\"><i style=\"width:{:.1}%\"></i></div></td>\
         <td class=\"num\"><b>{}</b></td><td class=\"num\">{} median<div class=\"muted\">{} to {}\
         </div></td><td class=\"num\">{}<div class=\"muted\">{} blocks</div></td><td>{holder}</td>\
         <td>{}{fix}</td><td>{}<div class=\"muted\">to {}</div></td></tr>",
        named_site_cell(
            &leak.site.filename,
            leak.site.lineno,
            leak.site.function.as_deref()
        ),
        leak.processes,
        total,
        share * 100.0,
        share * 100.0,
        escape(&rate(leak.bytes_per_second)),
        escape(&rate(spread.median)),
        escape(&rate(spread.min)),
        escape(&rate(spread.max)),
        escape(&size(leak.size as f64)),
        count(leak.count),
        badge("v-leak", &leak.pattern),
        escape(&utc(leak.first_seen)),
        escape(&utc(leak.last_seen)),
    )
}

fn processes_section(fleet: &Fleet) -> String {
    let mut s = String::from(
        "<section id=\"processes\"><h2>Processes</h2><p class=\"note\">Every process, at its \
         latest window, in the order they were met. <code>heaptrail html FILE --pid PID</code> \
         charts one of them over time.</p><table><thead><tr><th>Report file</th>\
         <th class=\"num\">PID</th><th class=\"num\">Window</th><th>Time</th><th>Process</th>\
         <th class=\"num\">Leaks</th><th class=\"num\">RSS</th><th class=\"num\">Traced</th>\
         </tr></thead><tbody>",
    );
    for p in fleet.processes.iter().take(MAX_LISTED_PROCESSES) {
        let _ = write!(
            s,
            "<tr><td class=\"mono\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td></tr>",
            escape(&p.id.source),
            p.id.pid,
            count(p.window),
            escape(&utc(p.time)),
            badge(process_class(&p.process_verdict), &p.process_verdict),
            p.leaks,
            escape(&size(p.rss_bytes as f64)),
            escape(&size(p.traced_bytes as f64)),
        );
    }
    end_table(
        &mut s,
        fleet.processes.len().saturating_sub(MAX_LISTED_PROCESSES),
        "processes not listed",
    );
    s.push_str("</section>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::FleetBuilder;
    use crate::html::report::read_report;

    fn window(pid: u32, file: &str, holder: &str) -> String {
        format!(
            r#"{{"schema":"heaptrail.watch/2","time":1700000000,"pid":{pid},"window":3,"rss_bytes":4096,"traced_bytes":2048,"traced_peak_bytes":2048,"process_verdict":"python-growth","sites":[],"leaks":[{{"site":{{"filename":"{file}","lineno":7}},"holder":"{holder}","holder_type":null,"pattern":"unbounded-list","hint":"bound <it>","size":1024,"count":4,"bytes_per_second":512.0,"sites":[]}}]}}"#
        )
    }

    fn page(lines: &[String], limit: usize) -> String {
        let mut builder = FleetBuilder::default();
        let report = read_report(lines.join("\n").as_bytes(), None).unwrap();
        builder.add_report("/logs/<w>.jsonl", "/logs/<w>.jsonl", report);
        builder.skip_file("/logs/<bad>", "not a report".into());
        let opts = PageOptions {
            title: "Fleet <x>",
            subtitle: "3 files",
            limit,
        };
        fleet_page(&builder.finish(), &opts)
    }

    #[test]
    fn leaks_once_with_process_counts_escaped() {
        let html = page(
            &[
                window(1, "/app/<a>.py", "app.<LOG>"),
                window(2, "/app/<a>.py", "app.<LOG>"),
                window(3, "/app/b.py", "b"),
            ],
            10,
        );
        assert!(html.contains("3 files · 3 processes in 1 report file"));
        assert!(html.contains("<b>&lt;a&gt;.py:7</b>"), "the site, escaped");
        assert_eq!(
            html.matches("<tr><td class=\"site\">").count(),
            2,
            "one row per leak"
        );
        assert!(html.contains("<b>2</b> of 3"));
        assert!(html.contains("<b>+1024 B/s</b>"), "the total rate");
        assert!(html.contains("+512 B/s median"));
        assert!(html
            .contains("<b class=\"mono\">app.&lt;LOG&gt;</b><div class=\"muted\">in 2 of 2</div>"));
        assert!(html.contains("<div>bound &lt;it&gt;</div>"));
        assert!(html.contains("/logs/&lt;bad&gt;: not a report; file skipped"));
        assert!(
            html.contains("python-growth</span></td><td class=\"num\">3</td>"),
            "verdict count"
        );
        assert!(html.contains("/logs/&lt;w&gt;.jsonl"));
        for raw in ["<a>", "<LOG>", "<it>", "<bad>", "<w>", "<x>"] {
            assert!(!html.contains(raw), "{raw} unescaped");
        }
    }

    #[test]
    fn a_leaks_function_is_named_when_its_reports_recorded_it() {
        let named = window(1, "/app/a.py", "h").replace(
            r#""lineno":7}"#,
            r#""lineno":7,"function":"Log.<add>"}"#,
        );
        let html = page(&[named, window(2, "/app/b.py", "h")], 10);
        assert!(html.contains("<b>a.py:7</b> <span class=\"fn\">Log.&lt;add&gt;</span>"));
        assert!(html.contains("<b>b.py:7</b> <span class=\"dir\">"), "no name: the line");
    }

    #[test]
    fn limit_and_no_leak() {
        let html = page(&[window(1, "/a.py", "h"), window(2, "/b.py", "h")], 1);
        assert!(html.contains("1 more leaks not shown"));
        let mut builder = FleetBuilder::default();
        builder.add_report(
            "r",
            "r",
            read_report(
                window(1, "/a.py", "h")
                    .replace("\"leaks\":[{", "\"x\":[{")
                    .as_bytes(),
                None,
            )
            .unwrap(),
        );
        let opts = PageOptions {
            title: "t",
            subtitle: "s",
            limit: 5,
        };
        let quiet = fleet_page(&builder.finish(), &opts);
        assert!(quiet.contains("No leak in the latest window of any process."));
    }
}
