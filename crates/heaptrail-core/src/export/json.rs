//! The JSON export, schema `heaptrail.snapshot/1`: live memory per call stack, for scripts.
//!
//! ```json
//! {
//!   "schema": "heaptrail.snapshot/1",
//!   "generator": "heaptrail 0.1.0",
//!   "traceback_limit": 25,
//!   "sample_rate": null,
//!   "total_size": 1234567,
//!   "total_count": 8910,
//!   "stacks": [
//!     {"size": 52000, "count": 400, "total_nframe": 7,
//!      "frames": [{"filename": "/srv/app.py", "lineno": 38, "function": "Cache.put"}, ...]},
//!     ...
//!   ]
//! }
//! ```
//!
//! * sizes are bytes, counts are live memory blocks; all domains are summed together;
//! * `sample_rate`: null for an exact snapshot; in sampled mode the mean bytes between sample
//!   points, and every size and count is then an unbiased estimate, not an exact figure;
//! * `stacks`: one per distinct traceback, largest `size` first (ties: first seen first);
//! * `frames`: most recent call first (`frames[0]` is the allocating line), as tracemalloc
//!   stores them; at most `traceback_limit` of them;
//! * `total_nframe`: depth of the whole stack when the block was allocated (more than
//!   `frames` has when the traceback was cut), or null when unknown;
//! * `function`: Python's qualified name of the code at that line: recorded when the snapshot
//!   was taken (`co_qualname`), else read from the source file at export time; null when
//!   neither is there (or lookup was off).
//!
//! Within version 1, fields are only ever added; a reader should ignore fields it does not
//! know. A change of meaning gets a new version.

use serde::Serialize;
use std::io::{self, Write};

use super::frame_names::FrameNames;
use crate::model::{Snapshot, TOTAL_NFRAME_UNKNOWN};
use crate::stacks::stack_totals;

/// The value of the `schema` field.
pub const SCHEMA: &str = "heaptrail.snapshot/1";

#[derive(Serialize)]
struct Document<'a> {
    schema: &'static str,
    generator: String,
    traceback_limit: u32,
    sample_rate: Option<u64>,
    total_size: u64,
    total_count: u64,
    stacks: Vec<Stack<'a>>,
}

#[derive(Serialize)]
struct Stack<'a> {
    size: u64,
    count: u64,
    total_nframe: Option<u32>,
    frames: Vec<JsonFrame<'a>>,
}

#[derive(Serialize)]
struct JsonFrame<'a> {
    filename: &'a str,
    lineno: u32,
    function: Option<&'a str>,
}

pub fn write(snapshot: &Snapshot, names: &FrameNames, out: &mut dyn Write) -> io::Result<()> {
    let stacks: Vec<Stack> = stack_totals(snapshot)
        .into_iter()
        .map(|t| {
            let tb = snapshot.traceback(t.traceback);
            Stack {
                size: t.size,
                count: t.count,
                total_nframe: (tb.total_nframe != TOTAL_NFRAME_UNKNOWN).then_some(tb.total_nframe),
                frames: snapshot
                    .stack(t.traceback)
                    .map(|sf| JsonFrame {
                        filename: snapshot.filename(sf.frame),
                        lineno: snapshot.frame(sf.frame).lineno,
                        function: names.qualname(sf),
                    })
                    .collect(),
            }
        })
        .collect();
    let doc = Document {
        schema: SCHEMA,
        generator: format!("heaptrail {}", env!("CARGO_PKG_VERSION")),
        traceback_limit: snapshot.traceback_limit,
        sample_rate: snapshot.rate().map(|r| r.bytes()),
        total_size: stacks.iter().map(|s| s.size).sum(),
        total_count: stacks.iter().map(|s| s.count).sum(),
        stacks,
    };
    serde_json::to_writer(&mut *out, &doc)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::snapshot_from_raw;

    #[test]
    fn documented_fields_and_order() {
        let s = snapshot_from_raw(
            &[
                (0, 10, &[("a.py", 2), ("main.py", 1)], 5),
                (0, 30, &[("a.py", 2), ("main.py", 1)], 5),
                (0, 50, &[("b.py", 7)], TOTAL_NFRAME_UNKNOWN),
            ],
            2,
        );
        let mut out = Vec::new();
        write(&s, &FrameNames::new(&s, false), &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["schema"], "heaptrail.snapshot/1");
        assert_eq!(v["traceback_limit"], 2);
        assert_eq!(v["total_size"], 90);
        assert_eq!(v["total_count"], 3);
        let stacks = v["stacks"].as_array().unwrap();
        assert_eq!(stacks[0]["size"], 50);
        assert_eq!(stacks[0]["total_nframe"], serde_json::Value::Null);
        assert_eq!(stacks[1]["size"], 40);
        assert_eq!(stacks[1]["count"], 2);
        assert_eq!(stacks[1]["total_nframe"], 5);
        assert_eq!(
            stacks[1]["frames"],
            serde_json::json!([
                {"filename": "a.py", "lineno": 2, "function": null},
                {"filename": "main.py", "lineno": 1, "function": null},
            ])
        );
    }
}
