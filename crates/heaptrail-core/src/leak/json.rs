//! The leak grouping as JSON in, JSON out: how the extension hands it the watcher's
//! candidates and the heap analyses (which arrive as JSON from the analysing child anyway).

use super::analysis::HolderAnalysis;
use super::entries::{group_leaks, Candidate, LeakEntry};
use super::pattern::ElementKinds;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct KindsIn {
    #[serde(default)]
    total: u64,
    #[serde(default)]
    exceptions: u64,
    #[serde(default)]
    callables: u64,
    #[serde(default)]
    tasks: u64,
}

#[derive(Deserialize)]
struct CandidateIn {
    key: u64,
    filename: String,
    lineno: u32,
    size: u64,
    count: u64,
    bytes_per_second: f64,
    analysis: HolderAnalysis,
    #[serde(default)]
    kinds: Option<KindsIn>,
}

#[derive(Serialize)]
struct EntryOut<'a> {
    key: u64,
    #[serde(flatten)]
    entry: &'a LeakEntry,
    hint: &'static str,
}

#[derive(Serialize)]
struct AssignmentOut {
    key: u64,
    entry: usize,
    primary: bool,
}

#[derive(Serialize)]
struct Out<'a> {
    entries: Vec<EntryOut<'a>>,
    assignments: Vec<AssignmentOut>,
}

/// `[{key, filename, lineno, size, count, bytes_per_second, analysis, kinds}]` ->
/// `{"entries": [...], "assignments": [{key, entry, primary}]}`.
pub fn group_leaks_json(input: &str) -> Result<String, String> {
    let parsed: Vec<CandidateIn> =
        serde_json::from_str(input).map_err(|e| format!("bad leak candidates: {e}"))?;
    let candidates: Vec<Candidate> = parsed
        .into_iter()
        .map(|c| {
            let k = c.kinds.unwrap_or(KindsIn {
                total: 0,
                exceptions: 0,
                callables: 0,
                tasks: 0,
            });
            Candidate {
                key: c.key,
                filename: c.filename,
                lineno: c.lineno,
                size: c.size,
                count: c.count,
                bytes_per_second: c.bytes_per_second,
                analysis: c.analysis,
                kinds: ElementKinds {
                    total: k.total,
                    exceptions: k.exceptions,
                    callables: k.callables,
                    tasks: k.tasks,
                },
            }
        })
        .collect();
    let (entries, assignments) = group_leaks(&candidates);
    let out = Out {
        entries: entries
            .iter()
            .map(|e| EntryOut {
                key: e.key,
                entry: e,
                hint: e.pattern.hint(),
            })
            .collect(),
        assignments: assignments
            .into_iter()
            .map(|a| AssignmentOut {
                key: a.key,
                entry: a.entry,
                primary: a.primary,
            })
            .collect(),
    };
    serde_json::to_string(&out).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let input = r#"[{"key":7,"filename":"a.py","lineno":3,"size":10,"count":1,
            "bytes_per_second":1.5,"kinds":{"total":2,"callables":2},
            "analysis":{"filename":"a.py","lineno":3,"blocks":1,"reached":1,
              "holder":{"type":"builtins.list","role":"element","path":[
                {"kind":"module","name":"a","type":"builtins.module"},
                {"kind":"attr","name":"bus","type":"a.Bus"},
                {"kind":"attr","name":"listeners","type":"builtins.list"}]}}}]"#;
        let out: serde_json::Value = serde_json::from_str(&group_leaks_json(input).unwrap()).unwrap();
        let e = &out["entries"][0];
        assert_eq!(e["pattern"], "listener-never-removed");
        assert_eq!(e["holder"], "Bus.listeners of a.bus");
        assert_eq!(e["sites"][0]["role"], "element");
        assert!(e["hint"].as_str().unwrap().starts_with("listener never removed"));
        assert_eq!(out["assignments"][0]["primary"], true);
        assert!(group_leaks_json("{").is_err());
    }
}
