"""The smallest leak the watcher can see, per sample rate and window length.

What it computes: for each sample rate R (exact mode too) and each watch interval T, the
smallest leak rate (bytes per second) that heaptrail's own trend detector
(`heaptrail._native.TrendDetector`, default settings, as `watch()` uses it) names a `leak`
within `--windows` windows in at least 90% of the runs, and how many windows it took there.

How: the leaking site's series is simulated exactly as sampled mode measures it. The site
keeps `--block` byte blocks at `g` bytes per second and never frees them; each new block holds
a sample point with probability p = 1 - exp(-s/R) (the per-thread byte sampler is a Poisson
process: blocks are sampled independently) and, once sampled, stays in every later window at
its weight s/p. So window k's estimate is (s/p) x Binomial(blocks so far, p): the noise a
sampled watcher really sees, fed to the real detector. `--churn` adds a temporary population at
the same site (the same bytes live at every window, different blocks: sampled afresh), the
other noise a real site has. Exact mode has neither kind of noise; its limit is the detector's
own thresholds (min_rate 64 B/s, min_growth_bytes 32 KiB over the tested windows).

Why: issue 10 asks for this table in the docs, and the default rate is chosen from it.
No timing here: the numbers do not depend on the machine.
"""

import math
import random
import sys

import _common

RATES = (0, 64 << 10, 256 << 10, 512 << 10, 1 << 20, 4 << 20)
INTERVALS = (1.0, 10.0, 60.0)


def binomial(rng, n, p):
    """A Binomial(n, p) draw for large n and any p (normal approximation when both tails are
    wide, else counting geometric gaps)."""
    if n <= 0 or p <= 0:
        return 0
    if p >= 1:
        return n
    mean = n * p
    if mean > 50 and n * (1 - p) > 50:
        return max(0, min(n, round(rng.gauss(mean, math.sqrt(mean * (1 - p))))))
    # Gaps between successes are geometric: skip straight from one success to the next.
    count, i, log_q = 0, -1, math.log1p(-p)
    while True:
        i += 1 + int(math.log(1.0 - rng.random()) / log_q)
        if i >= n:
            return count
        count += 1


def flagged_at(rate, interval, leak_bps, block, churn, windows, seed):
    """The window at which the detector first names the site a leak, or None."""
    from heaptrail import _native

    rng = random.Random(seed)
    detector = _native.TrendDetector()
    p = 1.0 if rate == 0 else -math.expm1(-block / rate)
    weight = block / p
    per_window = leak_bps * interval / block  # blocks leaked per window (fractional kept)
    leaked = carried = 0.0
    sampled = 0
    churn_blocks = int(churn / block)
    base = 50 << 20  # the rest of the process, steady
    for w in range(1, windows + 1):
        carried += per_window
        new = int(carried)
        carried -= new
        leaked += new
        sampled += binomial(rng, new, p)
        temporary = binomial(rng, churn_blocks, p)
        size = int((sampled + temporary) * weight)
        count = int((sampled + temporary) / p)
        report = detector.observe(w * interval, base + int(leaked * block), base + size,
                                  base + size, [(1, size, count), (2, base, base // 64)],
                                  sample_rate=rate)
        for site in report["sites"]:
            if site["key"] == 1 and site["verdict"] == "leak":
                return w
    return None


def smallest_rate(rate, interval, args):
    """Bisection (in log space) for the smallest leak rate flagged in >= 90% of runs."""
    def ok(bps):
        hits = [flagged_at(rate, interval, bps, args.block, args.churn, args.windows, seed)
                for seed in range(args.runs)]
        found = sorted(h for h in hits if h is not None)
        return len(found) >= math.ceil(0.9 * args.runs), found

    lo, hi = 1.0, 1e9
    good, found = ok(hi)
    if not good:
        return None, None
    for _ in range(args.steps):
        mid = math.sqrt(lo * hi)
        good, f = ok(mid)
        if good:
            hi, found = mid, f
        else:
            lo = mid
    return hi, found[len(found) // 2]


def fmt_rate(bps):
    if bps is None:
        return "-"
    for unit, scale in (("MB/s", 1e6), ("KB/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:.3g} {unit}"
    return f"{bps:.3g} B/s"


def main():
    p = _common.parser(__doc__.split("\n\n")[0], repeat=1)
    p.add_argument("--block", type=int, default=200,
                   help="bytes per leaked block (default 200: a small dict or instance)")
    p.add_argument("--churn", type=int, default=0,
                   help="bytes of temporary blocks live at the site at each window (default 0)")
    p.add_argument("--windows", type=int, default=30,
                   help="windows allowed to name the leak (default 30, the detector's history)")
    p.add_argument("--runs", type=int, default=20,
                   help="simulated runs per leak rate (default 20; 90%% must name it)")
    p.add_argument("--steps", type=int, default=14,
                   help="bisection steps per cell (default 14: ~5%% resolution)")
    p.add_argument("--rates", type=int, nargs="+", default=list(RATES),
                   help="sample rates in bytes, 0 for exact (default 0 64K 256K 512K 1M 4M)")
    p.add_argument("--intervals", type=float, nargs="+", default=list(INTERVALS),
                   help="watch intervals in seconds (default 1 10 60)")
    args = p.parse_args()
    if args.quick:
        args.runs, args.steps, args.rates, args.intervals = 4, 6, [0, 512 << 10], [10.0]
    env = _common.environment()
    rows, results = [], []
    for rate in args.rates:
        row = ["exact" if rate == 0 else f"{rate >> 10} KiB"]
        for interval in args.intervals:
            _common.progress(f"rate {row[0]}, interval {interval:g} s")
            bps, windows = smallest_rate(rate, interval, args)
            row.append("-" if bps is None else f"{fmt_rate(bps)} (w{windows})")
            results.append({"sample_rate": rate, "interval_s": interval,
                            "smallest_leak_bps": bps, "median_windows": windows})
        rows.append(row)
    text = "\n".join([
        _common.header(env, "bench_detection_limit: smallest leak named within "
                            f"{args.windows} windows in >= 90% of {args.runs} runs"),
        f"leaked blocks of {args.block} B, churn at the site {args.churn} B; cell = leak rate "
        "(median window of the verdict)",
        "",
        _common.table(["sample rate"] + [f"every {t:g} s" for t in args.intervals], rows),
    ])
    _common.emit(args, text, {"benchmark": "detection_limit", "environment": env,
                              "block": args.block, "churn": args.churn,
                              "windows": args.windows, "runs": args.runs,
                              "results": results})


if __name__ == "__main__":
    sys.exit(main())
