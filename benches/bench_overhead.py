"""Tracing overhead: an allocation-heavy loop, untraced vs stdlib tracemalloc vs heaptrail vs memray.

What it measures: wall time of one loop run 30 frames deep (plain recursion to depth 30, then the
loop), in a fresh child process per run. Each iteration creates a small list, a dict, an
instance of a small class and strings; the instance (holding the dict, list and one str) is
appended to a bounded list that drops its oldest half at 10,000 entries, so blocks are both kept
alive for a while and freed; the other temporaries are freed at once. Tracing starts before the timer, so the time
covers allocation hooks, frame capture and trace bookkeeping — the cost a traced program pays.
Run at nframe 1, 10 and 25 (the loop is deeper than 25 frames, so every traceback is full),
exact and in sampled mode (``start(nframe, sample=R)``) at three rates; memray (PyPI, its
Tracker with ``memray run``'s defaults) once, as it keeps whole stacks.

Why: heaptrail promises to be cheap enough to leave on; DESIGN.md's targets are <= 1.5x untraced
at nframe=1 and <= 2.5x at nframe=25 (stdlib tracemalloc: 8-12x and 36-62x on this machine).
Sampled mode's target (issue 10): <= 1.05x at nframe 25.
Ratios are median traced time / median untraced time from the same invocation.

--counted: the same configurations (memray aside) counted by valgrind's cachegrind instead of
timed: instructions and cache misses per iteration (a run of --iterations minus a run of none,
so start-up is excluded), which a busy or throttled machine does not change. On a shared VM
the timed ratios swing by more than sampled mode's target.
"""

import json
import os
import sys
import time

import _common

DEPTH = 30
NFRAMES = (1, 10, 25)
TARGETS = {1: 1.5, 25: 2.5}       # heaptrail / untraced, from DESIGN.md
SAMPLED_TARGET = {25: 1.05}       # sampled heaptrail / untraced (issue 10)
SAMPLES = (64 << 10, 512 << 10, 4 << 20)  # sampled mode's rates: below, at and above the default
REFERENCE = {1: "8-12x", 25: "36-62x"}  # stdlib on this machine, from DESIGN.md


class Item:
    def __init__(self, name, payload):
        self.name = name
        self.payload = payload


def loop(iterations):
    kept, label = [], ""
    for i in range(iterations):
        values = [i, i + 1, i + 2]                   # list (+ item array)
        record = {"id": i, "values": values}         # dict
        name = "item-" + str(i)                      # two strs, one freed at once
        item = Item(name, record)                    # instance (+ its attribute storage)
        label = f"{name}:{len(values)}"              # str, freed at the next iteration
        kept.append(item)
        if len(kept) >= 10_000:
            del kept[:5_000]                         # frees the oldest half
    return len(kept) + len(label)


def descend(depth, iterations):
    if depth > 1:
        return descend(depth - 1, iterations)
    return loop(iterations)


def child(config):
    tracer = None
    if config["tracer"] == "memray":
        return memray_child(config)
    if config.get("sample"):
        tracer = _common.import_tracer("heaptrail")
        tracer.start(config["nframe"], sample=config["sample"])
    elif config["tracer"] != "untraced":
        tracer = _common.import_tracer(config["tracer"])
        tracer.start(config["nframe"])
    t0 = time.perf_counter()
    descend(DEPTH, config["iterations"])
    elapsed = time.perf_counter() - t0
    limit = None
    if tracer is not None:
        limit = tracer.get_traceback_limit()  # sanity: the limit really was applied
        tracer.stop()
    return {"seconds": elapsed, "traceback_limit": limit}


def memray_child(config):
    """The loop under memray's Tracker with `memray run`'s defaults (Python frames only,
    pymalloc on), to a file deleted after; memray keeps whole stacks (no nframe)."""
    import os
    import tempfile

    import memray
    with tempfile.TemporaryDirectory(prefix="bench-memray-") as tmp:
        with memray.Tracker(os.path.join(tmp, "capture.bin")):
            t0 = time.perf_counter()
            descend(DEPTH, config["iterations"])
            elapsed = time.perf_counter() - t0
    return {"seconds": elapsed, "traceback_limit": None}


