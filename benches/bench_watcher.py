"""The leak watcher's cost to the application it watches.

1. Pause: with about a million live traces, how long each window holds the GIL (the time the
   application cannot run Python code). heaptrail: `Watcher.check_now()`, of which only the
   copy of the live totals per traceback (kept by the tracer on every allocation and free)
   and the resolution of new line numbers hold the GIL (grouping, trend tests and reporting
   run without it or in the watcher thread). The same method done with stdlib tracemalloc: `take_snapshot()`
   + `compare_to()` against the previous window, all under the GIL.
   Target: heaptrail <= 10 ms per window at ~1M traces.
2. CPU: a service-like workload (parse a request, build and serialise a response, keep a
   bounded cache) run for a fixed number of requests, process CPU time: untraced, under
   `heaptrail.watch(interval=1)`, under `heaptrail.watch(interval=1, sample=True)` (sampled
   mode at its default rate), and under the manual stdlib method (tracemalloc.start(16) plus
   a thread that snapshots and diffs every second). Targets: heaptrail <= 2x untraced,
   sampled <= 1.05x (issue 10).

Each configuration runs in a fresh child process; medians of --repeat runs are reported.

3. --counted: the CPU test's untraced, heaptrail and sampled runs counted by valgrind's
   cachegrind instead of timed (instructions and cache misses, which a busy or throttled
   machine does not change: on a shared VM the timed CPU ratios swing by +-30% from run to
   run, more than the 1.05x target). Each mode runs the loop twice, with --requests requests
   and with none; the difference over the requests is the cost of one request, start-up
   excluded. The watcher's interval is stretched by cachegrind's slowdown (measured on the
   untraced run) so that it takes as many windows per request as at native speed.
"""

import json
import os
import sys
import threading
import time
from collections import OrderedDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

PAUSE_TARGET = 0.010
CPU_TARGET = 2.0
SAMPLED_CPU_TARGET = 1.05


# ---- children ------------------------------------------------------------------------------

