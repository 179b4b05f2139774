//! Poisson sampling by bytes (as tcmalloc and Go's heap profiler do): every byte allocated is
//! a sample point with the same small probability, so the bytes between two sample points
//! follow a geometric distribution of mean `R` (the sample rate), and a block of `s` bytes is
//! sampled when a sample point falls inside it: with probability `p(s) = 1 − e^(−s/R)`.
//! A sampled block then stands for `1/p(s)` blocks and `s/p(s)` bytes, which makes every sum of
//! those weights an unbiased estimate of the live blocks and bytes it replaces.
//!
//! The engine keeps, per thread, the bytes left until the next sample point: an allocation
//! subtracts its size and is sampled only when that count reaches zero (a decrement and a
//! test on the path that does not sample); then the next gap is drawn afresh (the distribution
//! is memoryless, so nothing carries over from the bytes of the block past the sample point).
//!
//! Zero-byte blocks are counted as one byte here, so that they too are sampled now and then and
//! the estimate of the number of blocks stays unbiased (their bytes estimate is 0).

/// The sample rate `sample=True` / `--sample` without a value mean: Go's heap profiler's, the
/// rate its users have run in production for years (mean 512 KiB between sample points).
pub const DEFAULT_RATE: u64 = 512 * 1024;

/// Fixed-point unit of an estimated block count: a sampled block of `s` bytes stands for
/// `1/p(s)` blocks, a fraction, and totals are added and removed as blocks come and go, so
/// they are kept as integers of this many units per block (exact, no float drift).
pub const BLOCK: u64 = 1 << 20;

/// The mean number of bytes between two sample points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleRate(u64);

/// What one sampled block stands for: estimated bytes, and blocks in [`BLOCK`] units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Weight {
    pub bytes: u64,
    pub blocks: u64,
}

impl Weight {
    /// The weight of a block in exact mode: itself.
    pub fn exact(size: u64) -> Weight {
        Weight { bytes: size, blocks: BLOCK }
    }

    /// What a traced block of `size` bytes counts for: itself in exact mode (`rate` None),
    /// what it stands for when sampled at `rate`.
    #[inline]
    pub fn of(size: u64, rate: Option<SampleRate>) -> Weight {
        match rate {
            None => Weight::exact(size),
            Some(rate) => rate.weight(size),
        }
    }
}

impl SampleRate {
    /// `None` for 0: a rate of 0 bytes means "not sampled" (exact mode).
    pub fn new(bytes: u64) -> Option<SampleRate> {
        (bytes > 0).then_some(SampleRate(bytes))
    }

    pub fn bytes(self) -> u64 {
        self.0
    }

    /// The probability that a block of `size` bytes is sampled.
    pub fn probability(self, size: u64) -> f64 {
        -(-(size.max(1) as f64) / self.0 as f64).exp_m1()
    }

    /// What a sampled block of `size` bytes stands for.
    pub fn weight(self, size: u64) -> Weight {
        let p = self.probability(size);
        Weight {
            bytes: (size as f64 / p).round() as u64,
            blocks: (BLOCK as f64 / p).round() as u64,
        }
    }

    /// Bytes up to and including the next sample point, from `uniform` in [0, 1): the
    /// geometric distribution with mean ~R, drawn by inversion (the ceiling of an exponential
    /// of mean R is geometric with per-byte probability 1 − e^(−1/R), the one `probability`
    /// assumes).
    pub fn gap(self, uniform: f64) -> u64 {
        let exponential = -(1.0 - uniform).ln() * self.0 as f64;
        (exponential.ceil() as u64).max(1)
    }
}

/// Converts a total in [`BLOCK`] units to blocks, rounded to the nearest.
pub fn blocks(units: u64) -> u64 {
    (units + BLOCK / 2) / BLOCK
}

/// A sampler with its own random stream: the engine's per-thread counter, as a value (tests,
/// simulations and benchmarks of the estimator).
pub struct Sampler {
    rate: SampleRate,
    left: u64,
    rng: fastrand::Rng,
}

impl Sampler {
    pub fn new(rate: SampleRate, seed: u64) -> Sampler {
        let mut rng = fastrand::Rng::with_seed(seed);
        let left = rate.gap(rng.f64());
        Sampler { rate, left, rng }
    }

