//! Folded stacks ("collapsed" format) for flame-graph tools: `flamegraph.pl`, inferno,
//! speedscope, Grafana Pyroscope's importer.
//!
//! One line per distinct call stack: frames from the root (outermost call) to the leaf (the
//! allocating line), separated by `;`, then a space and the live bytes (or live blocks with
//! [`CollapsedValue::Blocks`]) allocated there. Lines are ordered by size, largest first.
//! A frame is `Cache.put (leaky_service.py:38)` when its function is known (recorded in the
//! snapshot, or read from the source file), else
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
    let mut folded = folded_stacks(snapshot, |f| names.frame_label(f));
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
    fn recorded_functions_label_frames_without_any_source() {
        use crate::model::SnapshotBuilder;
        let mut b = SnapshotBuilder::new(3);
        let f = b.intern_filename("/gone/app.py");
        let (l7, l20) = (b.intern_frame(f, 7), b.intern_frame(f, 20));
        let outer = b.intern_function(&"Outer.method".into(), 5);
        let inner = b.intern_function(&"Outer.method.<locals>.inner".into(), 6);
        let tb = b.intern_traceback_with_functions(&[l7, l20], &[inner, outer], 2);
        b.push_trace(0, 64, tb);
        let s = b.finish();
        let mut out = Vec::new();
        write(
            &s,
            &FrameNames::new(&s, true),
            &ExportOptions::default(),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Outer.method (app.py:20);Outer.method.<locals>.inner (app.py:7) 64\n"
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
