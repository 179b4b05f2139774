//! The Mann–Kendall trend test, one-sided for an *increasing* trend.
//!
//! For a series `x_1..x_n` (in time order) the statistic is
//! `S = Σ_{i<j} sign(x_j − x_i)`: concordant pairs minus discordant ones. Under "no trend"
//! (the values are exchangeable) `S` is centred on 0 with
//! `Var(S) = [n(n−1)(2n+5) − Σ_t t(t−1)(2t+5)] / 18`, the sum running over groups of `t` equal
//! values (tie correction).
//!
//! p-value of "increasing" (`P(S' ≥ S)` under no trend):
//! * **exact** when `n ≤ 10` and there are no ties: with no ties `S = N − 2D` where `N = n(n−1)/2`
//!   and `D` is the number of inversions, whose distribution over the `n!` equally likely orders
//!   is given by the Mahonian numbers (table built at compile time);
//! * otherwise the **normal approximation with continuity correction**:
//!   `Z = (S − 1)/√Var` for `S > 0`, `(S + 1)/√Var` for `S < 0`, `0` for `S = 0`; `p = 1 − Φ(Z)`.
//!   (With ties and `n ≤ 10` this is the usual practice; it is slightly conservative.)
//! * a series whose values are all equal has no evidence of anything: `p = 1`.
//!
//! The variance can be multiplied by a factor (see [`super::autocorrelation`]) to account for
//! serially correlated data; the exact path is only used with a factor of 1.
//!
//! [`MkAccumulator`] keeps `S` and the tie sum of a sliding window up to date in `O(n)` per new
//! sample instead of `O(n²)`: the detector runs it on every site at every window.

/// Largest `n` for which the exact distribution is used (`10! < 2^32`).
pub const EXACT_MAX_N: usize = 10;
const MAX_INV: usize = EXACT_MAX_N * (EXACT_MAX_N - 1) / 2;

/// `MAHONIAN_CDF[n][d]`: number of permutations of `n` items with at most `d` inversions.
static MAHONIAN_CDF: [[u32; MAX_INV + 1]; EXACT_MAX_N + 1] = mahonian_cdf();

const fn mahonian_cdf() -> [[u32; MAX_INV + 1]; EXACT_MAX_N + 1] {
    // counts[n][d]: permutations of n items with exactly d inversions.
    let mut counts = [[0u32; MAX_INV + 1]; EXACT_MAX_N + 1];
    counts[0][0] = 1;
    counts[1][0] = 1;
    let mut n = 2;
    while n <= EXACT_MAX_N {
        // The n-th item adds 0..n-1 inversions.
        let mut d = 0;
        while d <= MAX_INV {
            let mut k = 0;
            let mut total = 0u32;
            while k < n && k <= d {
                total += counts[n - 1][d - k];
                k += 1;
            }
            counts[n][d] = total;
            d += 1;
        }
        n += 1;
    }
    let mut cdf = [[0u32; MAX_INV + 1]; EXACT_MAX_N + 1];
    let mut n = 0;
    while n <= EXACT_MAX_N {
        let mut acc = 0u32;
        let mut d = 0;
        while d <= MAX_INV {
            acc += counts[n][d];
            cdf[n][d] = acc;
            d += 1;
        }
        n += 1;
    }
    cdf
}

/// `t(t−1)(2t+5)`: one group of `t` tied values' share of the variance correction.
#[inline]
pub fn tie_weight(t: u64) -> i64 {
    (t * t.saturating_sub(1) * (2 * t + 5)) as i64
}

/// `S` and the tie sum `Σ t(t−1)(2t+5)` of a series, in `O(n²)`.
pub fn statistic(x: &[u64]) -> (i64, i64) {
    let mut acc = MkAccumulator::default();
    for (j, &v) in x.iter().enumerate() {
        acc.push(&x[..j], v);
    }
    (acc.s, acc.tie_term)
}

/// `S` and tie sum of a sliding window, updated one sample at a time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MkAccumulator {
    pub s: i64,
    pub tie_term: i64,
}

impl MkAccumulator {
    /// Appends `v` to a window currently holding `window` (oldest first).
    #[inline]
    pub fn push(&mut self, window: &[u64], v: u64) {
        let (mut gt, mut lt) = (0i64, 0i64);
        for &x in window {
            gt += (v > x) as i64;
            lt += (v < x) as i64;
        }
        self.s += gt - lt;
        let equal = window.len() as u64 - (gt + lt) as u64;
        if equal > 0 {
            self.tie_term += tie_weight(equal + 1) - tie_weight(equal);
        }
    }

    /// Removes `window[0]` from a window holding `window` (oldest first).
    #[inline]
    pub fn pop_front(&mut self, window: &[u64]) {
        let Some((&old, rest)) = window.split_first() else {
            return;
        };
        let (mut gt, mut lt) = (0i64, 0i64);
        for &x in rest {
            gt += (x > old) as i64;
            lt += (x < old) as i64;
        }
        self.s -= gt - lt;
        let equal = rest.len() as u64 - (gt + lt) as u64;
        if equal > 0 {
            self.tie_term -= tie_weight(equal + 1) - tie_weight(equal);
        }
    }
}

/// `Var(S)` under "no trend", tie-corrected.
#[inline]
pub fn variance(n: usize, tie_term: i64) -> f64 {
    let n = n as f64;
    ((n * (n - 1.0) * (2.0 * n + 5.0)) - tie_term as f64) / 18.0
}

