//! The watch report: one JSON object per window, schema `heaptrail.watch/2`, as the watcher
//! writes it (`heaptrail run --report FILE`, `heaptrail.watch(report=...)`) and `heaptrail
//! html` reads it. These types are the report's one owner: the Python watcher builds a window
//! as a dict and hands it to [`encode_window`] (as `_native._encode_window`), which refuses a
//! field these types do not know, so the writer cannot drift from the reader. The README's
//! "Report schema" table documents the fields.
//!
//! Reading stays tolerant: a field these types do not know is kept aside (`unknown`) and
//! ignored, so files written by another heaptrail version still load.

use crate::leak::analysis::Edge;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The schema the watcher writes.
pub const SCHEMA: &str = "heaptrail.watch/2";
/// Older schemas still read: `/1` had `held_by` text instead of leak entries.
pub const OLDER_SCHEMAS: [&str; 1] = ["heaptrail.watch/1"];

/// Whether `heaptrail html` reads windows of `schema`.
pub fn is_known_schema(schema: &str) -> bool {
    schema == SCHEMA || OLDER_SCHEMAS.contains(&schema)
}

/// Fields met while reading that the types below do not have.
pub type UnknownFields = BTreeMap<String, serde_json::Value>;

/// One window.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct WindowReport {
    pub schema: String,
    /// Unix time of the window, seconds.
    pub time: f64,
    pub pid: u32,
    /// From 1.
    pub window: u64,
    /// Seconds between windows.
    #[serde(default)]
    pub interval: Option<f64>,
    pub rss_bytes: u64,
    pub traced_bytes: u64,
    pub traced_peak_bytes: u64,
    /// Sampled mode's rate (mean bytes between sample points); absent or null when exact.
    /// When set, `traced_*` and every site's size and count are unbiased estimates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<u64>,
    pub process_verdict: String,
    #[serde(default)]
    pub process_confidence: Option<f64>,
    /// Most severe first.
    pub sites: Vec<SiteRow>,
    /// One entry per leak (per holder), fastest growing first. (`/1` has none.)
    #[serde(default)]
    pub leaks: Vec<LeakRow>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// One site row.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct SiteRow {
    pub filename: String,
    pub lineno: u32,
    /// The function that runs the line: its code object's qualified name (`co_qualname`,
    /// `Cache.remember`), as captured when the window was taken. Absent when unknown and in
    /// reports written before heaptrail recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// `[filename, lineno]` pairs, innermost first.
    #[serde(default)]
    pub traceback: Vec<(String, u32)>,
    pub size: u64,
    #[serde(default)]
    pub size_diff: i64,
    #[serde(default)]
    pub count: u64,
    #[serde(default)]
    pub count_diff: i64,
    #[serde(default)]
    pub bytes_per_second: f64,
    pub verdict: String,
    #[serde(default)]
    pub confidence: f64,
    #[serde(default)]
    pub windows: u64,
    #[serde(default)]
    pub growth_bytes: i64,
    /// `heaptrail.watch/1`: who holds a leaking site's memory, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
    /// The holder's path of the leak this site is (part of).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// That leak's pattern (`unbounded-cache`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// A `part-of-leak` site: `"file:line"` of its leak entry's line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leak_site: Option<String>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

impl SiteRow {
    /// Who holds the site's memory, from either schema.
    pub fn holder_text(&self) -> Option<&str> {
        self.holder.as_deref().or(self.held_by.as_deref())
    }
}

/// A line of the user's code.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Line {
    pub filename: String,
    pub lineno: u32,
    /// The function that runs the line (`co_qualname`), when known; see [`SiteRow::function`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
}

/// `file.py:12 in Cache.remember`, or `file.py:12` when the function is not known: how a
/// site is named to people (logs, summaries, pages).
pub fn site_text(filename: &str, lineno: u32, function: Option<&str>) -> String {
    match function {
        Some(f) if !f.is_empty() => format!("{filename}:{lineno} in {f}"),
        _ => format!("{filename}:{lineno}"),
    }
}

