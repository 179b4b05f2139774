//! Times the analyses on a snapshot shaped like a busy service: 1,000,000 live traces over
//! 5,000 distinct tracebacks of depth 10 (target: <= 50 ms each in release).
//!
//! `cargo run --release -p heaptrail-core --example analysis_speed`

use heaptrail_core::diff::compare_to;
use heaptrail_core::filter::{filter_traces, FrameFilter, TraceFilter};
use heaptrail_core::group::{statistics, KeyType};
use heaptrail_core::{Snapshot, SnapshotBuilder};
use std::time::{Duration, Instant};

const TRACES: usize = 1_000_000;
const TRACEBACKS: usize = 5_000;
const DEPTH: usize = 10;
const FILES: usize = 300;
const TARGET: Duration = Duration::from_millis(50);

/// Two calls with different seeds give snapshots with different id tables but overlapping
/// frames, like two snapshots of one process.
fn synthetic(seed: u64) -> Snapshot {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut b = SnapshotBuilder::new(DEPTH as u32);
    let files: Vec<String> = (0..FILES)
        .map(|i| {
            format!(
                "/srv/app/.venv/lib/python3.13/site-packages/pkg{}/module{i}.py",
                i % 17
            )
        })
        .collect();
    let tracebacks: Vec<u32> = (0..TRACEBACKS)
        .map(|_| {
            let frames: Vec<u32> = (0..DEPTH)
                .map(|_| {
                    let f = b.intern_filename(&files[rng.usize(..FILES)]);
                    b.intern_frame(f, 1 + rng.usize(..400) as u32)
                })
                .collect();
            b.intern_traceback(&frames, 20)
        })
        .collect();
    b.reserve_traces(TRACES);
    for _ in 0..TRACES {
        // Skewed towards low indices so a few sites dominate, like a real heap.
        let tb = tracebacks[rng.usize(..TRACEBACKS) * rng.usize(..TRACEBACKS) / TRACEBACKS];
        let domain = if rng.usize(..50) == 0 { 1 } else { 0 };
        b.push_trace(domain, 16 + rng.usize(..500) as u64, tb);
    }
    b.finish()
}

/// Best of five runs (the machine's noise is not the code's cost). The result is dropped
/// outside the timed region, as a caller would keep it.
fn time<T>(label: &str, mut f: impl FnMut() -> T) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let out = std::hint::black_box(f());
        best = best.min(start.elapsed());
        drop(out);
    }
    let flag = if best <= TARGET { "" } else { "  OVER TARGET" };
    println!("{label:<36} {:>8.2} ms{flag}", best.as_secs_f64() * 1e3);
    best
}

fn main() {
    let t = Instant::now();
    let new = synthetic(0x9E37_79B9_7F4A_7C15);
    let old = synthetic(0xD1B5_4A32_D192_ED03);
    println!(
        "2 snapshots of {} traces / {} tracebacks / {} frames built in {:.0} ms",
        new.traces.len(),
        new.tracebacks.len(),
        new.frames.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let filters = [
        TraceFilter::Frame(FrameFilter::new(
            false,
            "<frozen importlib._bootstrap>",
            None,
            false,
            None,
        )),
        TraceFilter::Frame(FrameFilter::new(false, "<unknown>", None, false, None)),
        TraceFilter::Frame(FrameFilter::new(true, "*/pkg3/*", None, true, None)),
        TraceFilter::Frame(FrameFilter::new(true, "*module1?.py", None, false, Some(0))),
        TraceFilter::Domain {
            inclusive: false,
            domain: 1,
        },
    ];
    let (new, old) = (&new, &old);
    let stats = |key, cumulative| move || statistics(new, key, cumulative).unwrap();
    let diff = |key, cumulative| move || compare_to(new, old, key, cumulative).unwrap();
    let times = [
        time("statistics('lineno')", stats(KeyType::Lineno, false)),
        time("statistics('traceback')", stats(KeyType::Traceback, false)),
        time("statistics('filename')", stats(KeyType::Filename, false)),
        time(
            "statistics('lineno', cumulative)",
            stats(KeyType::Lineno, true),
        ),
        time(
            "statistics('filename', cumulative)",
            stats(KeyType::Filename, true),
        ),
        time("compare_to('lineno')", diff(KeyType::Lineno, false)),
        time("compare_to('traceback')", diff(KeyType::Traceback, false)),
        time(
            "compare_to('lineno', cumulative)",
            diff(KeyType::Lineno, true),
        ),
        time("filter_traces(5 filters)", || filter_traces(new, &filters)),
    ];
    println!(
        "(filters keep {} traces)",
        filter_traces(new, &filters).traces.len()
    );
    let worst = times.iter().max().unwrap();
    println!(
        "worst: {:.2} ms (target <= {} ms)",
        worst.as_secs_f64() * 1e3,
        TARGET.as_millis()
    );
}
