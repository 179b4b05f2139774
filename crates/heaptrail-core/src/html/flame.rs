//! The flame graph of live memory by call stack: folded stacks drawn by inferno, shown in a
//! sandboxed frame of the page.
//!
//! inferno writes a standalone interactive SVG (click to zoom, search, details on hover) whose
//! script and style assume the SVG is the whole document: its listeners are global, it binds
//! Ctrl-F, its CSS styles every `text`. Put inline, it would take over the page. So the SVG
//! becomes the document of an `<iframe sandbox srcdoc=...>`: its script and style stay inside,
//! and the sandbox (an opaque origin) keeps them away from the page even if something slipped
//! through escaping. Two adjustments: the XML prologue, comments and namespace declarations
//! (which name URLs, and mean nothing to the HTML parser) are dropped, and `history.replaceState`
//! is a no-op, because inferno keeps the zoom state in the page URL, which a frame with an
//! opaque origin may not change (it would log a SecurityError on every click).
//!
//! Frame names go into the SVG as XML text, escaped by inferno's XML writer; the whole document
//! is then escaped once more as the `srcdoc` attribute value.

use inferno::flamegraph::color::{BackgroundColor, MultiPalette};
use inferno::flamegraph::{self, Direction, Options, Palette};
use rustc_hash::FxHashMap;

use super::escape::push_escaped;
use super::format::size;
use super::report::SiteRow;
use crate::export::frame_names::FrameNames;
use crate::stacks::{folded_label, folded_stacks};
use crate::Snapshot;

/// Width of the SVG in its own units; the frame scales it to the page.
const IMAGE_WIDTH: usize = 1200;

/// A frame's name in the graph: `app.py:12 in /srv/proj`. The short name comes first, since
/// names are cut at the right to fit their box; the directory keeps frames of same-named files
/// apart and lets inferno's Python palette colour site-packages (blue), the standard library
/// (yellow) and the rest, the application (red).
pub fn frame_label(filename: &str, lineno: u32) -> String {
    named_frame_label(filename, lineno, None)
}

/// [`frame_label`] with the frame's function in front when it is known:
/// `Cache.put (models.py:42) in /srv/app`. A pseudo-file keeps its name first
/// (`<frozen importlib._bootstrap>:241 _call_with_frames_removed`): inferno's palette tells
/// the standard library's frozen modules by that prefix.
pub fn named_frame_label(filename: &str, lineno: u32, function: Option<&str>) -> String {
    let split = match filename.rfind(['/', '\\']) {
        Some(i) if i + 1 < filename.len() && !filename.starts_with('<') => {
            let dir = if i == 0 {
                &filename[..1]
            } else {
                &filename[..i]
            };
            Some((&filename[i + 1..], dir))
        }
        _ => None,
    };
    match (function, split) {
        (None, Some((name, dir))) => format!("{name}:{lineno} in {dir}"),
        (None, None) => format!("{filename}:{lineno}"),
        (Some(f), Some((name, dir))) => format!("{f} ({name}:{lineno}) in {dir}"),
        (Some(f), None) if filename.starts_with('<') => format!("{filename}:{lineno} {f}"),
        (Some(f), None) => format!("{f} ({filename}:{lineno})"),
    }
}

/// Folded stacks of a snapshot: live bytes per call stack, each frame named with its function
/// when the snapshot recorded it (or, for older snapshots, the source file tells it).
pub fn snapshot_stacks(snapshot: &Snapshot) -> Vec<(String, u64)> {
    let names = FrameNames::new(snapshot, true);
    folded_stacks(snapshot, |f| {
        named_frame_label(
            snapshot.filename(f.frame),
            snapshot.frame(f.frame).lineno,
            names.qualname(f),
        )
    })
    .into_iter()
    .filter(|(_, total)| total.size > 0)
    .map(|(line, total)| (line, total.size))
    .collect()
}

/// Folded stacks of a report window: each site's live bytes under its traceback (the biggest
/// one at the site: the report keeps one per site).
pub fn report_stacks(sites: &[SiteRow]) -> Vec<(String, u64)> {
    let mut merged: FxHashMap<String, u64> = FxHashMap::default();
    for site in sites.iter().filter(|s| s.size > 0) {
        let mut line = String::new();
        let frames: Vec<(&str, u32)> = if site.traceback.is_empty() {
            vec![(&site.filename, site.lineno)]
        } else {
            site.traceback
                .iter()
                .rev()
                .map(|(f, n)| (f.as_str(), *n))
                .collect()
        };
        for (filename, lineno) in frames {
            if !line.is_empty() {
                line.push(';');
            }
            line.push_str(&folded_label(&frame_label(filename, lineno)));
        }
        *merged.entry(line).or_default() += site.size;
    }
    let mut stacks: Vec<_> = merged.into_iter().collect();
    stacks.sort_unstable();
    stacks
}

