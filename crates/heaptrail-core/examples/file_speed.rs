//! How fast and how small the snapshot file format is on a service-sized snapshot:
//! 1M traces over ~5,000 tracebacks of depth 10.
//!
//! ```text
//! cargo run --release -p heaptrail-core --example file_speed
//! ```

use heaptrail_core::snapshot_file::{decode, encode_to_vec};
use heaptrail_core::{Snapshot, SnapshotBuilder};
use std::time::{Duration, Instant};

/// Tracebacks share their outer frames (a few entry points, a framework, then app code), and
/// a few hot sites own most traces: roughly what a web service's heap looks like.
pub fn synthetic_snapshot(ntraces: usize, ntracebacks: usize, depth: usize) -> Snapshot {
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
    let mut b = SnapshotBuilder::new(depth as u32);
    let files: Vec<_> = (0..400)
        .map(|i| {
            let pkg = [
                "site-packages/django",
                "site-packages/sqlalchemy",
                "myapp",
                "lib/python3.12",
            ][i % 4];
            b.intern_filename(&format!("/srv/venv/{pkg}/module_{i}.py"))
        })
        .collect();
    let mut tbs = Vec::with_capacity(ntracebacks);
    while tbs.len() < ntracebacks {
        let mut frames = Vec::with_capacity(depth);
        for level in 0..depth {
            // Outer levels (the end of the list: most recent first) come from few places.
            let spread = 4u64 << (2 * (depth - level)).min(12);
            let site = rng.u64(..spread);
            let file = files[(site as usize * 7 + level * 13) % files.len()];
            frames.push(b.intern_frame(file, 1 + (site as u32 * 37 + level as u32 * 11) % 3000));
        }
        let total = depth as u32 + rng.u64(..30) as u32;
        let id = b.intern_traceback(&frames, total);
        if id as usize == tbs.len() {
            tbs.push(id);
        }
    }
    b.reserve_traces(ntraces);
    for _ in 0..ntraces {
        // Skewed popularity: squaring a uniform pick favours low ids.
        let r = rng.u64(..1 << 20);
        let tb = tbs[((((r * r) >> 40) as usize) * ntracebacks) >> 20];
        let size = match rng.u64(..10) {
            0..=5 => 16 + 8 * rng.u64(..16),
            6..=8 => 64 + rng.u64(..1024),
            _ => 1024 + rng.u64(..1 << 16),
        };
        b.push_trace(0, size, tb);
    }
    b.finish()
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut out = None;
    for _ in 0..runs {
        let t = Instant::now();
        let v = f();
        best = best.min(t.elapsed());
        out = Some(v);
    }
    (best, out.expect("at least one run"))
}

fn main() {
    let t = Instant::now();
    let snapshot = synthetic_snapshot(1_000_000, 5_000, 10);
    println!(
        "built {} traces, {} tracebacks, {} frames, {} files in {:.0?}",
        snapshot.traces.len(),
        snapshot.tracebacks.len(),
        snapshot.frames.len(),
        snapshot.filenames.len(),
        t.elapsed()
    );
    let (enc, bytes) = best_of(5, || {
        encode_to_vec(&snapshot, r#"{"source": "file_speed"}"#)
    });
    let (dec, decoded) = best_of(5, || decode(&bytes).expect("decodes"));
    assert_eq!(decoded.0, snapshot);
    println!(
        "file size: {} bytes ({:.2} bytes/trace)",
        bytes.len(),
        bytes.len() as f64 / 1e6
    );
    println!("encode: {:.1} ms (best of 5)", enc.as_secs_f64() * 1e3);
    println!("decode: {:.1} ms (best of 5)", dec.as_secs_f64() * 1e3);
}
