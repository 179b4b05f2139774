//! Which files make one report, and reading them into a [`Fleet`].
//!
//! The watcher rotates a full report to `FILE.1` ... `FILE.N` (`--report-keep`), FILE.N the
//! oldest. Those files are one report cut in pieces: the same processes, older windows. They
//! are read as one *family*, oldest first, so that a process's latest window comes from the
//! newest file that has it, while a process that ended before a rotation still counts (its
//! latest window is in a rotated file) and a leak's first time comes from the oldest file.

use super::{Fleet, FleetBuilder};
use crate::html::report::{read_report, ReportError};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

/// The highest rotation number taken as one (the watcher keeps at most 100).
const MAX_ROTATION: u32 = 999;

/// `(FILE, N)` for a rotated `FILE.N`, `(path, 0)` for any other path.
pub fn rotation_of(path: &Path) -> (PathBuf, u32) {
    let text = path.to_string_lossy();
    if let Some((base, n)) = text.rsplit_once('.') {
        let is_number = !n.is_empty() && n.len() <= 3 && n.bytes().all(|b| b.is_ascii_digit());
        let base_name = Path::new(base).file_name().is_some_and(|f| !f.is_empty());
        if is_number && base_name && !base.ends_with('/') {
            if let Ok(n @ 1..=MAX_ROTATION) = n.parse::<u32>() {
                return (PathBuf::from(base), n);
            }
        }
    }
    (path.to_path_buf(), 0)
}

/// The report families of `paths`: `(FILE, its files oldest first)`, in the order each family
/// is first met.
pub fn families(paths: &[PathBuf]) -> Vec<(PathBuf, Vec<PathBuf>)> {
    let mut out: Vec<(PathBuf, Vec<(u32, PathBuf)>)> = Vec::new();
    for path in paths {
        let (base, n) = rotation_of(path);
        match out.iter_mut().find(|(b, _)| *b == base) {
            Some((_, files)) => files.push((n, path.clone())),
            None => out.push((base, vec![(n, path.clone())])),
        }
    }
    out.into_iter()
        .map(|(base, mut files)| {
            // FILE.2 is older than FILE.1, which is older than FILE.
            files.sort_by_key(|f| std::cmp::Reverse(f.0));
            (base, files.into_iter().map(|(_, p)| p).collect())
        })
        .collect()
}

/// Reads the watch reports at `paths` (files; rotated copies are grouped with their report)
/// into a fleet. A file that cannot be read, is empty or is not a report is listed in
/// [`Fleet::skipped_files`] with the reason; lines skipped inside a file are in
/// [`Fleet::warnings`]. Never fails: a fleet with no window says nothing could be read.
pub fn read_fleet(paths: &[PathBuf]) -> Fleet {
    let mut builder = FleetBuilder::default();
    for (base, files) in families(paths) {
        let source = base.to_string_lossy();
        for path in files {
            let shown = path.to_string_lossy();
            match read_file(&path) {
                Ok(report) => builder.add_report(&source, &shown, report),
                Err(reason) => builder.skip_file(&shown, reason),
            }
        }
    }
    builder.finish()
}

fn read_file(path: &Path) -> Result<crate::html::Report, String> {
    let file = File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        return Err("is a directory".into());
    }
    read_report(BufReader::with_capacity(1 << 20, file), None).map_err(|e| match e {
        ReportError::Io(e) => format!("cannot read it: {e}"),
        e => e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_copies_join_their_report_oldest_first() {
        let paths: Vec<PathBuf> = [
            "d/a.jsonl",
            "d/a.jsonl.1",
            "d/b.jsonl",
            "d/a.jsonl.2",
            "d/w-12.jsonl",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        let fams = families(&paths);
        let names: Vec<(String, Vec<String>)> = fams
            .iter()
            .map(|(b, f)| {
                (
                    b.display().to_string(),
                    f.iter().map(|p| p.display().to_string()).collect(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                (
                    "d/a.jsonl".into(),
                    vec![
                        "d/a.jsonl.2".into(),
                        "d/a.jsonl.1".into(),
                        "d/a.jsonl".into()
                    ]
                ),
                ("d/b.jsonl".into(), vec!["d/b.jsonl".into()]),
                ("d/w-12.jsonl".into(), vec!["d/w-12.jsonl".into()]),
            ]
        );
    }

    #[test]
    fn only_small_numeric_suffixes_are_rotations() {
        let r = |p: &str| {
            let (b, n) = rotation_of(Path::new(p));
            (b.display().to_string(), n)
        };
        assert_eq!(r("x.jsonl.3"), ("x.jsonl".into(), 3));
        assert_eq!(r("/var/log/leaks.100"), ("/var/log/leaks".into(), 100));
        assert_eq!(r("x.jsonl.0"), ("x.jsonl.0".into(), 0));
        assert_eq!(r("x.2024"), ("x.2024".into(), 0));
        assert_eq!(r("x.jsonl.1a"), ("x.jsonl.1a".into(), 0));
        assert_eq!(r("dir/.1"), ("dir/.1".into(), 0));
        assert_eq!(r("w-1.jsonl"), ("w-1.jsonl".into(), 0));
    }
}
