//! The page for a watcher report: per process run, the suspect sites' size over time with their
//! verdicts, RSS against traced memory, the sites of the last window, and a flame graph built
//! from the last window's tracebacks.
//!
//! A report may hold several runs (see [`super::report`]). With more than one, the page starts
//! with a table of all of them; the [`MAX_DETAILED_RUNS`] most severe (leaks first, then
//! suspects, then a process verdict other than `ok`, then the longest) get a section each.

use std::fmt::Write;

use super::chart::{line_chart, Marker, Point, Series, CARD, WIDE};
use super::escape::escape;
use super::flame::{flame_graph, report_stacks};
use super::format::{change, count, elapsed, rate, size, utc};
use super::page::{
    badge, end_table, named_site_cell, process_class, process_meaning, stat, traceback_details, verdict_class,
    verdict_severity, warnings_box, Page,
};
use super::report::{Report, Run, SiteRow};
use crate::trend::Verdict;
use super::PageOptions;

/// Runs shown in detail; the others are only listed.
pub const MAX_DETAILED_RUNS: usize = 8;
/// Charts of sites per run.
pub const MAX_SITE_CHARTS: usize = 12;
/// Sites charted for context when a run has no leak, suspect or fixed site.
const CONTEXT_CHARTS: usize = 3;
/// Runs listed in the table of runs.
const MAX_LISTED_RUNS: usize = 200;

/// Most severe first.
fn run_rank(run: &Run) -> (u8, bool, usize) {
    let sites = run
        .last_sites
        .iter()
        .map(|s| verdict_severity(&s.verdict))
        .max()
        .unwrap_or(0);
    let process = run
        .windows
        .last()
        .is_some_and(|w| w.process_verdict != "ok");
    (sites, process, run.windows.len())
}

fn verdict_counts(run: &Run) -> (usize, usize) {
    let leaks = run
        .last_sites
        .iter()
        .filter(|s| s.verdict == "leak")
        .count();
    let suspects = run
        .last_sites
        .iter()
        .filter(|s| s.verdict == "suspect")
        .count();
    (leaks, suspects)
}

fn duration(run: &Run) -> f64 {
    match (run.windows.first(), run.windows.last()) {
        (Some(a), Some(b)) => b.time - a.time,
        _ => 0.0,
    }
}

pub fn report_page(report: &Report, opts: &PageOptions) -> String {
    let windows: usize = report.runs.iter().map(|r| r.windows.len()).sum();
    let subtitle = format!(
        "{} · {} {} from {} {}",
        opts.subtitle,
        count(windows as u64),
        if windows == 1 { "window" } else { "windows" },
        report.runs.len(),
        if report.runs.len() == 1 {
            "process run"
        } else {
            "process runs"
        }
    );
    let mut page = Page::default();
    page.push(&warnings_box(&report.warnings));

    let mut order: Vec<usize> = (0..report.runs.len()).collect();
    order.sort_by(|&a, &b| {
        run_rank(&report.runs[b])
            .cmp(&run_rank(&report.runs[a]))
            .then(a.cmp(&b))
    });
    order.truncate(MAX_DETAILED_RUNS);

    if report.runs.len() > 1 {
        page.push(&runs_table(report, &order));
    }
    for &i in &order {
        page.push(&run_section(&report.runs[i], i, opts));
    }
    page.finish(opts.title, &subtitle)
}

fn runs_table(report: &Report, detailed: &[usize]) -> String {
    let mut s = String::from(
        "<section id=\"runs\"><h2>Processes</h2><p class=\"note\">Every process run that wrote \
         to this report, in the order they started. <code>--pid</code> shows one process \
         only.</p><table><thead><tr><th class=\"num\">PID</th><th>Started</th>\
         <th class=\"num\">Windows</th><th class=\"num\">Duration</th><th>Process</th>\
         <th class=\"num\">Leaks</th><th class=\"num\">Suspects</th><th></th></tr></thead><tbody>",
    );
    for (i, run) in report.runs.iter().enumerate().take(MAX_LISTED_RUNS) {
        let (leaks, suspects) = verdict_counts(run);
        let last = run.windows.last();
        let verdict = last.map_or("", |w| w.process_verdict.as_str());
        let link = if detailed.contains(&i) {
            format!("<a href=\"#run-{}\">details</a>", i + 1)
        } else {
            "<span class=\"muted\">not shown</span>".into()
        };
        let _ = write!(
            s,
            "<tr><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td>{link}</td></tr>",
            run.pid,
            escape(&run.windows.first().map_or("?".into(), |w| utc(w.time))),
            count(run.windows.len() as u64),
            escape(&elapsed(duration(run))),
            badge(process_class(verdict), verdict),
            leaks,
            suspects,
        );
    }
    end_table(
        &mut s,
        report.runs.len().saturating_sub(MAX_LISTED_RUNS),
        "runs not listed",
    );
    s.push_str("</section>\n");
    s
}