/// inferno's SVG for `stacks` and its height in pixels, or None when there is no memory.
fn svg(stacks: &[(String, u64)]) -> Option<(String, usize)> {
    let lines: Vec<String> = stacks
        .iter()
        .filter(|(_, size)| *size > 0)
        .map(|(stack, size)| format!("{stack} {size}"))
        .collect();
    if lines.is_empty() {
        return None;
    }
    let mut opt = Options::default();
    opt.colors = Palette::Multi(MultiPalette::Python);
    opt.bgcolors = Some("#ffffff".parse::<BackgroundColor>().ok()?);
    // Same colours for the same names on every run: reports can be compared side by side.
    opt.deterministic = true;
    opt.direction = Direction::Inverted;
    opt.title = String::new();
    opt.count_name = "bytes".into();
    opt.name_type = "Line:".into();
    opt.font_type = "monospace".into();
    // A fixed width, scaled to the frame by the viewBox. (In "fluid" mode inferno's script
    // reads the width the SVG has as a standalone document; inside an HTML document it reads
    // 0 and logs an error.)
    opt.image_width = Some(IMAGE_WIDTH);
    let mut out = Vec::new();
    flamegraph::from_lines(&mut opt, lines.iter().map(String::as_str), &mut out).ok()?;
    let text = String::from_utf8(out).ok()?;
    let total: u64 = stacks.iter().map(|(_, size)| size).sum();
    let (svg, height) = tidy(&text)?;
    Some((
        name_root(svg, &format!("all: {}", size(total as f64))),
        height,
    ))
}

/// inferno leaves the root box without text (its name is empty; only its tooltip says "all"):
/// write `label` in it. The root is the group whose tooltip starts with "all (" and whose box
/// spans the whole width; a frame name always holds a `:line`, so none is taken for it.
fn name_root(mut svg: String, label: &str) -> String {
    let mut from = 0;
    while let Some(i) = svg[from..].find("<g><title>all (").map(|i| i + from) {
        let end = match svg[i..].find("</g>") {
            Some(e) => i + e,
            None => break,
        };
        let group = &svg[i..end];
        if group.contains("x=\"0.0000%\"") && group.contains("width=\"100.0000%\"") {
            if let Some(t) = group.find("></text>") {
                svg.insert_str(i + t + 1, &super::escape::escape(label));
            }
            break;
        }
        from = end;
    }
    svg
}

/// Drops what only matters to a standalone SVG file: everything before `<svg` (XML declaration,
/// DOCTYPE), comments and namespace declarations. Returns the SVG and its height. Text from the
/// input cannot contain `<`, so `<!--` and `-->` only occur as real comments.
fn tidy(svg: &str) -> Option<(String, usize)> {
    let mut rest = &svg[svg.find("<svg")?..];
    let mut out = String::with_capacity(rest.len());
    while let Some(start) = rest.find("<!--") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("-->")? + start + 3;
        rest = &rest[end..];
    }
    out.push_str(rest);
    for ns in [
        r#" xmlns="http://www.w3.org/2000/svg""#,
        r#" xmlns:xlink="http://www.w3.org/1999/xlink""#,
        r#" xmlns:fg="http://github.com/jonhoo/inferno""#,
    ] {
        out = out.replacen(ns, "", 1);
    }
    let root_end = out.find('>')?;
    let root = &out[..root_end];
    let h = root.find(" height=\"")? + " height=\"".len();
    let height = root[h..].split('"').next()?.parse::<f64>().ok()?.ceil() as usize;
    Some((out, height))
}