/// One leak: a holder and the sites that feed it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct LeakRow {
    /// The line to look at (the first of `sites`).
    pub site: Line,
    /// The holder's path as text; None when no holder was found (`note` says why).
    pub holder: Option<String>,
    pub holder_type: Option<String>,
    /// Root first.
    #[serde(default)]
    pub path: Vec<Edge>,
    pub pattern: String,
    /// The pattern's one-line fix (empty for `unknown`).
    #[serde(default)]
    pub hint: String,
    pub size: u64,
    pub count: u64,
    pub bytes_per_second: f64,
    /// The entry's line first.
    pub sites: Vec<LeakSiteRow>,
    /// When the holder is a library's state: the user's line that fed it.
    #[serde(default)]
    pub feeding_line: Option<Line>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// A site listed under a leak.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct LeakSiteRow {
    pub filename: String,
    pub lineno: u32,
    /// The function that runs the line, when known; see [`SiteRow::function`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// `element`, `content`, `key`, `storage`, `internal`, `unknown`.
    pub role: String,
    pub size: u64,
    pub count: u64,
    pub bytes_per_second: f64,
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

impl WindowReport {
    /// Names of fields (`sites[3].foo`) the types above do not have, first few only.
    pub fn unknown_fields(&self) -> Vec<String> {
        let mut found: Vec<String> = self.unknown.keys().cloned().collect();
        for (i, s) in self.sites.iter().enumerate() {
            found.extend(s.unknown.keys().map(|k| format!("sites[{i}].{k}")));
        }
        for (i, l) in self.leaks.iter().enumerate() {
            found.extend(l.unknown.keys().map(|k| format!("leaks[{i}].{k}")));
            for (j, s) in l.sites.iter().enumerate() {
                found.extend(s.unknown.keys().map(|k| format!("leaks[{i}].sites[{j}].{k}")));
            }
        }
        found.truncate(5);
        found
    }
}

/// What tells one leak from another across processes: its line and its pattern.
pub type LeakKey = (String, u32, String);

impl LeakRow {
    pub fn key(&self) -> LeakKey {
        (
            self.site.filename.clone(),
            self.site.lineno,
            self.pattern.clone(),
        )
    }
}

impl WindowReport {
    /// The window's leak entries, taken out of it. A `heaptrail.watch/1` window has none
    /// (its leaks are `leak` sites with `held_by` text): each of its `leak` sites becomes an
    /// entry of its own, so readers of both schemas see leaks the same way.
    pub fn take_leaks(&mut self) -> Vec<LeakRow> {
        if !OLDER_SCHEMAS.contains(&self.schema.as_str()) {
            return std::mem::take(&mut self.leaks);
        }
        self.sites
            .iter()
            .filter(|s| s.verdict == "leak")
            .map(|s| LeakRow {
                site: Line {
                    filename: s.filename.clone(),
                    lineno: s.lineno,
                    function: s.function.clone(),
                },
                holder: s.holder_text().map(str::to_owned),
                holder_type: None,
                path: Vec::new(),
                pattern: s.pattern.clone().unwrap_or_else(|| "unknown".into()),
                hint: String::new(),
                size: s.size,
                count: s.count,
                bytes_per_second: s.bytes_per_second,
                sites: vec![LeakSiteRow {
                    filename: s.filename.clone(),
                    lineno: s.lineno,
                    function: s.function.clone(),
                    role: "unknown".into(),
                    size: s.size,
                    count: s.count,
                    bytes_per_second: s.bytes_per_second,
                    unknown: UnknownFields::new(),
                }],
                feeding_line: None,
                note: None,
                unknown: UnknownFields::new(),
            })
            .collect()
    }
}