fn run_section(run: &Run, index: usize, opts: &PageOptions) -> String {
    let mut s = String::new();
    let Some(last) = run.windows.last() else {
        return s;
    };
    let first = &run.windows[0];
    let (leaks, suspects) = verdict_counts(run);
    let _ = write!(
        s,
        "<section class=\"run\" id=\"run-{}\"><h2>Process {} {}</h2>",
        index + 1,
        run.pid,
        badge(process_class(&last.process_verdict), &last.process_verdict)
    );
    let meaning = process_meaning(&last.process_verdict);
    let _ = write!(
        s,
        "<p class=\"note\">{} windows{} from {} to {} ({}); the process verdict is that \
         of the last window{}.</p>",
        count(run.windows.len() as u64),
        run.interval
            .map(|i| format!(", one every {}", elapsed(i)))
            .unwrap_or_default(),
        escape(&utc(first.time)),
        escape(&utc(last.time)),
        escape(&elapsed(duration(run))),
        if meaning.is_empty() {
            String::new()
        } else {
            format!(": {meaning}")
        }
    );
    let headline = match (leaks, suspects) {
        (0, 0) => "No leaking or suspect site in the last window.".to_owned(),
        (l, su) => {
            let mut parts = Vec::new();
            if l > 0 {
                parts.push(format!(
                    "<b class=\"v-leak\">{l} leaking {}</b>",
                    if l == 1 { "site" } else { "sites" }
                ));
            }
            if su > 0 {
                parts.push(format!(
                    "<b class=\"v-suspect\">{su} suspect {}</b>",
                    if su == 1 { "site" } else { "sites" }
                ));
            }
            format!("{} in the last window.", parts.join(" and "))
        }
    };
    let _ = write!(s, "<p class=\"headline\">{headline}</p>");
    let peak = run
        .windows
        .iter()
        .map(|w| w.traced_peak_bytes)
        .max()
        .unwrap_or(0);
    s.push_str("<div class=\"stats\">");
    s.push_str(&stat("RSS", &size(last.rss_bytes as f64)));
    s.push_str(&stat("Traced memory", &size(last.traced_bytes as f64)));
    s.push_str(&stat("Traced peak", &size(peak as f64)));
    s.push_str(&stat(
        "RSS change",
        &change(last.rss_bytes as f64 - first.rss_bytes as f64),
    ));
    s.push_str(&stat(
        "Traced change",
        &change(last.traced_bytes as f64 - first.traced_bytes as f64),
    ));
    s.push_str(&stat("Sites reported", &count(run.last_sites.len() as u64)));
    s.push_str("</div>");

    s.push_str(&site_charts(run));
    s.push_str(&process_chart(run));
    s.push_str(&sites_table(run, opts.limit));

    let _ = write!(
        s,
        "<h3>Live memory by call stack, window {}</h3><p class=\"note\">Built from the last \
         window's reported sites, each under its biggest traceback: memory of sites outside the \
         report (not growing and not among the largest) is not included. Red: your code, \
         yellow: the standard library, blue: installed packages.</p>",
        last.window
    );
    match flame_graph(
        &report_stacks(&run.last_sites),
        &format!(
            "flame graph of process {} at window {}",
            run.pid, last.window
        ),
    ) {
        Some(frame) => s.push_str(&frame),
        None => s.push_str("<p class=\"empty\">No live memory at the reported sites.</p>"),
    }
    s.push_str("</section>\n");
    s
}

/// Seconds since the run's first window.
fn x_of(run: &Run, window_index: u32) -> f64 {
    run.windows[window_index as usize].time - run.windows[0].time
}

