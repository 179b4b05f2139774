//! The page around the content: document head (style sheet, content security policy), header,
//! footer, and the small pieces both kinds of page use (verdict badges, site cells, figures).
//!
//! The page is one file with nothing to fetch: no fonts, scripts, images or style sheets from
//! elsewhere. Its content security policy (`default-src 'none'`) makes the browser refuse any
//! fetch, should one ever slip in. Inline scripts are allowed only for the flame graph's frame
//! (which inherits the policy); the page itself has none.

use crate::trend::Verdict;
use std::fmt::Write;

use super::escape::{escape, push_escaped};

const CSS: &str = r#"
:root{--fg:#1f2328;--muted:#656d76;--line:#d8dee4;--bg:#f6f8fa;--card:#fff;--accent:#0969da;
--leak:#c62828;--leak-bg:#fdecea;--suspect:#d35400;--suspect-bg:#fff1e0;--fixed:#2e7d32;
--fixed-bg:#e7f5e9;--warm:#1565c0;--warm-bg:#e4f0fb;--plateau:#57606a;--plateau-bg:#eef1f4;
--native:#6a1b9a;--native-bg:#f3e5f5}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,
"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
.wrap{max-width:1240px;margin:0 auto;padding:0 24px}
header.top{background:#24292f;color:#f6f8fa;padding:18px 0 20px;margin-bottom:22px}
header.top .brand{font-size:12px;letter-spacing:.12em;text-transform:uppercase;color:#9ea7b3}
header.top h1{margin:2px 0 4px;font-size:24px;font-weight:600;word-break:break-word}
header.top .sub{margin:0;color:#c9d1d9;font-size:13px;word-break:break-all}
h2{font-size:19px;margin:0 0 4px;display:flex;align-items:center;gap:10px;flex-wrap:wrap}
h3{font-size:15px;margin:26px 0 8px}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:18px 20px;
margin:0 0 22px}
p.note,.muted{color:var(--muted)}
p.note{margin:2px 0 10px;font-size:13px}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace;
font-size:12.5px}
.headline{font-size:15px;margin:6px 0 14px}
.stats{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px;
margin:12px 0 6px}
.stat{background:var(--bg);border:1px solid var(--line);border-radius:8px;padding:8px 12px}
.stat .k{font-size:12px;color:var(--muted)}
.stat .v{font-size:19px;font-weight:600;white-space:nowrap}
.badge{display:inline-block;padding:1px 9px;border-radius:999px;font-size:12px;font-weight:600;
white-space:nowrap;border:1px solid currentColor;vertical-align:middle}
.v-leak{color:var(--leak)}.badge.v-leak{background:var(--leak-bg)}
.v-suspect{color:var(--suspect)}.badge.v-suspect{background:var(--suspect-bg)}
.v-fixed,.p-ok{color:var(--fixed)}.badge.v-fixed,.badge.p-ok{background:var(--fixed-bg)}
.v-warming-up{color:var(--warm)}.badge.v-warming-up{background:var(--warm-bg)}
.v-plateau,.v-other{color:var(--plateau)}.badge.v-plateau,.badge.v-other{background:var(--plateau-bg)}
.p-python-growth{color:var(--leak)}.badge.p-python-growth{background:var(--leak-bg)}
.p-native-growth{color:var(--native)}.badge.p-native-growth{background:var(--native-bg)}
.p-transient-peaks,.p-allocator-retention{color:var(--suspect)}
.badge.p-transient-peaks,.badge.p-allocator-retention{background:var(--suspect-bg)}
table{border-collapse:collapse;width:100%;font-size:13px}
th{text-align:left;font-weight:600;color:var(--muted);font-size:12px;border-bottom:1px solid
var(--line);padding:6px 8px;white-space:nowrap}
td{border-bottom:1px solid #eaeef2;padding:6px 8px;vertical-align:top}
td.num,th.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
tbody tr:hover{background:#f6f8fa}
.site b{font-weight:600}
.site .dir{display:block;color:var(--muted);font-size:11.5px;word-break:break-all}
.bar{background:#eaeef2;border-radius:3px;height:8px;min-width:90px;margin-top:5px}
.bar i{display:block;height:8px;border-radius:3px;background:var(--accent)}
details{margin-top:4px}
summary{cursor:pointer;color:var(--accent);font-size:12px}
ol.tb{margin:4px 0 0;padding-left:22px;font-size:12px;color:var(--muted)}
ol.tb li{word-break:break-all}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:14px}
.card{border:1px solid var(--line);border-left:4px solid currentColor;border-radius:8px;
padding:10px 14px 8px;background:var(--card)}
.card .head{display:flex;gap:8px;align-items:baseline;flex-wrap:wrap;color:var(--fg)}
.card .head b{font-size:14px}.card .head .dir{color:var(--muted);font-size:11.5px;
word-break:break-all}
.card .facts{font-size:12.5px;color:var(--fg);margin:3px 0 2px}
.card .held{font-size:12.5px;color:var(--fg)}
.legend{display:flex;gap:16px;font-size:12.5px;margin:2px 0 0;flex-wrap:wrap}
.legend span::before{content:"";display:inline-block;width:14px;height:3px;margin-right:6px;
vertical-align:middle;background:currentColor}
.legend span.dashed::before{background:repeating-linear-gradient(90deg,currentColor 0 4px,
transparent 4px 7px)}
svg.chart{width:100%;height:auto;display:block}
.chart .grid{stroke:#eaeef2}.chart .axis{stroke:#afb8c1}
.chart .tick{font-size:10.5px;fill:#656d76;font-family:system-ui,sans-serif}
.chart path.line{fill:none;stroke:currentColor;stroke-width:2;stroke-linejoin:round}
.chart path.dashed{stroke-dasharray:5 4;stroke-width:1.5}
.chart path.area{fill:currentColor;opacity:.1;stroke:none}
.chart circle{fill:currentColor;stroke:#fff;stroke-width:1}
.chart .marker line{stroke:currentColor;stroke-dasharray:3 3;opacity:.7}
.chart .marker text{fill:currentColor;font-size:10.5px;font-family:system-ui,sans-serif}
.s-rss{color:#8250df}.s-traced{color:#0969da}.s-peak{color:#54aeff}
iframe.flame{width:100%;border:1px solid var(--line);border-radius:6px;display:block;
background:#fff}
.warn{background:#fff8c5;border:1px solid #d4a72c;border-radius:8px;padding:10px 14px;
margin:0 0 22px;font-size:13px}
.warn ul{margin:4px 0 0;padding-left:20px}
.empty{color:var(--muted);font-style:italic}
a{color:var(--accent)}
footer{color:var(--muted);font-size:12px;padding-bottom:30px}
"#;

/// A page being built: sections are appended as HTML; [`Page::finish`] wraps them.
#[derive(Default)]
pub struct Page {
    body: String,
}

impl Page {
    pub fn push(&mut self, html: &str) {
        self.body.push_str(html);
    }

    /// The whole document. `title` and `subtitle` are plain text (escaped here).
    pub fn finish(self, title: &str, subtitle: &str) -> String {
        let mut out = String::with_capacity(self.body.len() + CSS.len() + 1024);
        out.push_str(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
             style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\
             <meta name=\"generator\" content=\"heaptrail html\"><title>",
        );
        push_escaped(&mut out, title);
        out.push_str("</title><style>");
        out.push_str(CSS);
        out.push_str("</style></head>\n<body><header class=\"top\"><div class=\"wrap\">");
        out.push_str("<div class=\"brand\">heaptrail</div><h1>");
        push_escaped(&mut out, title);
        out.push_str("</h1><p class=\"sub\">");
        push_escaped(&mut out, subtitle);
        out.push_str("</p></div></header>\n<main class=\"wrap\">\n");
        out.push_str(&self.body);
        out.push_str(
            "</main>\n<footer class=\"wrap\">Made by <code>heaptrail html</code>. \
             Sizes are in binary units (1 KiB = 1024 bytes). Hover over the flame graph \
             for details, click a frame to zoom in.</footer>\n</body></html>\n",
        );
        out
    }
}

/// The CSS class of a site verdict. Only known words become classes: the verdict text comes
/// from the file.
pub fn verdict_class(verdict: &str) -> &'static str {
    match Verdict::from_name(verdict) {
        Some(Verdict::Leak) => "v-leak",
        Some(Verdict::Suspect) => "v-suspect",
        Some(Verdict::Fixed) => "v-fixed",
        Some(Verdict::WarmingUp) => "v-warming-up",
        Some(Verdict::Plateau) => "v-plateau",
        None => "v-other",
    }
}

/// How severe a site verdict is (leak first), for ordering: the trend detector's order.
pub fn verdict_severity(verdict: &str) -> u8 {
    Verdict::from_name(verdict).map_or(0, Verdict::severity)
}

/// The CSS class of a process verdict.
pub fn process_class(verdict: &str) -> &'static str {
    match verdict {
        "ok" => "p-ok",
        "python-growth" => "p-python-growth",
        "native-growth" => "p-native-growth",
        "transient-peaks" => "p-transient-peaks",
        "allocator-retention" => "p-allocator-retention",
        _ => "v-other",
    }
}

/// One sentence on what a process verdict means.
pub fn process_meaning(verdict: &str) -> &'static str {
    match verdict {
        "ok" => "no lasting growth of the process's memory",
        "python-growth" => "memory allocated by Python code keeps growing",
        "native-growth" => {
            "RSS climbs while traced memory is flat: memory taken outside Python's allocators, \
             e.g. by a C extension"
        }
        "transient-peaks" => "RSS follows a rising peak of traced memory: big temporary batches",
        "allocator-retention" => {
            "RSS stays high while live memory fell: the allocator keeps freed memory"
        }
        "unknown" => "RSS could not be read, and traced memory does not grow: nothing to judge",
        _ => "",
    }
}

/// `<span class="badge ...">text</span>`.
/// Closes a table that left `hidden` rows out, saying so under it:
/// `<p class="note">{hidden} more {what}.</p>` (nothing when none were left out).
pub fn end_table(s: &mut String, hidden: usize, what: &str) {
    s.push_str("</tbody></table>");
    if hidden > 0 {
        s.push_str(&format!("<p class=\"note\">{hidden} more {what}.</p>"));
    }
}

pub fn badge(class: &str, text: &str) -> String {
    format!("<span class=\"badge {class}\">{}</span>", escape(text))
}

/// A site as `name.py:12` in bold over its directory, with the full `path:line` as tooltip.
pub fn site_cell(filename: &str, lineno: u32) -> String {
    named_site_cell(filename, lineno, None)
}

/// [`site_cell`] with the function that runs the line, when known, after `file.py:12`.
pub fn named_site_cell(filename: &str, lineno: u32, function: Option<&str>) -> String {
    let full = format!("{filename}:{lineno}");
    let (dir, name) = match filename.rfind(['/', '\\']) {
        Some(i) if i + 1 < filename.len() => (&filename[..=i], &filename[i + 1..]),
        _ => ("", filename),
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "<span class=\"mono\" title=\"{}\"><b>{}:{lineno}</b>",
        escape(&full),
        escape(name)
    );
    if let Some(function) = function {
        let _ = write!(out, " <span class=\"fn\">{}</span>", escape(function));
    }
    if !dir.is_empty() {
        let _ = write!(out, " <span class=\"dir\">{}</span>", escape(dir));
    }
    out.push_str("</span>");
    out
}

/// A site inside a sentence: `path/to/file.py:12` in code type.
pub fn site_inline(filename: &str, lineno: u32) -> String {
    format!("<code>{}:{lineno}</code>", escape(filename))
}

/// The frames of a traceback, outermost first as Python prints them, in a collapsed block.
pub fn traceback_details(frames_innermost_first: &[(String, u32)]) -> String {
    if frames_innermost_first.len() < 2 {
        return String::new();
    }
    let mut out = format!(
        "<details><summary>traceback ({} frames)</summary><ol class=\"tb mono\">",
        frames_innermost_first.len()
    );
    for (file, line) in frames_innermost_first.iter().rev() {
        let _ = write!(out, "<li>{}:{line}</li>", escape(file));
    }
    out.push_str("</ol></details>");
    out
}

/// A figure in the stats strip.
pub fn stat(label: &str, value: &str) -> String {
    format!(
        "<div class=\"stat\"><div class=\"k\">{}</div><div class=\"v\">{}</div></div>",
        escape(label),
        escape(value)
    )
}

/// A box listing `warnings` (escaped), or nothing.
pub fn warnings_box(warnings: &[String]) -> String {
    if warnings.is_empty() {
        return String::new();
    }
    let mut out =
        String::from("<div class=\"warn\"><b>Some lines of the file were skipped</b><ul>");
    for w in warnings {
        let _ = write!(out, "<li>{}</li>", escape(w));
    }
    out.push_str("</ul></div>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_escapes_title_and_has_no_external_references() {
        let mut page = Page::default();
        page.push("<section>x</section>");
        let html = page.finish("<img src=x onerror=alert(1)>", "a\"b");
        assert!(html.contains("<title>&lt;img src=x onerror=alert(1)&gt;</title>"));
        assert!(html.contains("<h1>&lt;img src=x onerror=alert(1)&gt;</h1>"));
        assert!(html.contains("a&quot;b"));
        assert!(html.contains("default-src 'none'"));
        assert!(!html.contains("http:") && !html.contains("https:") && !html.contains("//fonts"));
        assert!(!html.contains("url("));
    }

    #[test]
    fn verdicts_map_to_fixed_classes() {
        assert_eq!(verdict_class("leak"), "v-leak");
        assert_eq!(verdict_class("\" onmouseover=\"x"), "v-other");
        assert_eq!(process_class("native-growth"), "p-native-growth");
        assert_eq!(process_class("<x>"), "v-other");
        assert!(badge("v-other", "<x>").contains("&lt;x&gt;"));
    }

    #[test]
    fn site_cells_split_name_and_directory() {
        let cell = site_cell("/srv/app/<m>.py", 7);
        assert!(cell.contains("title=\"/srv/app/&lt;m&gt;.py:7\""));
        assert!(cell.contains("<b>&lt;m&gt;.py:7</b> <span class=\"dir\">/srv/app/</span>"));
        assert_eq!(
            site_cell("<unknown>", 0),
            "<span class=\"mono\" title=\"&lt;unknown&gt;:0\"><b>&lt;unknown&gt;:0</b></span>"
        );
    }

    #[test]
    fn tracebacks_are_printed_outermost_first() {
        let tb = vec![("inner.py".to_owned(), 2), ("<main>".to_owned(), 1)];
        let html = traceback_details(&tb);
        assert!(html.contains("<li>&lt;main&gt;:1</li><li>inner.py:2</li>"));
        assert_eq!(traceback_details(&tb[..1]), "");
    }
}
