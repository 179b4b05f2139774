"""Snapshot analysis on ~1,000,000 live traces: stdlib tracemalloc vs heaptrail.

What it measures: a child process generates a module of 2,000 functions (written to a temp file
and imported, so every frame has a real filename and line) and, tracing at nframe=10, calls them
through 16x16 outer/inner call paths under a short recursion (full 10-frame tracebacks), keeping
~1M small objects alive (lists, dicts, strs, tuples, sets, bytes, ints, slotted instances) from
~6,000 allocation lines and ~12,000 distinct tracebacks. It then times one call each of:
take_snapshot; statistics by lineno, traceback, filename and cumulative lineno; filter_traces with
the two excludes from the tracemalloc docs, and with an all_frames include of the generated file
plus an exclude of one line; compare_to (lineno, traceback) against a second snapshot taken after
freeing 10% of the objects and allocating new ones from a new call path; dump; load; and, heaptrail only
(stdlib has no equivalent), Snapshot.export to pprof, collapsed stacks and JSON.

stdlib and heaptrail run the same workload in separate fresh children, in two modes: "off" stops
tracing after the second snapshot, so the calls analyse a finished snapshot; "on" leaves tracing
on during the calls, as in a running service, so every object a call creates is traced too
(heaptrail always; stdlib only with --stdlib-tracing-on, since it is 15-80x slower that way).
Each call runs with the cyclic GC paused (collected just before), like timeit, so a gen-2
collection of the 1M-object heap never lands inside one call. --timeout caps a call with a
Python-level alarm (shown as ">N s"; take_snapshot is never capped).

Why: heaptrail analyses the live heap inside the running service; DESIGN.md's target is
<= 50 ms per statistics / compare_to / filter_traces call on 1M live traces (stdlib: 1.5-49 s).
"""

import gc
import importlib.util
import json
import os
import signal
import sys
import tempfile
import time

import _common

N_LEAVES = 2000          # generated functions, 3 allocation lines each
N_ROUTES = 16            # outer_* and inner_* dispatchers: distinct call paths
NFRAME = 10
TRACES_PER_CALL = 5.27   # measured live traces per leaf call (3.11); sets the call count
TARGET_S = 0.050
TARGETED = ("statistics", "filter_traces", "compare_to")

LEAF_BODIES = (  # three kinds of leaf, each statement on its own line
    lambda f: [f"keep.append([i, {f}, i])", f"keep.append({{'leaf': {f}, 'i': i}})",
               f"keep.append('s{f}-' + str(i))"],
    lambda f: [f"keep.append(Rec(i, {f}))", f"keep.append((i, {f}, i + 1))",
               f"keep.append(str(i) * {f % 4 + 1})"],
    lambda f: [f"keep.append(bytes({f % 60 + 2}))", f"keep.append([i] * {f % 7 + 1})",
               f"keep.append({{i, {f}}})"],
)


def generate_source():
    src = ["class Rec:", "    __slots__ = ('a', 'b')", "", "    def __init__(self, a, b):",
           "        self.a = a", "        self.b = b", ""]
    for f in range(N_LEAVES):
        src += [f"def leaf_{f}(keep, i):"]
        src += ["    " + s for s in LEAF_BODIES[f % len(LEAF_BODIES)](f)] + [""]
    for r in range(N_ROUTES):
        src += [f"def inner_{r}(keep, i, f):", "    return LEAVES[f](keep, i)", ""]
        src += [f"def outer_{r}(keep, i, f, path):",
                f"    return INNER[({r} + f + path) % {N_ROUTES}](keep, i, f)", ""]
    src.append("LEAVES = [" + ", ".join(f"leaf_{f}" for f in range(N_LEAVES)) + "]")
    src.append("INNER = [" + ", ".join(f"inner_{r}" for r in range(N_ROUTES)) + "]")
    src.append("OUTER = [" + ", ".join(f"outer_{r}" for r in range(N_ROUTES)) + "]")
    return "\n".join(src) + "\n"