def counted_main(args, env, configs):
    """The configurations counted by cachegrind: per iteration, traced / untraced."""
    valgrind = _common.valgrind_or_exit("bench_overhead")

    def child_run(tracer, nframe, iterations):
        sample = int(tracer.split(":")[1]) if tracer.startswith("sampled:") else 0
        config = {"tracer": tracer, "nframe": nframe, "sample": sample, "iterations": iterations}
        return ([sys.executable, os.path.abspath(__file__), "--child", json.dumps(config)],
                _common.child_env(), None)

    runs = {(c, n): child_run(*c, n) for c in configs for n in (args.iterations, 0)}
    counts = _common.count_all(valgrind, runs, args.jobs,
                               lambda key: f"{key[0][0]} nframe={key[0][1]}, {key[1]} iterations")
    per_iteration = {c: _common.per_unit(counts[(c, args.iterations)][0], counts[(c, 0)][0],
                                         args.iterations) for c in configs}
    base = per_iteration[("untraced", None)]

    def ratios(c):
        counted = per_iteration[c]
        return (counted["Ir"] / base["Ir"],
                _common.estimated_cycles(counted) / _common.estimated_cycles(base))

    def cell(c):
        ir, cycles = ratios(c)
        return f"{ir:.3f}x ({cycles:.3f}x)"

    kinds = [t for t, n in configs if n == args.nframe[0]]
    rows = [[n] + [cell((t, n)) for t in kinds] for n in args.nframe]
    verdicts = [f"sampled mode at nframe {n}: target <= {t}x untraced; "
                + ", ".join(f"{_kind_label(t2)} {ratios((t2, n))[1]:.3f}x "
                            f"{'PASS' if ratios((t2, n))[1] <= t else 'MISS'}"
                            for t2 in kinds if t2.startswith("sampled:"))
                for n, t in SAMPLED_TARGET.items() if n in args.nframe]
    text = "\n".join([
        _common.header(env, "bench_overhead --counted: allocation-heavy loop at stack depth "
                            f"{DEPTH}, {args.iterations} iterations, counted by cachegrind"),
        f"untraced: {base['Ir']:,.0f} instructions per iteration; cell = traced / untraced "
        "per iteration, instructions (estimated cycles = Ir + 10 x L1 misses + 100 x LL "
        "misses, a model, not a measurement)", "",
        _common.table(["nframe"] + [_kind_label(t) for t in kinds], rows), ""] + verdicts)
    _common.emit(args, text, {
        "benchmark": "overhead-counted", "environment": env, "iterations": args.iterations,
        "depth": DEPTH, "per_iteration": {f"{t}|{n}": v for (t, n), v in per_iteration.items()},
        "ratios": {f"{t}|{n}": dict(zip(("Ir", "cycles"), ratios((t, n))))
                   for (t, n) in configs if t != "untraced"}})


def _kind_label(tracer):
    if tracer.startswith("sampled:"):
        return f"sampled {int(tracer.split(':')[1]) >> 10}K"
    return {"heaptrail": "heaptrail (exact)"}.get(tracer, tracer)


