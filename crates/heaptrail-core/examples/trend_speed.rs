//! Times `TrendDetector::observe` with 20,000 sites and a full history (target: well under 5 ms
//! per window in release).
//!
//! `cargo run --release -p heaptrail-core --example trend_speed`

use heaptrail_core::trend::{ProcessSample, SiteSample, TrendConfig, TrendDetector, Verdict};
use std::time::{Duration, Instant};

const SITES: usize = 20_000;
const WARM: usize = 40;
const TIMED: usize = 60;

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone, Copy)]
enum Shape {
    Constant,
    Noisy,
    Sawtooth,
    Churn,
    Leak,
}

fn size(shape: Shape, base: f64, w: usize, rng: &mut Rng) -> Option<u64> {
    let v = match shape {
        Shape::Constant => base,
        Shape::Noisy => base * (1.0 + 0.1 * (rng.unit() - 0.5)),
        Shape::Sawtooth => base * (1.0 + (w % 7) as f64 / 7.0),
        Shape::Churn => {
            if rng.unit() < 0.3 {
                base
            } else {
                return None;
            }
        }
        Shape::Leak => base + 100_000.0 * w as f64 + base * 0.02 * rng.unit(),
    };
    Some(v as u64)
}

fn run(name: &str, shape_of: impl Fn(usize) -> Shape) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let shapes: Vec<Shape> = (0..SITES).map(&shape_of).collect();
    let bases: Vec<f64> = (0..SITES).map(|_| 1000.0 + rng.unit() * 50_000_000.0).collect();
    let mut d = TrendDetector::new(TrendConfig::default());
    let mut times = Vec::new();
    let mut leaks = 0;
    for w in 0..WARM + TIMED {
        let sites: Vec<SiteSample> = (0..SITES)
            .filter_map(|i| size(shapes[i], bases[i], w, &mut rng).map(|s| SiteSample { key: i as u64 * 0x9E37_79B9 + 1, size: s, count: 1 + s / 64 }))
            .collect();
        let process = ProcessSample { rss_bytes: 2 << 30, traced_bytes: 1 << 30, traced_peak_bytes: 3 << 29 };
        let start = Instant::now();
        let report = d.observe(w as f64 * 10.0, process, &sites);
        let elapsed = start.elapsed();
        if w >= WARM {
            times.push(elapsed);
        }
        leaks = report.sites.iter().filter(|s| s.verdict == Verdict::Leak).count();
    }
    times.sort();
    let min = times[0];
    let median = times[times.len() / 2];
    let max = *times.last().unwrap();
    let mean: Duration = times.iter().sum::<Duration>() / times.len() as u32;
    println!("{name}\n    min {min:>8.2?}  median {median:>8.2?}  mean {mean:>8.2?}  max {max:>8.2?}  ({} sites tracked, {leaks} leaks)", d.tracked_sites());
}

fn main() {
    println!("observe() with {SITES} sites, history 30, {TIMED} timed windows after {WARM}");
    println!("(min is the least disturbed by other processes on the machine):");
    run("typical (60% constant, 25% noisy, 10% saw, 3% churn, 2% leak)", |i| match i % 100 {
        0..=59 => Shape::Constant,
        60..=84 => Shape::Noisy,
        85..=94 => Shape::Sawtooth,
        95..=97 => Shape::Churn,
        _ => Shape::Leak,
    });
    if std::env::var_os("TREND_SPEED_TYPICAL_ONLY").is_none() {
        run("worst case (every site changes every window, random noise)", |_| Shape::Noisy);
        run("all constant", |_| Shape::Constant);
    }
}