/// The flame graph of `stacks` as an `<iframe>` element, or None when there is no memory.
pub fn flame_graph(stacks: &[(String, u64)], label: &str) -> Option<String> {
    let (svg, height) = svg(stacks)?;
    let doc = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\">\
         <style>html,body{{margin:0;background:#fff;overflow:hidden}}\
         svg{{display:block;width:100%;height:auto}}</style>\
         <script>history.replaceState=function(){{}};</script></head><body>{svg}</body></html>"
    );
    let mut html = String::with_capacity(doc.len() + doc.len() / 4 + 200);
    html.push_str("<iframe class=\"flame\" sandbox=\"allow-scripts allow-modals\" title=\"");
    push_escaped(&mut html, label);
    // The frame keeps the SVG's proportions at any width.
    html.push_str(&format!(
        "\" style=\"aspect-ratio:{IMAGE_WIDTH}/{height}\" srcdoc=\""
    ));
    push_escaped(&mut html, &doc);
    html.push_str("\"></iframe>");
    Some(html)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::snapshot_from_raw;

    #[test]
    fn labels_put_the_file_name_first() {
        assert_eq!(
            frame_label("/srv/app/models.py", 42),
            "models.py:42 in /srv/app"
        );
        assert_eq!(frame_label("/x.py", 1), "x.py:1 in /");
        assert_eq!(frame_label("C:\\app\\m.py", 3), "m.py:3 in C:\\app");
        assert_eq!(frame_label("<unknown>", 0), "<unknown>:0");
        assert_eq!(frame_label("dir/", 5), "dir/:5");
    }

    #[test]
    fn named_labels_put_the_function_first_except_for_pseudo_files() {
        let n = |f: &str, l: u32, q: &str| named_frame_label(f, l, Some(q));
        assert_eq!(
            n("/srv/app/models.py", 42, "Cache.put"),
            "Cache.put (models.py:42) in /srv/app"
        );
        assert_eq!(n("main.py", 3, "<module>"), "<module> (main.py:3)");
        // inferno colours the standard library's frozen modules by this prefix.
        assert_eq!(
            n(
                "<frozen importlib._bootstrap>",
                241,
                "_call_with_frames_removed"
            ),
            "<frozen importlib._bootstrap>:241 _call_with_frames_removed"
        );
        assert_eq!(named_frame_label("/x.py", 1, None), frame_label("/x.py", 1));
    }

    #[test]
    fn snapshot_stacks_name_recorded_functions() {
        use crate::model::{SnapshotBuilder, NO_FUNCTION};
        let mut b = SnapshotBuilder::new(2);
        let f = b.intern_filename("/gone/a.py");
        let (l2, l9) = (b.intern_frame(f, 2), b.intern_frame(f, 9));
        let g = b.intern_function(&"<genexpr>".into(), 2);
        let tb = b.intern_traceback_with_functions(&[l2, l9], &[g, NO_FUNCTION], 2);
        b.push_trace(0, 10, tb);
        let s = b.finish();
        assert_eq!(
            snapshot_stacks(&s),
            [("a.py:9 in /gone;<genexpr> (a.py:2) in /gone".to_owned(), 10)]
        );
    }

    #[test]
    fn snapshot_stacks_run_from_the_root() {
        let s = snapshot_from_raw(
            &[
                (0, 10, &[("/a/x.py", 2), ("/a/main.py", 1)], 2),
                (0, 0, &[("/a/y.py", 2)], 1),
            ],
            2,
        );
        assert_eq!(
            snapshot_stacks(&s),
            [("main.py:1 in /a;x.py:2 in /a".to_owned(), 10)]
        );
    }

    fn row(file: &str, line: u32, tb: &[(&str, u32)], size: u64) -> SiteRow {
        SiteRow {
            filename: file.into(),
            lineno: line,
            traceback: tb.iter().map(|&(f, n)| (f.to_owned(), n)).collect(),
            size,
            size_diff: 0,
            count: 1,
            count_diff: 0,
            bytes_per_second: 0.0,
            verdict: "leak".into(),
            confidence: 1.0,
            windows: 1,
            growth_bytes: 0,
            ..SiteRow::default()
        }
    }

    #[test]
    fn report_stacks_merge_equal_tracebacks() {
        let sites = [
            row("/a/x.py", 2, &[("/a/x.py", 2), ("/a/m;n.py", 1)], 10),
            row("/a/x.py", 2, &[("/a/x.py", 2), ("/a/m;n.py", 1)], 5),
            row("/a/z.py", 9, &[], 7),
            row("/a/q.py", 9, &[], 0),
        ];
        assert_eq!(
            report_stacks(&sites),
            [
                ("m:n.py:1 in /a;x.py:2 in /a".to_owned(), 15),
                ("z.py:9 in /a".to_owned(), 7)
            ]
        );
    }

    #[test]
    fn the_graph_is_a_sandboxed_frame_with_escaped_names() {
        let evil = "<script>alert(\"x\")</script>&'.py";
        let html = flame_graph(&[(folded_label(&frame_label(evil, 1)), 100)], "t<").unwrap();
        assert!(html.starts_with("<iframe class=\"flame\" sandbox=\"allow-scripts allow-modals\""));
        assert!(html.contains("title=\"t&lt;\""));
        // One quoted attribute value: no raw quote or markup from the name can end it.
        let srcdoc = &html[html.find("srcdoc=\"").unwrap() + 8..html.len() - "\"></iframe>".len()];
        assert!(!srcdoc.contains('"') && !srcdoc.contains('<') && !srcdoc.contains('>'));
        // Inside, the name is XML-escaped text, escaped once more for the attribute.
        assert!(srcdoc.contains("&amp;lt;script&amp;gt;alert("), "{srcdoc}");
        assert!(!srcdoc.contains("&lt;script&gt;alert"));
        // No URL outside inferno's script (whose comments and messages name its home page):
        // the XML prologue, comments and namespace declarations are gone.
        let script = html.find("&lt;script type=&quot;text/ecmascript").unwrap();
        let script_end = html.find("&lt;/script&gt;&lt;rect").unwrap();
        let outside = format!("{}{}", &html[..script], &html[script_end..]);
        assert!(!outside.contains("http:") && !outside.contains("https:"));
        assert!(!outside.contains("xmlns") && !outside.contains("DOCTYPE svg"));
        assert!(!html.contains("&lt;!--"));
        assert!(html.contains("&lt;svg"));
        assert!(html.contains("onload=&quot;init(evt)&quot;"));
        assert!(html.contains("history.replaceState=function(){}"));
        assert!(html.contains("&gt;all: 100 B&lt;/text&gt;"), "{html}");
        let h: usize = html
            .split("aspect-ratio:1200/")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!((40..200).contains(&h), "{h}");
    }

    #[test]
    fn no_memory_no_graph() {
        assert!(flame_graph(&[], "x").is_none());
        assert!(flame_graph(&[("a".into(), 0)], "x").is_none());
    }
}