def main():
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=200_000,
                   help="loop iterations per run (default 200000, about 0.2 s untraced)")
    p.add_argument("--nframe", type=int, nargs="+", default=list(NFRAMES),
                   help="traceback limits to measure (default 1 10 25)")
    p.add_argument("--sample", type=int, nargs="*", default=list(SAMPLES),
                   help="sampled mode's rates in bytes (default 65536 524288 4194304; "
                        "none: exact mode only)")
    p.add_argument("--no-memray", action="store_true",
                   help="leave memray out (by default it is installed from PyPI if missing)")
    p.add_argument("--counted", action="store_true",
                   help="count instructions and cache misses with valgrind's cachegrind instead "
                        "of timing (untraced, stdlib, exact and sampled heaptrail; no memray; "
                        "--iterations defaults to 50,000 here)")
    _common.add_jobs_argument(p)
    args = p.parse_args()
    if args.child:
        _common.child_result(child(json.loads(args.child)))
        return
    if args.counted and "--iterations" not in sys.argv:
        args.iterations = 50_000
    if args.quick:
        args.iterations, args.repeat = min(args.iterations, 20_000 if not args.counted else 2_000), 1
    if args.counted:
        kinds = ["stdlib", "heaptrail"] + [f"sampled:{r}" for r in args.sample]
        counted_main(args, _common.environment(),
                     [("untraced", None)] + [(t, n) for n in args.nframe for t in kinds])
        return
    if not args.no_memray:
        _common.ensure_packages({"memray": "memray"})

    env = _common.environment()
    kinds = ["stdlib", "heaptrail"] + [f"sampled:{r}" for r in args.sample]
    configs = ([("untraced", None)] + ([] if args.no_memray else [("memray", None)])
               + [(t, n) for n in args.nframe for t in kinds])
    times = {c: [] for c in configs}
    for rep in range(args.repeat):  # interleaved, so slow drifts hit every configuration alike
        for tracer, nframe in configs:
            _common.progress(f"run {rep + 1}/{args.repeat}: {tracer}"
                             + (f" nframe={nframe}" if nframe else ""))
            sample = int(tracer.split(":")[1]) if tracer.startswith("sampled:") else 0
            r = _common.run_child(__file__, {"tracer": tracer, "nframe": nframe,
                                             "sample": sample, "iterations": args.iterations})
            if nframe is not None and r["traceback_limit"] != nframe:
                raise SystemExit(f"{tracer}: traceback limit {r['traceback_limit']} != {nframe}")
            times[(tracer, nframe)].append(r["seconds"])

    base = _common.summary(times[("untraced", None)])
    memray = None if args.no_memray else _common.summary(times[("memray", None)])
    memray_ratio = None if memray is None else memray["median"] / base["median"]
    rows, results = [], []
    for n in args.nframe:
        std = _common.summary(times[("stdlib", n)])
        ht = _common.summary(times[("heaptrail", n)])
        std_ratio = std["median"] / base["median"]
        ht_ratio = ht["median"] / base["median"]
        target = TARGETS.get(n)
        verdict = None if target is None else ("PASS" if ht_ratio <= target else "MISS")
        sampled = {r: _common.summary(times[(f"sampled:{r}", n)]) for r in args.sample}
        sampled_ratio = {r: s["median"] / base["median"] for r, s in sampled.items()}
        rows.append([n, _ms(base), _ms(std), _common.fmt_ratio(std_ratio), _ms(ht),
                     _common.fmt_ratio(ht_ratio),
                     "-" if target is None else f"<= {target}x", verdict or "-",
                     REFERENCE.get(n, "-")]
                    + [_common.fmt_ratio(sampled_ratio[r]) for r in args.sample]
                    + ([] if memray is None else [_common.fmt_ratio(memray_ratio)]))
        results.append({"nframe": n, "untraced_s": base, "stdlib_s": std, "heaptrail_s": ht,
                        "stdlib_ratio": std_ratio, "heaptrail_ratio": ht_ratio,
                        "heaptrail_speedup_vs_stdlib": std["median"] / ht["median"],
                        "target_ratio": target, "verdict": verdict,
                        "sampled": [{"sample": r, "seconds": sampled[r],
                                     "ratio": sampled_ratio[r],
                                     "target_ratio": SAMPLED_TARGET.get(n)}
                                    for r in args.sample]})

    text = "\n".join([
        _common.header(env, "bench_overhead: allocation-heavy loop at stack depth "
                            f"{DEPTH}, {args.iterations} iterations"),
        f"time = median (min) of {args.repeat} fresh process(es) per configuration; "
        "ratio = median / median untraced",
        "",
        _common.table(["nframe", "untraced", "stdlib", "stdlib/untr", "heaptrail",
                       "heaptrail/untr", "target", "result", "stdlib (DESIGN)"]
                      + [f"sampled {r >> 10}K/untr" for r in args.sample]
                      + ([] if memray is None else ["memray/untr"]), rows,
                      align="r" * (9 + len(args.sample) + (memray is not None))),
        "" if memray is None else "memray: its Tracker with `memray run`'s defaults, whole "
                                  "stacks (no frame limit), the same in every row",
    ] + [f"sampled mode at nframe {n}: target <= {t}x untraced; "
         + ", ".join(f"{r >> 10}K {x['ratio']:.2f}x "
                     f"{'PASS' if x['ratio'] <= t else 'MISS'}"
                     for r, x in ((e["sample"], e) for e in res["sampled"]))
         for res in results for n, t in SAMPLED_TARGET.items() if res["nframe"] == n])
    _common.emit(args, text, {"benchmark": "overhead", "environment": env,
                              "iterations": args.iterations, "depth": DEPTH,
                              "repeat": args.repeat, "results": results,
                              "memray_s": memray, "memray_ratio": memray_ratio})


def _ms(s):
    return _common.fmt_median_min(s["median"], s["min"])


if __name__ == "__main__":
    sys.exit(main())
