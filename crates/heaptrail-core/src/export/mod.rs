//! Exports of a snapshot for other tools: pprof heap profiles, folded stacks for flame graphs,
//! and versioned JSON. All three show live memory per call stack
//! ([`crate::stacks::stack_totals`]); they differ only in encoding.
//!
//! * [`pprof`]: gzipped `profile.proto` for `go tool pprof` and Grafana Pyroscope;
//! * [`collapsed`]: `root;...;leaf value` lines for flamegraph.pl, inferno, speedscope;
//! * [`json`]: schema `heaptrail.snapshot/1`.
//!
//! Snapshots record `filename:lineno` per frame; [`frame_names`] turns them into function names
//! by reading the source files (bounded, never executed), with `basename:lineno` as fallback.

pub mod collapsed;
pub mod frame_names;
pub mod json;
pub mod live_profile;
pub mod pprof;
pub mod pprof_proto;
pub mod source_scopes;

use std::fmt;
use std::io::{self, Write};
use std::path::Path;
use std::str::FromStr;

use crate::model::Snapshot;
use frame_names::FrameNames;

/// An export format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Pprof,
    Collapsed,
    Json,
}

impl Format {
    pub const NAMES: [&'static str; 3] = ["pprof", "collapsed", "json"];
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pprof" => Ok(Format::Pprof),
            "collapsed" => Ok(Format::Collapsed),
            "json" => Ok(Format::Json),
            other => Err(format!(
                "unknown export format {other:?} (expected one of: {})",
                Format::NAMES.join(", ")
            )),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Pprof => "pprof",
            Format::Collapsed => "collapsed",
            Format::Json => "json",
        })
    }
}

/// What the value of a folded-stack line counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CollapsedValue {
    /// Live bytes.
    #[default]
    Bytes,
    /// Live memory blocks.
    Blocks,
}

/// Options shared by the formats (each uses the ones that apply to it).
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// Read source files to name functions (else frames are named `basename:lineno`).
    pub read_sources: bool,
    /// Folded stacks: bytes or blocks.
    pub collapsed_value: CollapsedValue,
    /// pprof `time_nanos`: when the snapshot was taken, if known.
    pub time_nanos: Option<i64>,
    /// pprof `duration_nanos`: the span a delta profile covers.
    pub duration_nanos: Option<i64>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            read_sources: true,
            collapsed_value: CollapsedValue::Bytes,
            time_nanos: None,
            duration_nanos: None,
        }
    }
}

/// Writes `snapshot` in `format` to `out`.
pub fn export(
    snapshot: &Snapshot,
    format: Format,
    options: &ExportOptions,
    out: &mut dyn Write,
) -> io::Result<()> {
    let names = FrameNames::new(snapshot, options.read_sources);
    match format {
        Format::Pprof => pprof::write(snapshot, &names, options, out),
        Format::Collapsed => collapsed::write(snapshot, &names, options, out),
        Format::Json => json::write(snapshot, &names, out),
    }
}

/// The export as bytes in memory.
pub fn export_to_vec(snapshot: &Snapshot, format: Format, options: &ExportOptions) -> Vec<u8> {
    let mut out = Vec::new();
    export(snapshot, format, options, &mut out).expect("writing to a Vec cannot fail");
    out
}

/// Writes the export to `path` and returns the number of bytes written.
///
/// A regular file (or a new one) is replaced atomically, anything else that already exists there
/// (`/dev/null`, a FIFO) written to directly: see [`crate::atomic_file`].
pub fn write_file(
    path: &Path,
    snapshot: &Snapshot,
    format: Format,
    options: &ExportOptions,
) -> io::Result<u64> {
    crate::atomic_file::write_with(path, |out| export(snapshot, format, options, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::snapshot_from_raw;
    use std::fs;
    use std::os::unix::fs::FileTypeExt;

    #[test]
    fn formats_parse_and_print() {
        for name in Format::NAMES {
            assert_eq!(name.parse::<Format>().unwrap().to_string(), name);
        }
        let err = "svg".parse::<Format>().unwrap_err();
        assert!(err.contains("pprof, collapsed, json"), "{err}");
    }

    #[test]
    fn write_file_replaces_atomically_and_counts_bytes() {
        let s = snapshot_from_raw(&[(0, 10, &[("a.py", 2)], 1)], 1);
        let dir = std::env::temp_dir().join(format!("heaptrail-export-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out.txt");
        fs::write(&out, "old content that is longer than the export\n").unwrap();
        let opts = ExportOptions::default();
        let n = write_file(&out, &s, Format::Collapsed, &opts).unwrap();
        assert_eq!(fs::read_to_string(&out).unwrap(), "a.py:2 10\n");
        assert_eq!(n, 10);
        // Nothing is left behind, and a directory that does not exist is an error.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        let err = write_file(&dir.join("no/such/dir.txt"), &s, Format::Json, &opts).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        // A device is written in place, not replaced.
        let n = write_file(Path::new("/dev/null"), &s, Format::Json, &opts).unwrap();
        assert!(n > 0);
        assert!(fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device());
        fs::remove_dir_all(&dir).unwrap();
    }
}