/// The sites to chart: leaks, suspects and fixed ones (most severe first, as in the report),
/// or, when there is none, the largest sites for context.
fn charted_sites(run: &Run) -> (Vec<&SiteRow>, bool) {
    let severe: Vec<&SiteRow> = run
        .last_sites
        .iter()
        .filter(|s| Verdict::from_name(&s.verdict).is_some_and(Verdict::always_reported))
        .take(MAX_SITE_CHARTS)
        .collect();
    if !severe.is_empty() {
        return (severe, true);
    }
    let mut largest: Vec<&SiteRow> = run.last_sites.iter().collect();
    largest.sort_by_key(|s| std::cmp::Reverse(s.size));
    largest.truncate(CONTEXT_CHARTS);
    (largest, false)
}

fn site_charts(run: &Run) -> String {
    let (sites, severe) = charted_sites(run);
    let mut s = String::new();
    if severe {
        s.push_str(
            "<h3>Leaking and suspect sites</h3><p class=\"note\">Live memory allocated at each \
             site (the innermost line in your code) over time; the dashed line marks when the \
             current verdict was first given.</p>",
        );
    } else if !sites.is_empty() {
        s.push_str(
            "<h3>Largest sites</h3><p class=\"note\">No site is leaking or suspect; the largest \
             ones over time, for reference.</p>",
        );
    } else {
        return s;
    }
    s.push_str("<div class=\"cards\">");
    for site in sites {
        let class = verdict_class(&site.verdict);
        let label = format!("{}:{}", site.filename, site.lineno);
        let mut segments: Vec<Vec<Point>> = Vec::new();
        let mut markers = Vec::new();
        if let Some(id) = run.site_id(&site.filename, site.lineno) {
            let series = &run.series[id as usize];
            let mut prev: Option<u32> = None;
            for p in series {
                let point = Point {
                    x: x_of(run, p.window_index),
                    y: p.size as f64,
                    window: run.windows[p.window_index as usize].window,
                };
                match (prev, segments.last_mut()) {
                    (Some(w), Some(seg)) if p.window_index == w + 1 => seg.push(point),
                    _ => segments.push(vec![point]),
                }
                prev = Some(p.window_index);
            }
            // Where the current verdict started: the first point of the last streak of it.
            if severe {
                let current = series
                    .iter()
                    .rev()
                    .take_while(|p| run.verdict_names[p.verdict as usize] == site.verdict)
                    .last();
                if let Some(p) = current {
                    markers.push(Marker {
                        x: x_of(run, p.window_index),
                        label: format!(
                            "{} since window {}",
                            site.verdict, run.windows[p.window_index as usize].window
                        ),
                        class: class.into(),
                    });
                }
            }
        }
        let chart = line_chart(
            &[Series {
                label: label.clone(),
                class: class.into(),
                segments,
                dashed: false,
                area: true,
            }],
            &markers,
            CARD,
            &format!("live memory at {label} over time"),
        );
        let _ = write!(
            s,
            "<div class=\"card {class}\"><div class=\"head\">{} {}</div>\
             <div class=\"facts\"><b>{}</b> live in {} blocks · growing <b>{}</b> · \
             confidence {:.2} · seen in {} windows</div>",
            badge(class, &site.verdict),
            named_site_cell(&site.filename, site.lineno, site.function.as_deref()),
            escape(&size(site.size as f64)),
            count(site.count),
            escape(&rate(site.bytes_per_second)),
            site.confidence,
            site.windows
        );
        if let Some(held) = site.holder_text() {
            let pattern = match site.pattern.as_deref() {
                Some(p) if p != "unknown" => format!(" — {}", escape(p)),
                _ => String::new(),
            };
            let _ = write!(
                s,
                "<div class=\"held\">Held by <b>{}</b>{pattern}</div>",
                escape(held)
            );
        }
        s.push_str(&chart);
        s.push_str(&traceback_details(&site.traceback));
        s.push_str("</div>");
    }
    s.push_str("</div>");
    s
}