    /// Whether the next allocation, of `size` bytes, is sampled.
    pub fn sample(&mut self, size: u64) -> bool {
        let size = size.max(1);
        if self.left > size {
            self.left -= size;
            return false;
        }
        self.left = self.rate.gap(self.rng.f64());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: u64 = 512 * 1024;

    #[test]
    fn weight_of_blocks_much_larger_than_the_rate_is_the_block_itself() {
        let rate = SampleRate::new(R).unwrap();
        let w = rate.weight(64 * R);
        assert_eq!(w.bytes, 64 * R);
        assert_eq!(w.blocks, BLOCK);
        assert!(rate.probability(64 * R) > 0.999_999);
    }

    #[test]
    fn weight_of_small_blocks_is_about_the_rate() {
        let rate = SampleRate::new(R).unwrap();
        for size in [1u64, 16, 64, 500, 4096] {
            let w = rate.weight(size);
            // s / (1 − e^(−s/R)) = R + s/2 + s²/(12R) + O(s⁴/R³)
            let s = size as f64;
            let expected = R as f64 + s / 2.0 + s * s / (12.0 * R as f64);
            assert!((w.bytes as f64 - expected).abs() <= 1.0, "{size}: {}", w.bytes);
            let blocks = w.blocks as f64 / BLOCK as f64;
            assert!((blocks * size as f64 - expected).abs() / expected < 1e-3, "{size}");
        }
        assert_eq!(rate.weight(0).bytes, 0, "a zero-byte block stands for no bytes");
        assert!(rate.weight(0).blocks > 0, "but for blocks");
    }

    #[test]
    fn weight_at_the_rate() {
        let rate = SampleRate::new(R).unwrap();
        let p = 1.0 - (-1.0f64).exp();
        assert_eq!(rate.weight(R).bytes, (R as f64 / p).round() as u64);
        assert_eq!(rate.weight(R).blocks, (BLOCK as f64 / p).round() as u64);
    }

    #[test]
    fn gaps_have_the_rate_as_mean() {
        let rate = SampleRate::new(4096).unwrap();
        let mut rng = fastrand::Rng::with_seed(7);
        let n = 200_000;
        let mean = (0..n).map(|_| rate.gap(rng.f64()) as f64).sum::<f64>() / n as f64;
        // Mean of the ceiling of an exponential of mean 4096: ~4096.5; sd 4096/sqrt(n) ≈ 9.
        assert!((mean - 4096.5).abs() < 40.0, "{mean}");
        assert_eq!(rate.gap(0.0), 1, "never a gap of 0 bytes");
    }

    /// The estimate of live bytes and blocks, over many seeds, converges to the exact figure
    /// within its standard error, for a mix of sizes below, around and above the rate.
    #[test]
    fn estimates_are_unbiased_over_many_seeds() {
        let rate = SampleRate::new(64 * 1024).unwrap();
        let sizes: Vec<u64> = (0..20_000u64)
            .map(|i| match i % 10 {
                0 => 0,
                1..=5 => 16 + (i * 7919) % 300,
                6..=8 => 2_000 + (i * 104_729) % 30_000,
                _ => 50_000 + (i * 1_299_709) % 400_000,
            })
            .collect();
        let exact_bytes: u64 = sizes.iter().sum();
        let exact_blocks = sizes.len() as f64;
        let runs = 400;
        let (mut b, mut b2, mut n, mut n2) = (0.0, 0.0, 0.0, 0.0);
        for seed in 0..runs {
            let mut sampler = Sampler::new(rate, seed);
            let (mut bytes, mut units) = (0u64, 0u64);
            for &s in &sizes {
                if sampler.sample(s) {
                    let w = rate.weight(s);
                    bytes += w.bytes;
                    units += w.blocks;
                }
            }
            let (bytes, count) = (bytes as f64, units as f64 / BLOCK as f64);
            b += bytes;
            b2 += bytes * bytes;
            n += count;
            n2 += count * count;
        }
        let runs = runs as f64;
        for (what, sum, sum2, exact) in
            [("bytes", b, b2, exact_bytes as f64), ("blocks", n, n2, exact_blocks)]
        {
            let mean = sum / runs;
            let sd = (sum2 / runs - mean * mean).max(0.0).sqrt();
            let stderr = sd / runs.sqrt();
            assert!(
                (mean - exact).abs() < 4.0 * stderr,
                "{what}: mean {mean:.0} vs exact {exact:.0} (stderr {stderr:.0})"
            );
        }
    }
}
