"""heaptrail's own memory on a service that compiles code at run time.

What it measures: a fresh child runs, for ``--seconds``, the loop template engines, rule
engines and class factories run: ``exec(compile(src, f"<gen-{i}>", "exec"), {})`` with a
fresh pseudo-filename each time (nothing it allocates stays alive), sampling its RSS every
second. Configurations, side by side: untraced, stdlib ``tracemalloc.start(1)``,
``heaptrail.start(1)`` and ``heaptrail.watch()`` (interval ``--interval``, a JSON Lines report).

Reported per configuration: snippets run per second, RSS after warm-up and at the end, RSS
above the untraced run, heaptrail's own bookkeeping (``get_tracemalloc_memory()``), and the
slope of RSS over the second half of the run (least squares, MiB per minute).

Target (issue 9): heaptrail's runs stay within untraced RSS + bookkeeping + 8 MiB, flat after
warm-up (second-half slope under 0.1 MiB/min), on every CPython version.
"""

import json
import os
import tempfile
import time

import _common

PAGE = os.sysconf("SC_PAGE_SIZE")
MODES = ["untraced", "tracemalloc", "start", "watch"]
SOURCE = ("rows = [str(n) * 3 for n in range(8)]\n"
          "index = {r: len(r) for r in rows}\n"
          "def render(row):\n    return f'<td>{row}</td>'\n"
          "html = ''.join(render(r) for r in rows)\n")
BUDGET_MIB = 8.0
FLAT_MIB_PER_MIN = 0.1


def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def child(config):
    mode, seconds = config["mode"], config["seconds"]
    watcher = None
    if mode == "tracemalloc":
        import tracemalloc
        tracemalloc.start(1)
    elif mode in ("start", "watch"):
        import heaptrail
        if mode == "start":
            heaptrail.start(1)
        else:
            report = os.path.join(tempfile.mkdtemp(prefix="bench-self-"), "watch.jsonl")
            watcher = heaptrail.watch(interval=config["interval"], nframe=1, report=report)
    samples, snippets = [], 0
    start = time.monotonic()
    next_sample = start
    while True:
        now = time.monotonic()
        if now >= next_sample:
            samples.append((now - start, rss_mib()))
            next_sample += 1.0
            if now - start >= seconds:
                break
        for _ in range(50):
            exec(compile(SOURCE, f"<gen-{snippets}>", "exec"), {})
            snippets += 1
    result = {"samples": samples, "snippets": snippets, "seconds": time.monotonic() - start}
    if mode in ("start", "watch"):
        import heaptrail
        result["bookkeeping_mib"] = heaptrail.get_tracemalloc_memory() / 2**20
        if watcher is not None:
            result["leaks"] = [f"{s['filename']}:{s['lineno']}" for s in watcher.report["sites"]
                               if s["verdict"] == "leak"] if watcher.report else []
            watcher.stop()
    return result


def slope_mib_per_min(samples):
    """Least-squares slope of the second half of the samples, MiB per minute."""
    half = samples[len(samples) // 2:]
    if len(half) < 2:
        return 0.0
    n = len(half)
    mx = sum(t for t, _ in half) / n
    my = sum(r for _, r in half) / n
    var = sum((t - mx) ** 2 for t, _ in half)
    return 60 * sum((t - mx) * (r - my) for t, r in half) / var if var else 0.0


def main():
    p = _common.parser(__doc__.split("\n\n")[0], repeat=1)
    p.add_argument("--seconds", type=float, default=600.0,
                   help="duration of each run (default 600: the issue's 10 minutes)")
    p.add_argument("--interval", type=float, default=2.0,
                   help="the watcher's window interval (default 2 s)")
    p.add_argument("--modes", default=",".join(MODES),
                   help=f"configurations to run, comma-separated (default {','.join(MODES)}; "
                        "untraced is always run: the others are compared with it)")
    args = p.parse_args()
    if args.child:
        _common.child_result(child(json.loads(args.child)))
        return
    if args.quick:
        args.seconds = 8.0
    env = _common.environment()
    modes = ["untraced"] + [m for m in MODES[1:] if m in args.modes.split(",")]
    results = {}
    for mode in modes:
        _common.progress(f"running {mode} for {args.seconds:g} s...")
        results[mode] = _common.run_child(
            __file__, {"mode": mode, "seconds": args.seconds, "interval": args.interval},
            timeout=args.seconds * 3 + 120)
    base = results["untraced"]["samples"][-1][1]
    rows, verdicts = [], []
    for mode in modes:
        r = results[mode]
        samples = r["samples"]
        warm = samples[min(len(samples) - 1, max(1, len(samples) // 10))][1]
        end = samples[-1][1]
        slope = slope_mib_per_min(samples)
        book = r.get("bookkeeping_mib")
        rows.append([mode, f"{r['snippets'] / r['seconds']:,.0f}", f"{warm:.1f}", f"{end:.1f}",
                     f"{end - base:+.1f}", "-" if book is None else f"{book:.1f}",
                     f"{slope:+.3f}", ", ".join(r.get("leaks", [])) or "-"])
        if mode in ("start", "watch"):
            within = end - base <= (book or 0) + BUDGET_MIB
            flat = slope < FLAT_MIB_PER_MIN
            verdicts.append(f"{mode}: {end - base:+.1f} MiB over untraced (budget "
                            f"{(book or 0) + BUDGET_MIB:.1f}), slope {slope:+.3f} MiB/min: "
                            f"{'PASS' if within and flat else 'MISS'}")
    text = "\n".join([
        _common.header(env, "heaptrail's own memory on code compiled at run time "
                            "(bench_self_memory.py)"),
        "",
        _common.table(["config", "snippets/s", "RSS warm (MiB)", "RSS end (MiB)",
                       "vs untraced", "bookkeeping (MiB)", "slope 2nd half (MiB/min)",
                       "leaks flagged"], rows),
        "",
        f"target: within untraced RSS + bookkeeping + {BUDGET_MIB:g} MiB, second-half slope "
        f"< {FLAT_MIB_PER_MIN} MiB/min",
    ] + verdicts)
    _common.emit(args, text, {"environment": env, "results": results})


if __name__ == "__main__":
    main()