/// One-sided p-value of "increasing" for a window of `n` samples with statistic `s` and tie sum
/// `tie_term`; `variance_factor` (≥ 1 in practice) inflates `Var(S)` for serial correlation.
pub fn p_increasing(n: usize, s: i64, tie_term: i64, variance_factor: f64) -> f64 {
    if n < 2 {
        return 1.0;
    }
    let var = variance(n, tie_term) * variance_factor;
    if var <= 0.0 {
        return 1.0; // all values equal
    }
    if n <= EXACT_MAX_N && tie_term == 0 && variance_factor == 1.0 {
        let pairs = (n * (n - 1) / 2) as i64;
        // S >= s  <=>  D <= (N - s) / 2 (S and N have the same parity without ties).
        let d_max = (pairs - s).div_euclid(2);
        if d_max < 0 {
            return 0.0;
        }
        let d_max = (d_max as usize).min(MAX_INV);
        let total: u32 = (1..=n as u32).product();
        return MAHONIAN_CDF[n][d_max] as f64 / total as f64;
    }
    let z = match s {
        0 => 0.0,
        s if s > 0 => (s - 1) as f64 / var.sqrt(),
        s => (s + 1) as f64 / var.sqrt(),
    };
    normal_sf(z)
}

/// `1 − Φ(z)`, the upper tail of the standard normal distribution.
#[inline]
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z * std::f64::consts::FRAC_1_SQRT_2)
}

/// Complementary error function (Numerical Recipes' Chebyshev fit, relative error < 1.2e-7).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute_p(x: &[u64]) -> f64 {
        // Enumerate all permutations of distinct values: P(S' >= S).
        fn perms(v: &mut Vec<u64>, k: usize, out: &mut Vec<Vec<u64>>) {
            if k == v.len() {
                out.push(v.clone());
                return;
            }
            for i in k..v.len() {
                v.swap(k, i);
                perms(v, k + 1, out);
                v.swap(k, i);
            }
        }
        let (s, _) = statistic(x);
        let mut all = Vec::new();
        perms(&mut x.to_vec(), 0, &mut all);
        let ge = all.iter().filter(|p| statistic(p).0 >= s).count();
        ge as f64 / all.len() as f64
    }

    #[test]
    fn statistic_counts_concordant_minus_discordant() {
        assert_eq!(statistic(&[1, 2, 3, 4]), (6, 0));
        assert_eq!(statistic(&[4, 3, 2, 1]), (-6, 0));
        assert_eq!(statistic(&[1, 3, 2]), (1, 0));
        // Ties: one group of 2 (2·1·9 = 18), one of 3 (3·2·11 = 66).
        assert_eq!(statistic(&[5, 5, 7, 7, 7]).1, 18 + 66);
        assert_eq!(statistic(&[5, 5, 7, 7, 7]).0, 6);
    }

    #[test]
    fn exact_p_matches_enumeration() {
        let series: [&[u64]; 5] = [
            &[1, 2, 3, 4, 5],
            &[3, 1, 2, 5, 4],
            &[5, 4, 3, 2, 1],
            &[2, 1, 4, 3, 6, 5],
            &[1, 3, 2],
        ];
        for x in series {
            let (s, t) = statistic(x);
            let p = p_increasing(x.len(), s, t, 1.0);
            assert!(
                (p - brute_p(x)).abs() < 1e-12,
                "{x:?}: {p} vs {}",
                brute_p(x)
            );
        }
        // Known value: a perfectly increasing series of 10 has p = 1/10!.
        let x: Vec<u64> = (0..10).collect();
        let (s, t) = statistic(&x);
        assert!((p_increasing(10, s, t, 1.0) - 1.0 / 3_628_800.0).abs() < 1e-15);
    }

    #[test]
    fn normal_approximation_is_close_to_exact_at_ten() {
        // Same S, n = 10: the continuity-corrected normal tail is within 0.01 of the exact one.
        for s in (1..=45).step_by(2) {
            let exact = p_increasing(10, s, 0, 1.0);
            let approx = normal_sf((s - 1) as f64 / variance(10, 0).sqrt());
            assert!((exact - approx).abs() < 0.011, "S={s}: {exact} vs {approx}");
        }
    }

    #[test]
    fn all_equal_is_no_evidence() {
        let (s, t) = statistic(&[7; 20]);
        assert_eq!(s, 0);
        assert_eq!(p_increasing(20, s, t, 1.0), 1.0);
    }

    #[test]
    fn erfc_known_values() {
        assert!((erfc(0.0) - 1.0).abs() < 1e-7);
        assert!((erfc(1.0) - 0.157_299_207).abs() < 1e-7);
        assert!((erfc(-1.0) - 1.842_700_793).abs() < 1e-7);
        assert!((normal_sf(2.326_347_874) - 0.01).abs() < 1e-6);
    }

    #[test]
    fn accumulator_matches_batch_over_a_sliding_window() {
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut data = Vec::new();
        for _ in 0..200 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            data.push(rng % 6); // many ties
        }
        let w = 30;
        let mut acc = MkAccumulator::default();
        let mut window: Vec<u64> = Vec::new();
        for &v in &data {
            if window.len() == w {
                acc.pop_front(&window);
                window.remove(0);
            }
            acc.push(&window, v);
            window.push(v);
            let (s, t) = statistic(&window);
            assert_eq!((acc.s, acc.tie_term), (s, t));
        }
    }
}