def build_heap(n, sites=1000):
    """`n` live small objects from `sites` distinct lines of a generated module."""
    src = "\n".join(f"def f{i}(keep, n):\n    keep.extend([str(j) + 'x{i}' for j in range(n)])"
                    for i in range(sites))
    namespace = {}
    exec(compile(src, "<bench_heap>", "exec"), namespace)
    keep = []
    per_site = max(1, n // sites)
    for i in range(sites):
        namespace[f"f{i}"](keep, per_site)
    return keep


def child_pause(config):
    n, tracer, windows = config["traces"], config["tracer"], config["windows"]
    if tracer == "heaptrail":
        import heaptrail
        from heaptrail._settings import Settings
        from heaptrail._watcher import Watcher
        heaptrail.start(16)
        keep = build_heap(n)
        w = Watcher(Settings(interval=3600.0, nframe=16))
        whole = []
        for _ in range(windows):
            t = time.perf_counter()
            w.check_now()
            whole.append(time.perf_counter() - t)
        traces = heaptrail.get_trace_count()
        _common.child_result({"pauses": list(w.pauses), "windows": whole, "traces": traces})
        del keep
    else:
        import tracemalloc
        tracemalloc.start(16)
        keep = build_heap(n)
        previous, pauses = None, []
        for _ in range(windows):
            t = time.perf_counter()
            snap = tracemalloc.take_snapshot()
            if previous is not None:
                snap.compare_to(previous, "lineno")
            pauses.append(time.perf_counter() - t)
            previous = snap
        traces = len(snap.traces)
        _common.child_result({"pauses": pauses, "windows": pauses, "traces": traces})
        del keep


def service(requests):
    """A request loop: parse, look up, render JSON, keep a bounded LRU of responses."""
    cache = OrderedDict()
    catalogue = {i: {"sku": f"P{i:05d}", "price": i * 0.37, "tags": ["a", "b"]} for i in range(2000)}
    total = 0
    for n in range(requests):
        query = f"id=req-{n}&page={n % 40}&qty={1 + n % 25}"
        params = dict(part.split("=", 1) for part in query.split("&"))
        page, qty = int(params["page"]), int(params["qty"])
        rows = [catalogue[(page * 50 + i) % 2000] for i in range(qty)]
        body = json.dumps({"id": params["id"], "rows": rows}).encode()
        cache[params["id"]] = body
        if len(cache) > 5000:
            cache.popitem(last=False)
        total += len(body)
    return total


def stdlib_watch(interval, stop):
    import tracemalloc
    previous = None
    while not stop.wait(interval):
        snap = tracemalloc.take_snapshot()
        if previous is not None:
            snap.compare_to(previous, "lineno")[:10]
        previous = snap


def child_cpu(config):
    mode, requests = config["mode"], config["requests"]
    interval = config.get("interval", 1.0)
    stop = threading.Event()
    watcher = thread = None
    if mode == "heaptrail":
        import heaptrail
        watcher = heaptrail.watch(interval=interval, nframe=16)
    elif mode == "sampled":
        import heaptrail
        watcher = heaptrail.watch(interval=interval, nframe=16, sample=True)
    elif mode == "stdlib":
        import tracemalloc
        tracemalloc.start(16)
        thread = threading.Thread(target=stdlib_watch, args=(1.0, stop), daemon=True)
        thread.start()
    cpu, wall = time.process_time(), time.perf_counter()
    service(requests)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    windows = len(watcher.history) if watcher else None
    if watcher:
        watcher.stop()
    stop.set()
    _common.child_result({"cpu": cpu, "wall": wall, "windows": windows})


# ---- parent --------------------------------------------------------------------------------

COUNTED_MODES = ("untraced", "heaptrail", "sampled")


def counted_cpu(args, env):
    """Issue 10's watcher target by counts: instructions (and estimated cycles) per request."""
    valgrind = _common.valgrind_or_exit("bench_watcher")
    requests = args.requests
    _common.progress(f"native untraced run, {requests} requests")
    native = _common.run_child(__file__, {"kind": "cpu", "mode": "untraced", "requests": requests},
                               timeout=1800)

    def child(mode, n, interval):
        config = {"kind": "cpu", "mode": mode, "requests": n, "interval": interval}
        return ([sys.executable, os.path.abspath(__file__), "--child", json.dumps(config)],
                _common.child_env(), None)

    _common.progress(f"counted untraced run, {requests} requests (sets the watcher's interval)")
    counts = _common.count_all(valgrind, {("untraced", requests): child("untraced", requests, 1.0)},
                               1, lambda key: f"{key[0]}, {key[1]} requests")
    # The loop's own time under cachegrind against at native speed (start-up excluded).
    untraced_run = _common.child_output(counts[("untraced", requests)][1])
    slowdown = max(1.0, untraced_run["wall"] / max(native["wall"], 1e-6))
    interval = round(slowdown, 1)  # a native second of requests per window
    counts.update(_common.count_all(
        valgrind, {(m, n): child(m, n, interval) for m in COUNTED_MODES for n in (requests, 0)
                   if (m, n) not in counts},
        args.jobs, lambda key: f"{key[0]}, {key[1]} requests"))
    per_request = {m: _common.per_unit(counts[(m, requests)][0], counts[(m, 0)][0], requests)
                   for m in COUNTED_MODES}
    base = per_request["untraced"]
    rows, results = [], {}
    for mode, label in (("untraced", "untraced"),
                        ("heaptrail", f"heaptrail.watch(interval={interval:g})"),
                        ("sampled", f"heaptrail.watch(interval={interval:g}, sample=True)")):
        c = per_request[mode]
        ratio = c["Ir"] / base["Ir"]
        cycles = _common.estimated_cycles(c) / _common.estimated_cycles(base)
        windows = _common.child_output(counts[(mode, requests)][1])["windows"]
        results[mode] = {"per_request": c, "Ir_ratio": ratio, "cycles_ratio": cycles,
                         "windows": windows}
        rows.append([label, f"{c['Ir']:,.0f}", f"{ratio:.3f}x", f"{cycles:.3f}x",
                     "-" if windows is None else windows])
    native_windows = native["wall"]  # untraced, at native speed: one window per second
    sampled = results["sampled"]["cycles_ratio"]
    text = [_common.header(env, "heaptrail watcher: CPU cost counted by cachegrind"),
            f"{requests:,} service requests, start-up excluded; cachegrind ran {slowdown:.0f}x "
            f"slower than native, so the watcher's interval is {interval:g} s "
            f"(~{native_windows:.1f} windows at native speed, one per second)",
            "cycles = Ir + 10 x L1 misses + 100 x LL misses (a model, not a measurement)", "",
            _common.table(["", "Ir per request", "Ir vs untraced", "cycles vs untraced",
                           "windows"], rows), "",
            f"target: sampled (issue 10) <= {SAMPLED_CPU_TARGET:g}x untraced (estimated cycles) "
            f"-> {'PASS' if sampled <= SAMPLED_CPU_TARGET else 'MISS'}"]
    _common.emit(args, "\n".join(text), {"environment": env, "requests": requests,
                                         "interval": interval, "slowdown": slowdown,
                                         "native": native, "counted": results})


def main():
    p = _common.parser(__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n", 1)[1], repeat=3)
    p.add_argument("--traces", type=int, default=1_000_000, help="live traces for the pause test")
    p.add_argument("--requests", type=int, default=150_000, help="requests for the CPU test")
    p.add_argument("--cpu-only", action="store_true", help="skip the pause test (minutes)")
    p.add_argument("--counted", action="store_true",
                   help="count the CPU test with valgrind's cachegrind instead of timing it "
                        "(untraced, heaptrail, sampled; no pause test; --requests defaults to "
                        "20,000 here: ~2 minutes per run)")
    _common.add_jobs_argument(p)
    args = p.parse_args()
    if args.child:
        config = json.loads(args.child)
        (child_pause if config["kind"] == "pause" else child_cpu)(config)
        return
    if args.counted and "--requests" not in sys.argv:
        args.requests = 20_000
    if args.quick:
        args.traces, args.requests, args.repeat = 50_000, 2_000 if args.counted else 20_000, 1
    env = _common.environment()
    if args.counted:
        counted_cpu(args, env)
        return
    results = {"pause": {}, "cpu": {}}
    for tracer in () if args.cpu_only else ("heaptrail", "stdlib"):
        _common.progress(f"pause: {tracer}, {args.traces} traces")
        runs = [_common.run_child(__file__, {"kind": "pause", "tracer": tracer, "traces": args.traces,
                                             "windows": 5 if tracer == "heaptrail" else 2},
                                  timeout=1800) for _ in range(args.repeat)]
        pauses = [p for r in runs for p in r["pauses"]]
        windows = [w for r in runs for w in r["windows"]]
        results["pause"][tracer] = {"pause": _common.summary(pauses), "window": _common.summary(windows),
                                    "max_pause": max(pauses), "traces": runs[0]["traces"]}
    modes = ("untraced", "heaptrail", "sampled", "stdlib")
    cpu_runs = {m: [] for m in modes}
    for rep in range(args.repeat):  # interleaved, so slow drifts hit every mode alike
        for mode in modes:
            _common.progress(f"cpu run {rep + 1}/{args.repeat}: {mode}, {args.requests} requests")
            cpu_runs[mode].append(_common.run_child(
                __file__, {"kind": "cpu", "mode": mode, "requests": args.requests},
                timeout=1800))
    for mode, runs in cpu_runs.items():
        results["cpu"][mode] = {"cpu": _common.summary([r["cpu"] for r in runs]),
                                "windows": runs[0]["windows"]}

    text = [_common.header(env, "heaptrail watcher: pause per window and CPU cost"), ""]
    if not args.cpu_only:
        ph, ps = results["pause"]["heaptrail"], results["pause"]["stdlib"]
        rows = [[name, f"{r['traces']:,}",
                 _common.fmt_median_min(r["pause"]["median"], r["pause"]["min"]),
                 _common.fmt_seconds(r["max_pause"]), _common.fmt_seconds(r["window"]["median"])]
                for name, r in (("heaptrail watcher", ph), ("stdlib snapshot+compare_to", ps))]
        verdict = "PASS" if ph["max_pause"] <= PAUSE_TARGET else "MISS"
        text += ["Pause per window (GIL held; median (min), max), and the whole window:",
                 _common.table(["", "live traces", "pause", "max pause", "whole window"], rows),
                 f"target: max pause <= {PAUSE_TARGET * 1000:.0f} ms -> {verdict}", ""]
    base = results["cpu"]["untraced"]["cpu"]["median"]
    rows = []
    for mode, label in (("untraced", "untraced"), ("heaptrail", "heaptrail.watch(interval=1)"),
                        ("sampled", "heaptrail.watch(interval=1, sample=True)"),
                        ("stdlib", "stdlib: start(16) + snapshot/compare_to every 1 s")):
        r = results["cpu"][mode]
        rows.append([label, _common.fmt_median_min(r["cpu"]["median"], r["cpu"]["min"]),
                     _common.fmt_ratio(r["cpu"]["median"] / base)])
        r["ratio"] = r["cpu"]["median"] / base
    verdict = "PASS" if results["cpu"]["heaptrail"]["ratio"] <= CPU_TARGET else "MISS"
    sampled = results["cpu"]["sampled"]["ratio"]
    text += [f"CPU time of {args.requests:,} service requests (median (min)):",
             _common.table(["", "CPU", "vs untraced"], rows),
             f"target: heaptrail <= {CPU_TARGET:g}x untraced -> {verdict}",
             f"target: sampled (issue 10) <= {SAMPLED_CPU_TARGET:g}x untraced -> "
             f"{'PASS' if sampled <= SAMPLED_CPU_TARGET else 'MISS'}"]
    _common.emit(args, "\n".join(text), {"environment": env, "results": results})


if __name__ == "__main__":
    main()