fn process_chart(run: &Run) -> String {
    let series_of = |f: &dyn Fn(&super::report::Window) -> u64| {
        vec![run
            .windows
            .iter()
            .enumerate()
            .map(|(i, w)| Point {
                x: x_of(run, i as u32),
                y: f(w) as f64,
                window: w.window,
            })
            .collect::<Vec<_>>()]
    };
    let series = [
        Series {
            label: "RSS".into(),
            class: "s-rss".into(),
            segments: series_of(&|w| w.rss_bytes),
            dashed: false,
            area: false,
        },
        Series {
            label: "traced peak".into(),
            class: "s-peak".into(),
            segments: series_of(&|w| w.traced_peak_bytes),
            dashed: true,
            area: false,
        },
        Series {
            label: "traced".into(),
            class: "s-traced".into(),
            segments: series_of(&|w| w.traced_bytes),
            dashed: false,
            area: true,
        },
    ];
    let mut s = String::from(
        "<h3>Memory of the process</h3><p class=\"note\">RSS is the memory the operating system \
         gives the process; traced memory is what Python's allocators hold, as heaptrail sees \
         it; the traced peak is the highest traced memory within each window. RSS climbing \
         while traced memory stays flat points at memory taken outside Python (C \
         extensions).</p><div class=\"legend\"><span class=\"s-rss\">RSS</span>\
         <span class=\"s-traced\">traced</span><span class=\"s-peak dashed\">traced peak</span>\
         </div>",
    );
    s.push_str(&line_chart(
        &series,
        &[],
        WIDE,
        &format!("RSS and traced memory of process {} over time", run.pid),
    ));
    s
}

