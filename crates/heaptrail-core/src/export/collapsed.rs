//! Folded stacks ("collapsed" format) for flame-graph tools: `flamegraph.pl`, inferno,
//! speedscope, Grafana Pyroscope's importer.
//!
//! One line per distinct call stack: frames from the root (outermost call) to the leaf (the
//! allocating line), separated by `;`, then a space and the live bytes (or live blocks with
//! [`CollapsedValue::Blocks`]) allocated there. Lines are ordered by size, largest first.
//! A frame is `Cache.put (leaky_service.py:38)` when the source file was readable, else
//! `leaky_service.py:38`; a stack with no Python frame is `<unknown>`.

use std::io::{self, Write};

use super::frame_names::FrameNames;
use super::{CollapsedValue, ExportOptions};
use crate::model::Snapshot;
use crate::stacks::folded_stacks;

pub fn write(
    snapshot: &Snapshot,
    names: &FrameNames,
    options: &ExportOptions,
    out: &mut dyn Write,
) -> io::Result<()> {
    let mut folded = folded_stacks(snapshot, |f| names.frame_label(snapshot, f));
    if options.collapsed_value == CollapsedValue::Blocks {
        // Keep the output sorted by what it shows.
        folded.sort_by(|a, b| {
            b.1.count
                .cmp(&a.1.count)
                .then(a.1.traceback.cmp(&b.1.traceback))
        });
    }
    for (stack, total) in folded {
        let value = match options.collapsed_value {
            CollapsedValue::Bytes => total.size,
            CollapsedValue::Blocks => total.count,
        };
        writeln!(out, "{stack} {value}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::snapshot_from_raw;

    #[test]
    fn root_first_with_bytes_or_blocks() {
        let s = snapshot_from_raw(
            &[
                (0, 10, &[("/x/a.py", 2), ("/x/main.py", 1)], 2),
                (0, 30, &[("/x/a.py", 2), ("/x/main.py", 1)], 2),
                (0, 5, &[("/x/b.py", 7)], 1),
                (0, 1, &[("/x/b.py", 8)], 1),
                (0, 1, &[("/x/b.py", 8)], 1),
                (0, 1, &[("/x/b.py", 8)], 1),
            ],
            2,
        );
        let names = FrameNames::new(&s, false);
        let mut out = Vec::new();
        write(&s, &names, &ExportOptions::default(), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "main.py:1;a.py:2 40\nb.py:7 5\nb.py:8 3\n"
        );
        let opts = ExportOptions {
            collapsed_value: CollapsedValue::Blocks,
            ..Default::default()
        };
        let mut out = Vec::new();
        write(&s, &names, &opts, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "b.py:8 3\nmain.py:1;a.py:2 2\nb.py:7 1\n"
        );
    }

    #[test]
    fn inferno_renders_the_output() {
        let s = snapshot_from_raw(
            &[
                (0, 4096, &[("/x/a.py", 2), ("/x/main.py", 1)], 2),
                (0, 100, &[("/x/b;c.py", 7), ("/x/main.py", 1)], 2),
                (0, 3, &[], 0),
            ],
            2,
        );
        let names = FrameNames::new(&s, false);
        let mut out = Vec::new();
        write(&s, &names, &ExportOptions::default(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut svg = Vec::new();
        let mut opts = inferno::flamegraph::Options::default();
        inferno::flamegraph::from_lines(&mut opts, text.lines(), &mut svg).unwrap();
        let svg = String::from_utf8(svg).unwrap();
        for frame in ["main.py:1", "a.py:2", "b:c.py:7", "&lt;unknown&gt;"] {
            assert!(svg.contains(frame), "{frame} missing from the flame graph");
        }
    }
}
