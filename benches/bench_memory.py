"""Memory cost per live traced block: extra RSS under stdlib tracemalloc and heaptrail.

What it measures: a fresh child allocates N small objects (``object()``: one 16-byte block each,
all from one line) and keeps them alive; RSS is read from /proc/self/statm just before and just
after. It does this untraced, under stdlib tracemalloc (nframe=1), under heaptrail (nframe=1)
and under heaptrail's sampled mode at a rate of 1 byte (every block sampled: the memory per
live sampled block).
The tracer's bookkeeping per block is (RSS growth traced - RSS growth untraced) / N, medians over
the repeats. The tracer's own accounting, ``get_tracemalloc_memory()`` growth / N, and the traced
bytes per block (``get_traced_memory()`` growth / N, should be 16) are shown as cross-checks.
RSS counts what the process really touched: for heaptrail mostly the 16-byte header it puts
in front of each traced block (a 16-byte object takes a 32-byte block), for stdlib its hash
table, empty slots included, so that number depends a little on where N falls between two
table sizes; try several ``--blocks``.

Why: leaving a tracer on in a service holding millions of objects must not add much memory.
DESIGN.md's target is <= 40 B of RSS per live trace (stdlib tracemalloc: ~102 B).
"""

import gc
import json
import os
import sys

import _common

TARGET_B = 40
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def child(config):
    n = config["blocks"]
    tm = None
    if config["tracer"] == "sampled":
        # Sampled mode at a rate of 1 byte: every block holds a sample point, so every block
        # is a live sampled block (kept in the trace table, never in a header).
        tm = _common.import_tracer("heaptrail")
        tm.start(1, sample=1)
    elif config["tracer"] != "untraced":
        tm = _common.import_tracer(config["tracer"])
        tm.start(1)
    keep = [None] * n            # the container exists before the baseline
    gc.collect()
    own0 = tm.get_tracemalloc_memory() if tm else 0
    traced0 = tm.get_traced_memory()[0] if tm else 0
    rss0 = rss_bytes()
    for i in range(n):
        keep[i] = object()
    rss1 = rss_bytes()
    result = {"rss_growth": rss1 - rss0}
    if tm:
        result["own_growth"] = tm.get_tracemalloc_memory() - own0
        result["traced_growth"] = tm.get_traced_memory()[0] - traced0
        tm.stop()
    return result


def main():
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--blocks", type=int, nargs="+", default=[1_000_000], metavar="N",
                   help="live blocks to allocate (default 1000000); several values allowed")
    args = p.parse_args()
    if args.child:
        _common.child_result(child(json.loads(args.child)))
        return
    if args.quick:
        args.blocks, args.repeat = [min(args.blocks[0], 100_000)], 1

    env = _common.environment()
    tracers = ("untraced", "stdlib", "heaptrail", "sampled")
    rows, results = [], []
    for n in args.blocks:
        runs = {t: [] for t in tracers}
        for rep in range(args.repeat):
            for t in tracers:
                _common.progress(f"{n} blocks, run {rep + 1}/{args.repeat}: {t}")
                runs[t].append(_common.run_child(__file__, {"tracer": t, "blocks": n}))
        per = {t: _common.summary([r["rss_growth"] / n for r in runs[t]]) for t in tracers}
        extra = {t: per[t]["median"] - per["untraced"]["median"]
                 for t in ("stdlib", "heaptrail", "sampled")}
        own = {t: _common.summary([r["own_growth"] / n for r in runs[t]]) for t in extra}
        traced = {t: _common.summary([r["traced_growth"] / n for r in runs[t]]) for t in extra}
        verdict = "PASS" if extra["heaptrail"] <= TARGET_B else "MISS"
        rows.append([f"{n:,}", _b(per["untraced"]), _b(per["stdlib"]), f"{extra['stdlib']:.1f}",
                     _b(per["heaptrail"]), f"{extra['heaptrail']:.1f}", f"<= {TARGET_B}",
                     verdict, f"{own['stdlib']['median']:.1f}",
                     f"{own['heaptrail']['median']:.1f}",
                     f"{traced['stdlib']['median']:.0f} / {traced['heaptrail']['median']:.0f}",
                     _b(per["sampled"]), f"{extra['sampled']:.1f}",
                     f"{own['sampled']['median']:.1f}"])
        results.append({"blocks": n, "rss_per_block": per, "extra_rss_per_block": extra,
                        "own_memory_per_block": own, "traced_bytes_per_block": traced,
                        "target_bytes": TARGET_B, "verdict": verdict})

    text = "\n".join([
        _common.header(env, "bench_memory: bookkeeping memory per live traced block, nframe=1"),
        f"bytes per block; RSS growth = median (min) of {args.repeat} fresh process(es); "
        "extra = traced - untraced medians",
        "",
        _common.table(["blocks", "RSS untraced", "RSS stdlib", "extra", "RSS heaptrail",
                       "extra", "target", "result", "stdlib own", "heaptrail own",
                       "traced B/blk (std/ht)", "RSS sampled", "extra", "sampled own"],
                      rows, align="r" * 14),
        "",
        "own = get_tracemalloc_memory() growth / blocks (the tracer's own accounting)",
        "sampled = heaptrail.start(1, sample=1): every block sampled, so the columns are the "
        "memory per live sampled block (a trace-table entry; no header in sampled mode)",
    ])
    _common.emit(args, text, {"benchmark": "memory", "environment": env, "nframe": 1,
                              "repeat": args.repeat, "results": results})


def _b(s):
    return f"{s['median']:.1f} ({s['min']:.1f})"


if __name__ == "__main__":
    sys.exit(main())