/// The JSON line (without its newline) for a window the watcher built, or why it does not
/// fit the schema (a field this type does not know, the wrong schema, a time that is not a
/// finite number).
pub fn encode_window(report: &WindowReport) -> Result<String, String> {
    if report.schema != SCHEMA {
        return Err(format!("schema {:?} is not {SCHEMA}", report.schema));
    }
    if !report.time.is_finite() {
        return Err("\"time\" is not a finite number".into());
    }
    let unknown = report.unknown_fields();
    if !unknown.is_empty() {
        return Err(format!(
            "fields not in the {SCHEMA} schema: {}",
            unknown.join(", ")
        ));
    }
    serde_json::to_string(report).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> &'static str {
        r#"{"schema":"heaptrail.watch/2","time":1.5,"pid":7,"window":2,"interval":2.0,
            "rss_bytes":10,"traced_bytes":5,"traced_peak_bytes":6,"process_verdict":"ok",
            "process_confidence":0.5,
            "sites":[{"filename":"a.py","lineno":3,"traceback":[["a.py",3]],"size":100,
                      "size_diff":10,"count":2,"count_diff":1,"bytes_per_second":1.25,
                      "verdict":"leak","confidence":0.9,"windows":4,"growth_bytes":50,
                      "holder":"a.CACHE","pattern":"unbounded-cache"}],
            "leaks":[{"site":{"filename":"a.py","lineno":3},"holder":"a.CACHE",
                      "holder_type":"builtins.dict",
                      "path":[{"kind":"module","name":"a","of":null,"type":"builtins.module"}],
                      "pattern":"unbounded-cache","hint":"bound it","size":100,"count":2,
                      "bytes_per_second":1.25,
                      "sites":[{"filename":"a.py","lineno":3,"role":"element","size":100,
                                "count":2,"bytes_per_second":1.25}],
                      "feeding_line":null}]}"#
    }

    #[test]
    fn a_window_reads_and_writes_back_the_same() {
        let read: WindowReport = serde_json::from_str(line()).unwrap();
        assert!(read.unknown_fields().is_empty());
        let written = encode_window(&read).unwrap();
        let again: WindowReport = serde_json::from_str(&written).unwrap();
        assert_eq!(read, again);
        let a: serde_json::Value = serde_json::from_str(line()).unwrap();
        let b: serde_json::Value = serde_json::from_str(&written).unwrap();
        assert_eq!(a, b, "no field added, dropped or renamed");
    }

    #[test]
    fn function_names_are_optional_and_round_trip() {
        // Written before names were recorded: every function is None.
        let old: WindowReport = serde_json::from_str(line()).unwrap();
        assert_eq!(old.sites[0].function, None);
        assert_eq!(old.leaks[0].site.function, None);
        assert_eq!(old.leaks[0].sites[0].function, None);
        assert!(!encode_window(&old).unwrap().contains("function"), "absent, not null");
        // With names: kept by the reader, written back by the writer.
        let text = line()
            .replace(
                r#""lineno":3,"traceback""#,
                r#""lineno":3,"function":"Cache.remember","traceback""#,
            )
            .replace(
                r#""site":{"filename":"a.py","lineno":3}"#,
                r#""site":{"filename":"a.py","lineno":3,"function":"Cache.remember"}"#,
            )
            .replace(
                r#""lineno":3,"role""#,
                r#""lineno":3,"function":"Cache.remember","role""#,
            );
        let named: WindowReport = serde_json::from_str(&text).unwrap();
        assert!(named.unknown_fields().is_empty());
        assert_eq!(named.sites[0].function.as_deref(), Some("Cache.remember"));
        assert_eq!(named.leaks[0].site.function.as_deref(), Some("Cache.remember"));
        assert_eq!(named.leaks[0].sites[0].function.as_deref(), Some("Cache.remember"));
        let again: WindowReport = serde_json::from_str(&encode_window(&named).unwrap()).unwrap();
        assert_eq!(named, again);
        assert_eq!(site_text("a.py", 3, Some("Cache.remember")), "a.py:3 in Cache.remember");
        assert_eq!(site_text("a.py", 3, None), "a.py:3");
    }

    #[test]
    fn leaks_of_both_schemas() {
        let mut two: WindowReport = serde_json::from_str(line()).unwrap();
        let leaks = two.take_leaks();
        assert_eq!(leaks.len(), 1);
        assert_eq!(leaks[0].key(), ("a.py".into(), 3, "unbounded-cache".into()));
        assert!(two.leaks.is_empty(), "taken out");
        // `/1`: the leak site, with its held_by text, is the entry.
        let mut one: WindowReport = serde_json::from_str(line()).unwrap();
        one.schema = OLDER_SCHEMAS[0].into();
        one.leaks.clear();
        one.sites[0].holder = None;
        one.sites[0].pattern = None;
        one.sites[0].held_by = Some("a.CACHE (dict)".into());
        let leaks = one.take_leaks();
        assert_eq!(leaks.len(), 1);
        assert_eq!(leaks[0].key(), ("a.py".into(), 3, "unknown".into()));
        assert_eq!(leaks[0].holder.as_deref(), Some("a.CACHE (dict)"));
        assert_eq!((leaks[0].size, leaks[0].bytes_per_second), (100, 1.25));
    }

    #[test]
    fn the_writer_refuses_fields_the_schema_does_not_have() {
        let text = line().replace(r#""lineno":3,"traceback""#, r#""lineno":3,"extra":1,"traceback""#);
        let read: WindowReport = serde_json::from_str(&text).unwrap(); // the reader tolerates it
        let err = encode_window(&read).unwrap_err();
        assert!(err.contains("sites[0].extra"), "{err}");
        let mut other: WindowReport = serde_json::from_str(line()).unwrap();
        other.schema = "heaptrail.watch/9".into();
        assert!(encode_window(&other).unwrap_err().contains("is not heaptrail.watch/2"));
    }
}