fn sites_table(run: &Run, limit: usize) -> String {
    let Some(last) = run.windows.last() else {
        return String::new();
    };
    let mut s = format!(
        "<h3>Sites in the last window (window {})</h3><p class=\"note\">Every leaking, suspect \
         and fixed site, and the largest others, most severe first. <i>Change</i> is since the \
         previous window; <i>rate</i> is the trend over the recent windows.</p>",
        last.window
    );
    if run.last_sites.is_empty() {
        s.push_str("<p class=\"empty\">No site reported.</p>");
        return s;
    }
    s.push_str(
        "<table class=\"sites\"><thead><tr><th>Verdict</th><th>Site</th><th class=\"num\">Live</th>\
         <th class=\"num\">Blocks</th><th class=\"num\">Change</th><th class=\"num\">Rate</th>\
         <th class=\"num\">Confidence</th><th class=\"num\">Windows</th><th>Held by</th>\
         </tr></thead><tbody>",
    );
    for site in run.last_sites.iter().take(limit) {
        let _ = write!(
            s,
            "<tr><td>{}</td><td class=\"site\">{}{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{:.2}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            badge(verdict_class(&site.verdict), &site.verdict),
            named_site_cell(&site.filename, site.lineno, site.function.as_deref()),
            traceback_details(&site.traceback),
            escape(&size(site.size as f64)),
            count(site.count),
            escape(&change(site.size_diff as f64)),
            escape(&rate(site.bytes_per_second)),
            site.confidence,
            site.windows,
            site.holder_text().map(escape).unwrap_or_default(),
        );
    }
    end_table(
        &mut s,
        run.last_sites.len().saturating_sub(limit),
        "sites not shown (<code>--limit</code>)",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::html::report::read_report;

    fn window(pid: u32, n: u64, rss: u64, sites: &[(&str, u32, u64, &str)]) -> String {
        let rows: Vec<String> = sites
            .iter()
            .map(|(f, l, size, v)| {
                let held = if *v == "leak" {
                    r#","held_by":"<b>cache</b> (dict)""#
                } else {
                    ""
                };
                format!(
                    r#"{{"filename":"{f}","lineno":{l},"traceback":[["{f}",{l}],["/app/main.py",1]],"size":{size},"size_diff":100,"count":3,"count_diff":1,"bytes_per_second":2048.0,"verdict":"{v}","confidence":0.95,"windows":{n},"growth_bytes":1000{held}}}"#
                )
            })
            .collect();
        format!(
            r#"{{"schema":"heaptrail.watch/1","time":{},"pid":{pid},"window":{n},"interval":0.5,"rss_bytes":{rss},"traced_bytes":{},"traced_peak_bytes":{},"process_verdict":"python-growth","process_confidence":0.9,"sites":[{}]}}"#,
            1700000000.0 + n as f64 * 0.5,
            rss / 2,
            rss / 2 + 100,
            rows.join(",")
        )
    }

    fn opts() -> PageOptions<'static> {
        PageOptions {
            title: "T",
            subtitle: "watcher report r.jsonl",
            limit: 10,
        }
    }

    #[test]
    fn leak_chart_with_verdict_marker_table_and_flame_graph() {
        let mut lines = Vec::new();
        for n in 1..=12u64 {
            let verdict = if n >= 9 { "leak" } else { "warming-up" };
            lines.push(window(
                42,
                n,
                1_000_000 + n * 10_000,
                &[
                    ("/app/<x>.py", 8, n * 4096, verdict),
                    ("/app/flat.py", 3, 5000, "plateau"),
                ],
            ));
        }
        let report = read_report(lines.join("\n").as_bytes(), None).unwrap();
        let html = report_page(&report, &opts());
        assert!(html.contains("watcher report r.jsonl · 12 windows from 1 process run"));
        assert!(html.contains("<h2>Process 42 <span class=\"badge p-python-growth\">"));
        assert!(html.contains("<b class=\"v-leak\">1 leaking site</b> in the last window."));
        // One chart card for the leak, with its verdict, rate, holder and marker.
        assert_eq!(html.matches("<div class=\"card v-leak\">").count(), 1);
        assert!(html.contains("live memory at /app/&lt;x&gt;.py:8 over time"));
        assert!(html.contains("leak since window 9"));
        assert!(html.contains("growing <b>+2048 B/s</b>"));
        assert!(html.contains("Held by <b>&lt;b&gt;cache&lt;/b&gt; (dict)</b>"));
        assert!(!html.contains("<b>cache</b>"));
        // Process chart, table rows (leak first), flame graph.
        assert!(html.contains("RSS and traced memory of process 42 over time"));
        let rows: Vec<&str> = html.split("<tr><td><span class=\"badge").skip(1).collect();
        assert_eq!(rows.len(), 2);
        assert!(rows[0].starts_with(" v-leak\">leak</span>"));
        assert!(rows[0].contains("48.0 KiB"));
        assert!(rows[1].contains("flat.py:3"));
        assert!(html.contains("<iframe class=\"flame\""));
        assert!(html.contains("Live memory by call stack, window 12"));
        assert!(!html.contains("<x>"));
    }

    #[test]
    fn the_function_of_a_site_is_named_beside_its_line_when_recorded() {
        let lines: Vec<String> = (1..=3u64)
            .map(|n| {
                let sites = [
                    ("/app/cache.py", 42, n * 4096, "leak"),
                    ("/app/old.py", 3, 10, "plateau"),
                ];
                window(7, n, 1000, &sites)
                    .replace("heaptrail.watch/1", "heaptrail.watch/2")
                    .replace(
                        r#""lineno":42,"traceback""#,
                        r#""lineno":42,"function":"Cache.<remember>","traceback""#,
                    )
            })
            .collect();
        let report = read_report(lines.join("\n").as_bytes(), None).unwrap();
        let html = report_page(&report, &opts());
        let named = "<b>cache.py:42</b> <span class=\"fn\">Cache.&lt;remember&gt;</span>";
        // In the leak's card and in the table of sites.
        assert_eq!(html.matches(named).count(), 2, "{html}");
        // A row without the field: its line alone.
        assert!(html.contains("<b>old.py:3</b> <span class=\"dir\">"));
    }

    #[test]
    fn several_runs_get_a_table_and_the_severe_one_comes_first() {
        let text = [
            window(1, 1, 100, &[("/a.py", 1, 10, "plateau")]),
            window(2, 1, 100, &[("/b.py", 1, 10, "suspect")]),
            window(1, 2, 100, &[("/a.py", 1, 10, "plateau")]),
        ]
        .join("\n");
        let report = read_report(text.as_bytes(), None).unwrap();
        let html = report_page(&report, &opts());
        assert!(html.contains("<h2>Processes</h2>"));
        let p2 = html.find("id=\"run-2\"").unwrap();
        let p1 = html.find("id=\"run-1\"").unwrap();
        assert!(p2 < p1, "the run with a suspect comes first");
        assert!(html.contains("<a href=\"#run-1\">details</a>"));
        // Run 1 has no suspect: its largest site is charted for reference.
        assert!(html.contains("<h3>Largest sites</h3>"));
    }

    #[test]
    fn warnings_are_shown_escaped() {
        let text = format!("{}\n<bad line>\n", window(1, 1, 100, &[]));
        let report = read_report(text.as_bytes(), None).unwrap();
        let html = report_page(&report, &opts());
        assert!(html.contains("<div class=\"warn\">"));
        assert!(html.contains("line 2: not JSON"));
        assert!(!html.contains("<bad line>"));
        assert!(html.contains("No live memory at the reported sites."));
    }
}