def drive(mod, keep, start, calls, paths):
    outer = mod.OUTER
    for i in range(start, start + calls):
        f = i % N_LEAVES
        path = paths[(i // N_LEAVES) % len(paths)]
        outer[(3 * f + path) % N_ROUTES](keep, i, f, path)


def descend(depth, fn, *args):  # a little recursion, so tracebacks fill all 10 frames
    return descend(depth - 1, fn, *args) if depth else fn(*args)


class OpTimeout(Exception):
    pass


class Clock:
    """Times one call with the GC paused; a Python-level alarm caps it at ``timeout`` s."""

    def __init__(self, timeout):
        self.timeout, self.armed, self.results = timeout, False, {}
        signal.signal(signal.SIGALRM, self._alarm)

    def _alarm(self, signum, frame):
        if self.armed:
            self.armed = False
            raise OpTimeout

    def time(self, name, fn, cap=True):
        gc.collect()
        gc.disable()
        if cap and self.timeout:
            signal.setitimer(signal.ITIMER_REAL, self.timeout)
        self.armed = cap and bool(self.timeout)
        t0 = time.perf_counter()
        try:
            result = fn()
            self.armed = False
            timed_out = False
        except OpTimeout:
            result, timed_out = None, True
        finally:
            elapsed = time.perf_counter() - t0
            self.armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            gc.enable()
        self.results[name] = {"seconds": elapsed, "timed_out": timed_out}
        return result


def child(config):
    tm = _common.import_tracer(config["tracer"])
    workdir = tempfile.mkdtemp(prefix="heaptrail_bench_")
    gen_path = os.path.join(workdir, "gen_sites.py")
    with open(gen_path, "w") as f:
        f.write(generate_source())
    spec = importlib.util.spec_from_file_location("gen_sites", gen_path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    calls = int(config["traces"] / TRACES_PER_CALL)
    keep = []
    tm.start(NFRAME)
    t0 = time.perf_counter()
    descend(3, drive, mod, keep, 0, calls, (0, 1))
    build_s = time.perf_counter() - t0
    clock = Clock(config["timeout"])
    snap1 = clock.time("take_snapshot", tm.take_snapshot, cap=False)
    del keep[::10]                                              # free 10% ...
    descend(3, drive, mod, keep, calls, calls // 10, (2,))      # ... and allocate from a new path
    snap2 = tm.take_snapshot()
    if config["stop_tracing"]:
        tm.stop()

    info = {"traces": len(snap1.traces), "traces_2": len(snap2.traces), "build_s": build_s}
    for label, key, cumulative in (("statistics lineno", "lineno", False),
                                   ("statistics traceback", "traceback", False),
                                   ("statistics filename", "filename", False),
                                   ("statistics lineno cumulative", "lineno", True)):
        stats = clock.time(label, lambda key=key, cumulative=cumulative: snap1.statistics(key, cumulative))
        info[f"groups {label}"] = None if stats is None else len(stats)
        del stats
    doc_filters = [tm.Filter(False, "<frozen importlib._bootstrap>"), tm.Filter(False, "<unknown>")]
    site_filters = [tm.Filter(True, "*/gen_sites.py", all_frames=True),
                    tm.Filter(False, gen_path, lineno=9)]  # leaf_0's first line
    for label, filters in (("filter_traces exclude x2", doc_filters),
                           ("filter_traces include+exclude", site_filters)):
        kept = clock.time(label, lambda filters=filters: snap1.filter_traces(filters))
        info[f"kept {label}"] = None if kept is None else len(kept.traces)
        del kept
    for key in ("lineno", "traceback"):
        diff = clock.time(f"compare_to {key}", lambda key=key: snap2.compare_to(snap1, key))
        info[f"groups compare_to {key}"] = None if diff is None else len(diff)
        del diff
    dump_path = os.path.join(workdir, "snapshot.dump")
    clock.time("dump", lambda: snap1.dump(dump_path))
    info["dump_bytes"] = os.path.getsize(dump_path) if os.path.exists(dump_path) else None
    loaded = clock.time("load", lambda: tm.Snapshot.load(dump_path))
    info["loaded_traces"] = None if loaded is None else len(loaded.traces)
    if config["tracer"] == "heaptrail":  # stdlib has no export: heaptrail-only rows
        for fmt in ("pprof", "collapsed", "json"):
            out = os.path.join(workdir, f"export.{fmt}")
            clock.time(f"export {fmt}", lambda out=out, fmt=fmt: snap1.export(out, fmt))
            info[f"export {fmt} bytes"] = os.path.getsize(out) if os.path.exists(out) else None
    for name in os.listdir(workdir):
        os.unlink(os.path.join(workdir, name))
    os.rmdir(workdir)
    return {"ops": clock.results, "info": info}


def main():
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--traces", type=int, default=1_000_000,
                   help="approximate live traces to build (default 1000000)")
    p.add_argument("--timeout", type=float, default=60,
                   help="cap per analysis call in seconds, 0 = none (default 60); "
                        "take_snapshot is never capped")
    p.add_argument("--stdlib-tracing-on", action="store_true",
                   help="also run stdlib with tracing on during the analysis (once, not "
                        "--repeat times: at 1M traces that takes several minutes)")
    args = p.parse_args()
    if args.child:
        _common.child_result(child(json.loads(args.child)))
        return
    if args.quick:
        args.traces, args.repeat = min(args.traces, 50_000), 1

    env = _common.environment()
    configs = [("stdlib", "off"), ("heaptrail", "off"), ("heaptrail", "on")]
    plan = [(c, i) for i in range(args.repeat) for c in configs]   # interleaved
    if args.stdlib_tracing_on:
        configs.append(("stdlib", "on"))
        plan.append((("stdlib", "on"), 0))
    runs = {c: [] for c in configs}
    for (tracer, mode), i in plan:
        n = 1 if (tracer, mode) == ("stdlib", "on") else args.repeat
        _common.progress(f"{tracer}, tracing {mode} during analysis: run {i + 1}/{n} ...")
        t0 = time.perf_counter()
        runs[(tracer, mode)].append(_common.run_child(__file__, {
            "tracer": tracer, "traces": args.traces, "timeout": args.timeout,
            "stop_tracing": mode == "off"}))
        _common.progress(f"  done in {time.perf_counter() - t0:.1f} s")

    std_on = ("stdlib", "on") in runs
    headers = ["operation", "stdlib", "heaptrail", "speedup", "target", "result"] + \
        (["stdlib on"] if std_on else []) + ["heaptrail on"] + \
        (["speedup on"] if std_on else []) + ["result on"]
    rows, results = [], []
    for op in runs[("heaptrail", "off")][0]["ops"]:
        targeted = op.startswith(TARGETED)
        sm = {c: _op_summary(runs[c], op) for c in configs}
        result = {"op": op, "target_s": TARGET_S if targeted else None}
        for (tracer, mode), summ in sm.items():
            result[f"{tracer}_{mode}_s"] = summ
        for mode in ("off", "on"):
            h = sm[("heaptrail", mode)]
            result[f"verdict_{mode}"] = ("PASS" if h["median"] <= TARGET_S else "MISS") \
                if targeted else None
            result[f"speedup_{mode}"] = None
            if sm.get(("stdlib", mode)):  # a lower bound if stdlib hit the cap
                result[f"speedup_{mode}"] = sm[("stdlib", mode)]["median"] / h["median"]
        f = {c: _fmt(sm[c], args.timeout) if sm[c] else "n/a" for c in sm}
        row = [op, f[("stdlib", "off")], f[("heaptrail", "off")],
               _speedup(sm[("stdlib", "off")], result["speedup_off"]),
               "<= 50 ms" if targeted else "-", result["verdict_off"] or "-"]
        row += [f[("stdlib", "on")]] if std_on else []
        row += [f[("heaptrail", "on")]]
        row += [_speedup(sm[("stdlib", "on")], result["speedup_on"])] if std_on else []
        row += [result["verdict_on"] or "-"]
        rows.append(row)
        results.append(result)
    info = {f"{t} {m}": runs[(t, m)][0]["info"] for t, m in configs}
    facts = [[k] + [_num(info[c].get(k)) for c in info] for k in info["heaptrail off"]]
    text = "\n".join([
        _common.header(env, f"bench_analysis: ~{args.traces:,} live traces, nframe={NFRAME}"),
        f"time = median (min) of {args.repeat} fresh process(es), one call per op per process"
        f" (stdlib on: 1 process); each call capped at {args.timeout:g} s",
        "stdlib, heaptrail: tracing stopped before the analysis calls (take_snapshot is always "
        "traced)",
        "... on: tracing still on during the calls, as in a running service (every object the "
        "call creates is traced too)",
        "",
        _common.table(headers, rows),
        "",
        "workload facts (first run of each):",
        _common.table([""] + list(info), facts),
    ])
    _common.emit(args, text, {"benchmark": "analysis", "environment": env,
                              "traces": args.traces, "nframe": NFRAME, "timeout_s": args.timeout,
                              "repeat": args.repeat, "results": results, "info": info})


def _op_summary(runs, op):
    if op not in runs[0]["ops"]:
        return None  # an operation the other tracer does not have (export)
    values = [r["ops"][op]["seconds"] for r in runs]
    s = _common.summary(values)
    s["timed_out"] = any(r["ops"][op]["timed_out"] for r in runs)
    return s


def _speedup(stdlib, ratio):
    if stdlib is None:
        return "-"
    return (">" if stdlib["timed_out"] else "") + _common.fmt_ratio(ratio)


def _fmt(s, timeout):
    if s["timed_out"]:
        return f"> {timeout:g} s"
    return _common.fmt_median_min(s["median"], s["min"])


def _num(v):
    if isinstance(v, float):
        return f"{v:.2f} s"
    return "-" if v is None else f"{v:,}"


if __name__ == "__main__":
    sys.exit(main())
