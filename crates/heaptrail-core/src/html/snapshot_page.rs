//! The page for a snapshot: totals, the flame graph of live memory by call stack, and the lines
//! that hold the most memory (`statistics("lineno")`), each with the function that runs it.

use std::fmt::Write;

use super::escape::escape;
use super::flame::{flame_graph, snapshot_stacks};
use super::format::{count, size};
use super::page::{named_site_cell, site_inline, stat, Page};
use super::PageOptions;
use crate::export::frame_names::FrameNames;
use crate::group::{statistics, KeyType};
use crate::stacks::stack_totals;
use crate::Snapshot;
use rustc_hash::FxHashMap;

/// The function of each allocating line (the most recent frame of a traceback): recorded in the
/// snapshot, or read from the source for older ones. A line that runs in two functions (a
/// lambda on its function's line) gets the one of its biggest stack.
fn line_functions<'s>(
    snapshot: &'s Snapshot,
    names: &'s FrameNames<'s>,
) -> FxHashMap<(&'s str, u32), &'s str> {
    let mut out = FxHashMap::default();
    for total in stack_totals(snapshot) {
        if let Some(sf) = snapshot.stack(total.traceback).next() {
            let frame = snapshot.frame(sf.frame);
            let key = (&**snapshot.filename(sf.frame), frame.lineno);
            if let (false, Some(q)) = (out.contains_key(&key), names.qualname(sf)) {
                out.insert(key, q);
            }
        }
    }
    out
}

pub fn snapshot_page(snapshot: &Snapshot, opts: &PageOptions) -> String {
    let total = snapshot.total_size();
    let blocks = snapshot.traces.len() as u64;
    let lines = statistics(snapshot, KeyType::Lineno, false).unwrap_or_default();
    let stacks = stack_totals(snapshot).len();
    let names = FrameNames::new(snapshot, true);
    let functions = line_functions(snapshot, &names);
    let function_of = |file: &str, line: u32| functions.get(&(file, line)).copied();

    let mut page = Page::default();
    let mut s = String::from("<section id=\"summary\"><h2>Live memory</h2>");
    if let Some(top) = lines.first() {
        let (file, line) = top
            .frames
            .first()
            .map(|(f, l)| (f.as_ref(), *l))
            .unwrap_or(("<unknown>", 0));
        let in_function = match function_of(file, line) {
            Some(f) => format!(" (in <code>{}</code>)", escape(f)),
            None => String::new(),
        };
        let _ = write!(
            s,
            "<p class=\"headline\">The line holding the most memory is {}{in_function} with \
             <b>{}</b> ({:.1}% of the total) in {} blocks.</p>",
            site_inline(file, line),
            escape(&size(top.size as f64)),
            percent(top.size, total),
            count(top.count)
        );
    }
    s.push_str("<div class=\"stats\">");
    s.push_str(&stat("Live memory", &size(total as f64)));
    s.push_str(&stat("Blocks", &count(blocks)));
    s.push_str(&stat("Lines", &count(lines.len() as u64)));
    s.push_str(&stat("Call stacks", &count(stacks as u64)));
    s.push_str(&stat(
        "Frames kept per stack",
        &snapshot.traceback_limit.to_string(),
    ));
    s.push_str("</div></section>\n");
    page.push(&s);

    let mut s = String::from(
        "<section id=\"flame\"><h2>Live memory by call stack</h2><p class=\"note\">Each box \
         is a line of code and the function running it; its width is the live memory allocated while it was running, \
         callers above callees. Red: your code, yellow: the standard library, blue: installed \
         packages.</p>",
    );
    match flame_graph(
        &snapshot_stacks(snapshot),
        "flame graph of live memory by call stack",
    ) {
        Some(frame) => s.push_str(&frame),
        None => s.push_str("<p class=\"empty\">No live memory in this snapshot.</p>"),
    }
    s.push_str("</section>\n");
    page.push(&s);

    let mut s = String::from(
        "<section id=\"top-sites\"><h2>Top lines</h2><p class=\"note\">Live memory grouped by \
         the line that allocated it (the most recent frame), like \
         <code>snapshot.statistics(\"lineno\")</code>.</p>",
    );
    if lines.is_empty() {
        s.push_str("<p class=\"empty\">No live memory in this snapshot.</p>");
    } else {
        s.push_str(
            "<table class=\"sites\"><thead><tr><th class=\"num\">#</th><th>Line</th>\
             <th class=\"num\">Size</th><th>Share</th><th class=\"num\">Blocks</th>\
             <th class=\"num\">Average</th></tr></thead><tbody>",
        );
        let largest = lines.first().map_or(1, |l| l.size.max(1));
        for (i, st) in lines.iter().take(opts.limit).enumerate() {
            let (file, line) = st
                .frames
                .first()
                .map(|(f, l)| (f.as_ref(), *l))
                .unwrap_or(("<unknown>", 0));
            let _ = write!(
                s,
                "<tr><td class=\"num muted\">{}</td><td class=\"site\">{}</td>\
                 <td class=\"num\">{}</td><td>{:.1}%<div class=\"bar\"><i style=\"width:{:.1}%\">\
                 </i></div></td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                i + 1,
                named_site_cell(file, line, function_of(file, line)),
                escape(&size(st.size as f64)),
                percent(st.size, total),
                st.size as f64 * 100.0 / largest as f64,
                count(st.count),
                escape(&size(st.size as f64 / st.count.max(1) as f64)),
            );
        }
        s.push_str("</tbody></table>");
        if lines.len() > opts.limit {
            let _ = write!(
                s,
                "<p class=\"note\">{} more lines not shown (<code>--limit</code>).</p>",
                count((lines.len() - opts.limit) as u64)
            );
        }
    }
    s.push_str("</section>\n");
    page.push(&s);
    page.finish(opts.title, opts.subtitle)
}

fn percent(part: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        part as f64 * 100.0 / total as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::snapshot_from_raw;

    #[test]
    fn totals_flame_graph_and_top_lines() {
        let s = snapshot_from_raw(
            &[
                (0, 3000, &[("/app/<leak>.py", 8), ("/app/main.py", 1)], 2),
                (0, 1000, &[("/app/<leak>.py", 8), ("/app/main.py", 1)], 2),
                (0, 500, &[("/usr/lib/python3.11/json.py", 20)], 1),
                (0, 100, &[("/app/other.py", 3)], 1),
            ],
            2,
        );
        let opts = PageOptions {
            title: "t",
            subtitle: "s",
            limit: 2,
        };
        let html = snapshot_page(&s, &opts);
        assert!(html
            .contains("The line holding the most memory is <code>/app/&lt;leak&gt;.py:8</code>"));
        assert!(html.contains("<b>4000 B</b> (87.0% of the total) in 2 blocks"));
        assert!(html.contains("<div class=\"k\">Live memory</div><div class=\"v\">4600 B</div>"));
        assert!(html.contains("<iframe class=\"flame\""));
        // Rows: the two largest lines, then a note about the third.
        let rows: Vec<&str> = html.split("<tr><td class=\"num muted\">").skip(1).collect();
        assert_eq!(rows.len(), 2);
        assert!(rows[0].contains("&lt;leak&gt;.py:8") && rows[0].contains("2000 B"));
        assert!(rows[1].contains("json.py:20"));
        assert!(html.contains("1 more lines not shown"));
        assert!(!html.contains("<leak>"));
    }

    #[test]
    fn lines_show_their_recorded_function_escaped() {
        use crate::model::SnapshotBuilder;
        let mut b = SnapshotBuilder::new(2);
        let f = b.intern_filename("/gone/app.py");
        let (l8, l1) = (b.intern_frame(f, 8), b.intern_frame(f, 1));
        let evil = b.intern_function(&"Outer.<locals>.<script>x".into(), 7);
        let module = b.intern_function(&"<module>".into(), 1);
        let tb = b.intern_traceback_with_functions(&[l8, l1], &[evil, module], 2);
        b.push_trace(0, 4000, tb);
        let s = b.finish();
        let opts = PageOptions {
            title: "t",
            subtitle: "s",
            limit: 5,
        };
        let html = snapshot_page(&s, &opts);
        assert!(
            html.contains(
                "The line holding the most memory is <code>/gone/app.py:8</code> \
             (in <code>Outer.&lt;locals&gt;.&lt;script&gt;x</code>) with"
            ),
            "{html}"
        );
        assert!(html.contains(
            "<b>app.py:8</b> <span class=\"fn\">Outer.&lt;locals&gt;.&lt;script&gt;x</span>"
        ));
        assert!(!html.contains("<script>x"));
        // And in the flame graph (escaped twice: XML text inside the srcdoc attribute).
        assert!(html
            .contains("Outer.&amp;lt;locals&amp;gt;.&amp;lt;script&amp;gt;x (app.py:8) in /gone"));
    }

    #[test]
    fn an_empty_snapshot_says_so() {
        let html = snapshot_page(
            &Snapshot::default(),
            &PageOptions {
                title: "t",
                subtitle: "s",
                limit: 10,
            },
        );
        assert_eq!(html.matches("No live memory in this snapshot.").count(), 2);
        assert!(!html.contains("<iframe"));
    }
}
