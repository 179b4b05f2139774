//! Times the analyses on a snapshot shaped like a busy service: 1,000,000 live traces over
//! ~5,000 distinct tracebacks of depth 10 (target: <= 50 ms each in release).
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

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn synthetic(seed: u64) -> Snapshot {
    let mut rng = Rng(seed);
    let mut b = SnapshotBuilder::new(DEPTH as u32);
    let files: Vec<String> = (0..FILES)
        .map(|i| format!("/srv/app/.venv/lib/python3.13/site-packages/pkg{}/module{i}.py", i % 17))
        .collect();
    let tbs: Vec<u32> = (0..TRACEBACKS)
        .map(|_| {
            let frames: Vec<u32> = (0..DEPTH)
                .map(|_| {
                    let f = b.intern_filename(&files[rng.below(FILES)]);
                    b.intern_frame(f, 1 + rng.below(400) as u32)
                })
                .collect();
            b.intern_traceback(&frames, 20)
        })
        .collect();
    b.reserve_traces(TRACES);
    for _ in 0..TRACES {
        // Skewed choice of traceback so a few sites dominate, like a real heap.
        let r = rng.below(TRACEBACKS);
        let tb = tbs[r * rng.below(TRACEBACKS) / TRACEBACKS];
        b.push_trace(if rng.below(50) == 0 { 1 } else { 0 }, 16 + rng.below(500) as u64, tb);
    }
    b.finish()
}

/// Best of a few runs, to report the cost rather than the noise.
fn time<T>(label: &str, mut f: impl FnMut() -> T) -> Duration {
    let mut best = Duration::MAX;
    let mut len = 0;
    for _ in 0..5 {
        let start = Instant::now();
        let out = f();
        best = best.min(start.elapsed());
        len = std::mem::size_of_val(&out);
        drop(out);
    }
    let _ = len;
    println!("{label:<34} {:>8.2} ms", best.as_secs_f64() * 1e3);
    best
}

fn main() {
    let t = Instant::now();
    let new = synthetic(0x9E37_79B9_7F4A_7C15);
    let old = synthetic(0xD1B5_4A32_D192_ED03);
    println!(
        "built 2 snapshots of {} traces / {} tracebacks / {} frames in {:.0} ms",
        new.traces.len(),
        new.tracebacks.len(),
        new.frames.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let filters = [
        TraceFilter::Frame(FrameFilter::new(false, "<frozen importlib._bootstrap>", None, false, None)),
        TraceFilter::Frame(FrameFilter::new(false, "<unknown>", None, false, None)),
        TraceFilter::Frame(FrameFilter::new(true, "*/pkg3/*", None, true, None)),
        TraceFilter::Frame(FrameFilter::new(true, "*module1?.py", None, false, Some(0))),
        TraceFilter::Domain { inclusive: false, domain: 1 },
    ];
    let mut worst = Duration::ZERO;
    let mut run = |label: &str, d: Duration| worst = worst.max(d);
    if std::env::var("ONLY_CUM_DIFF").is_ok() { for _ in 0..20 { compare_to(&new, &old, KeyType::Lineno, true).unwrap(); } return; }
    run("statistics lineno", time("statistics('lineno')", || statistics(&new, KeyType::Lineno, false).unwrap()));
    run("statistics traceback", time("statistics('traceback')", || statistics(&new, KeyType::Traceback, false).unwrap()));
    run("statistics filename", time("statistics('filename')", || statistics(&new, KeyType::Filename, false).unwrap()));
    run("cumulative lineno", time("statistics('lineno', cumulative)", || statistics(&new, KeyType::Lineno, true).unwrap()));
    run("cumulative filename", time("statistics('filename', cumulative)", || statistics(&new, KeyType::Filename, true).unwrap()));
    run("compare lineno", time("compare_to('lineno')", || compare_to(&new, &old, KeyType::Lineno, false).unwrap()));
    run("compare traceback", time("compare_to('traceback')", || compare_to(&new, &old, KeyType::Traceback, false).unwrap()));
    run("compare cumulative", time("compare_to('lineno', cumulative)", || compare_to(&new, &old, KeyType::Lineno, true).unwrap()));
    run("filter", time("filter_traces(5 filters)", || filter_traces(&new, &filters)));
    println!("kept by the filters: {} traces", filter_traces(&new, &filters).traces.len());
    println!("worst: {:.2} ms (target <= 50 ms)", worst.as_secs_f64() * 1e3);
}
