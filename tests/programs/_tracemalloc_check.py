"""Checks a test program without heaptrail: runs it under the standard library's tracemalloc,
sums live bytes per user line (the innermost frame under tests/programs) every H_INTERVAL
seconds (default 0.5), and prints one JSON line to stderr: the `# LEAK` line's series (KiB) and
the lines that grew most between the second and the last quarter of the run. A leak program's
`# LEAK` line must grow about linearly; a negative control's lines must plateau.

    HEAPTRAIL_TEST_SECONDS=8 .venv-3.12/bin/python tests/programs/_tracemalloc_check.py \
        tests/programs/leak_unbounded_cache.py

H_NFRAME (default 10; 40 for leak_deep_library_stack.py) is the traceback depth. Modules the
programs import are imported before tracing starts, so only the run itself is traced. Caveat:
stdlib tracemalloc does not re-stamp dict key tables taken from a free list, so churn lines
(e.g. _service.py's list of small dicts) show up as growing beside a leak of small dicts."""
import importlib
import json
import os
import runpy
import sys
import threading
import time
import tracemalloc

prog = os.path.abspath(sys.argv[1])
pdir = os.path.dirname(prog)
interval = float(os.environ.get("H_INTERVAL", "0.5"))
sys.path.insert(0, pdir)
series = []
stop = threading.Event()

def user_line(tb):
    for filename, lineno in tb:  # innermost first (most recent)
        if filename.startswith(pdir):
            return (os.path.basename(filename), lineno)
    return ("<lib>", 0)

def sampler():
    while not stop.wait(interval):
        snap = tracemalloc.take_snapshot()
        acc = {}
        cache = {}
        for _dom, size, frames, *_ in snap.traces._traces:  # raw: most recent frame first
            k = cache.get(frames)
            if k is None:
                k = cache[frames] = user_line(frames)
            acc[k] = acc.get(k, 0) + size
        series.append(acc)

if os.environ.get("H_EARLY"):
    tracemalloc.start(40)
for mod in ("json", "asyncio", "random", "concurrent.futures", "threading", "logging", "functools",
            "hashlib", "re", "collections", "gc", "blinker", "prometheus_client", "plumbline", "_service"):
    importlib.import_module(mod)  # imported before tracing starts: only the run is traced
tracemalloc.start(int(os.environ.get("H_NFRAME", "10")))
th = threading.Thread(target=sampler, daemon=True)
th.start()
t0 = time.time()
sys.argv = [prog]
runpy.run_path(prog, run_name="__main__")
stop.set()
th.join()
tracemalloc.stop()
lines = open(prog).read().splitlines()
leak = [i for i, l in enumerate(lines, 1) if "# LEAK" in l] or [int(os.environ.get("H_LINE", 0))]
name = os.path.basename(prog)
keys = set().union(*series)
n = len(series)
q = max(1, n // 4)
def avg(k, part): return sum(s.get(k, 0) for s in part) / len(part)
growth = sorted(((avg(k, series[-q:]) - avg(k, series[q:2*q]), k) for k in keys), reverse=True)
out = {"program": name, "windows": n, "seconds": round(time.time() - t0, 1)}
if leak[0]:
    k = (name, leak[0])
    out["leak_line"] = leak[0]
    out["leak_series_kb"] = [round(s.get(k, 0) / 1024, 1) for s in series][::max(1, n // 12)]
    out["leak_growth_bytes"] = round(avg(k, series[-q:]) - avg(k, series[q:2*q]))
out["top_growth"] = [(f"{k[0]}:{k[1]}", round(g)) for g, k in growth[:5]]
out["top_shrink"] = [(f"{k[0]}:{k[1]}", round(g)) for g, k in growth[-2:]]
print(json.dumps(out), file=sys.__stderr__)
