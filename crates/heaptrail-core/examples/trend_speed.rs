//! Times `TrendDetector::observe` with 20,000 sites and a full history (target: well under 5 ms
//! per window in release), single-threaded and with the default thread setting.
//!
//! `cargo run --release -p heaptrail-core --example trend_speed`

use heaptrail_core::trend::{ProcessSample, SiteSample, TrendConfig, TrendDetector, Verdict};
use std::time::{Duration, Instant};

const SITES: usize = 20_000;
const WARM: usize = 40;
const TIMED: usize = 60;

#[derive(Clone, Copy)]
enum Shape {
    Constant,
    Noisy,
    Sawtooth,
    Churn,
    Leak,
}

fn size(shape: Shape, base: f64, w: usize, rng: &mut fastrand::Rng) -> Option<u64> {
    let v = match shape {
        Shape::Constant => base,
        Shape::Noisy => base * (1.0 + 0.1 * (rng.f64() - 0.5)),
        Shape::Sawtooth => base * (1.0 + (w % 7) as f64 / 7.0),
        Shape::Churn => {
            if rng.f64() < 0.3 {
                base
            } else {
                return None;
            }
        }
        Shape::Leak => base + 100_000.0 * w as f64 + base * 0.02 * rng.f64(),
    };
    Some(v as u64)
}

/// CPU time of this thread (Linux: `/proc/thread-self/schedstat`), to see past other load.
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(
        s.split_whitespace().next()?.parse().ok()?,
    ))
}

fn run(name: &str, threads: usize, shape_of: &dyn Fn(usize) -> Shape) {
    let mut rng = fastrand::Rng::with_seed(0x9E37_79B9_7F4A_7C15);
    let shapes: Vec<Shape> = (0..SITES).map(shape_of).collect();
    let bases: Vec<f64> = (0..SITES)
        .map(|_| 1000.0 + rng.f64() * 50_000_000.0)
        .collect();
    let mut d = TrendDetector::new(TrendConfig::default());
    d.set_threads(threads);
    let mut times = Vec::new();
    let mut cpu = Duration::ZERO;
    let mut leaks = 0;
    for w in 0..WARM + TIMED {
        let sites: Vec<SiteSample> = (0..SITES)
            .filter_map(|i| {
                size(shapes[i], bases[i], w, &mut rng).map(|s| SiteSample {
                    key: i as u64 * 0x9E37_79B9 + 1,
                    size: s,
                    count: 1 + s / 64,
                })
            })
            .collect();
        let process = ProcessSample {
            rss_bytes: 2 << 30,
            traced_bytes: 1 << 30,
            traced_peak_bytes: 3 << 29,
        };
        let (start, cpu_start) = (Instant::now(), thread_cpu());
        let report = d.observe(w as f64 * 10.0, process, &sites);
        let (elapsed, cpu_end) = (start.elapsed(), thread_cpu());
        if w >= WARM {
            times.push(elapsed);
            if let (Some(a), Some(b)) = (cpu_start, cpu_end) {
                cpu += b.saturating_sub(a);
            }
        }
        leaks = report
            .sites
            .iter()
            .filter(|s| s.verdict == Verdict::Leak)
            .count();
    }
    times.sort();
    let (min, median, max) = (times[0], times[times.len() / 2], *times.last().unwrap());
    let cpu = if threads == 1 {
        format!("  (CPU {:.2?})", cpu / times.len() as u32)
    } else {
        String::new()
    };
    let label = if threads == 1 {
        "1 thread ".to_string()
    } else {
        format!("default ({} threads)", threads_used())
    };
    println!("  {name:<58} {label:<20} median {median:>8.2?}  min {min:>8.2?}  max {max:>8.2?}{cpu}  [{leaks} leaks]");
}

fn threads_used() -> usize {
    (SITES / 4096).clamp(
        1,
        std::thread::available_parallelism()
            .map_or(1, |c| c.get())
            .min(8),
    )
}

fn main() {
    println!("observe() with {SITES} sites, history 30; {TIMED} windows timed after {WARM}");
    let typical = |i: usize| match i % 100 {
        0..=59 => Shape::Constant,
        60..=84 => Shape::Noisy,
        85..=94 => Shape::Sawtooth,
        95..=97 => Shape::Churn,
        _ => Shape::Leak,
    };
    let scenarios: [(&str, &dyn Fn(usize) -> Shape); 3] = [
        (
            "typical: 60% constant, 25% noisy, 10% saw, 3% churn, 2% leak",
            &typical,
        ),
        ("worst case: every site changes every window", &|_| {
            Shape::Noisy
        }),
        ("all constant", &|_| Shape::Constant),
    ];
    for (name, shape_of) in scenarios {
        for threads in [1, 0] {
            run(name, threads, shape_of);
        }
    }
}
