"""Helpers shared by the benchmark scripts (not a benchmark itself).

Every measured configuration runs in a fresh child process of the same interpreter
(``sys.executable``): the script re-runs itself with ``--child CONFIG_JSON`` and the child prints
one ``BENCH-RESULT {...}`` line. Parents repeat children, take medians, print an aligned table
(stdout) and optionally JSON (``--json FILE``; ``--json -`` puts JSON alone on stdout and the
table on stderr).
"""

import argparse
import json
import os
import platform
import shlex
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

RESULT_PREFIX = "BENCH-RESULT "


class ChildTimeout(Exception):
    pass


def parser(description, repeat=5):
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=repeat, metavar="N",
                   help=f"fresh child processes per configuration; median and min are "
                        f"reported (default {repeat})")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: a small workload, 1 repeat (takes seconds; checks that "
                        "the script works, its numbers are too noisy to quote)")
    p.add_argument("--json", metavar="FILE",
                   help="also write the results as JSON to FILE ('-': JSON on stdout, the "
                        "table on stderr)")
    p.add_argument("--child", metavar="CONFIG", help=argparse.SUPPRESS)
    return p


def child_env():
    env = dict(os.environ)
    env.pop("PYTHONTRACEMALLOC", None)   # no interpreter-started tracer in any child
    env["PYTHONHASHSEED"] = "0"           # same dict/str layouts in every run
    return env


def run_child(script, config, timeout=None):
    """Run ``script --child config`` with this interpreter; return the child's result dict."""
    cmd = [sys.executable, os.path.abspath(script), "--child", json.dumps(config)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=child_env())
    except subprocess.TimeoutExpired:
        raise ChildTimeout(f"child {config} exceeded {timeout} s") from None
    if proc.returncode == 0 and RESULT_PREFIX in proc.stdout:
        return child_output(proc.stdout)
    raise RuntimeError(f"child {config} failed (exit {proc.returncode}):\n"
                       f"{proc.stdout[-2000:]}{proc.stderr[-4000:]}")


def child_result(result):
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def child_output(stdout):
    """The result dict a child printed (see child_result) in its `stdout`."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise RuntimeError(f"no result in the child's output:\n{stdout[-2000:]}")


def import_tracer(name):
    """The tracer module a child measures: 'stdlib' -> tracemalloc, 'heaptrail' -> heaptrail."""
    if name == "stdlib":
        import tracemalloc
        return tracemalloc
    if name == "heaptrail":
        import heaptrail
        return heaptrail
    raise ValueError(name)


def ensure_packages(specs):
    """Installs the PyPI packages a benchmark compares against (e.g. {"memray": "memray"}:
    import name -> requirement) into this interpreter's environment when missing."""
    missing = [spec for module, spec in specs.items()
               if subprocess.run([sys.executable, "-c", f"import {module}"],
                                 capture_output=True).returncode != 0]
    if missing:
        progress(f"installing {' '.join(missing)} from PyPI")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                        "--disable-pip-version-check"] + missing, check=True)


def progress(msg):
    print(msg, file=sys.stderr, flush=True)


def summary(values):
    """median and min of a list of numbers (None if empty)."""
    if not values:
        return {"median": None, "min": None, "runs": []}
    return {"median": statistics.median(values), "min": min(values), "runs": list(values)}


def heaptrail_build():
    """Which heaptrail build is measured: version, extension path, its mtime and a short hash."""
    try:
        import hashlib
        import heaptrail
        from heaptrail import _native
    except ImportError as exc:
        return {"error": str(exc)}
    with open(_native.__file__, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    return {"version": heaptrail.__version__, "native": _native.__file__, "sha256": digest,
            "built": time.strftime("%Y-%m-%d %H:%M", time.localtime(
                os.path.getmtime(_native.__file__)))}


def environment():
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "heaptrail": heaptrail_build(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": load,
        "command": " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def header(env, title):
    """The report's first lines; call it after the runs (it records the load average then)."""
    try:
        env["loadavg_at_end"] = os.getloadavg()
    except OSError:
        env["loadavg_at_end"] = None
    start, end = env["loadavg_at_start"], env["loadavg_at_end"]
    load = f", load average {start[0]:.2f} at start, {end[0]:.2f} at end" if start and end else ""
    lines = [title,
             f"Python {env['python']} ({env['implementation']}) on {env['platform']}, "
             f"{env['cpus']} CPUs{load}",
             _describe_build(env["heaptrail"]),
             f"command: {env['command']}"]
    env["heaptrail_at_end"] = heaptrail_build()
    if env["heaptrail_at_end"] != env["heaptrail"]:
        lines.append("WARNING: heaptrail was reinstalled during this run; now "
                     + _describe_build(env["heaptrail_at_end"]) + ". Results mix two builds.")
    return "\n".join(lines)


def _describe_build(build):
    if "error" in build:
        return f"heaptrail: not importable ({build['error']})"
    return f"heaptrail {build['version']}, extension built {build['built']} (sha256 {build['sha256']})"


def table(headers, rows, align=None):
    """An aligned text table; ``align`` is a string of 'l'/'r' per column (default: first
    column left, the others right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    cells = [[str(c) for c in headers]] + [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def fmt(row):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w)
                         for c, w, a in zip(row, widths, align)).rstrip()

    out = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    out += [fmt(r) for r in cells[1:]]
    return "\n".join(out)


def emit(args, text, data):
    """Print the report; write JSON if asked."""
    if args.json == "-":
        print(text, file=sys.stderr)
        print(json.dumps(data, indent=2))
        return
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        print(f"\nJSON written to {args.json}")


def _unit(s):
    return (1e6, "us", 0) if s < 1e-3 else (1e3, "ms", 1) if s < 1 else (1, "s", 2)


def fmt_seconds(s):
    if s is None:
        return "-"
    scale, unit, digits = _unit(s)
    return f"{s * scale:.{digits}f} {unit}"


def fmt_median_min(median, minimum):
    """'12.3 ms (11.9)': the median, and the minimum in the same unit."""
    scale, unit, digits = _unit(median)
    return f"{median * scale:.{digits}f} {unit} ({minimum * scale:.{digits}f})"


def fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}x"


# ---- counting instead of timing (valgrind's cachegrind) -------------------------------------

#: What a counted run reports: instructions, then reads and writes with their first-level (1)
#: and last-level (L) cache misses.
CACHEGRIND_EVENTS = ("Ir", "I1mr", "ILmr", "Dr", "D1mr", "DLmr", "Dw", "D1mw", "DLmw")


def add_jobs_argument(p):
    """--jobs: how many cachegrind runs at once."""
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="cachegrind runs at once (default: the CPUs; counts do not depend on it)")


def count_all(valgrind, runs, jobs, label):
    """Runs each command of `runs` ({key: (cmd, env, cwd)}) under cachegrind, `jobs` at once,
    printing progress; returns {key: (totals, stdout)}."""
    results = {}
    pool = ThreadPoolExecutor(max(1, jobs))
    try:
        futures = {pool.submit(cachegrind, valgrind, cmd, env=env, cwd=cwd): key
                   for key, (cmd, env, cwd) in runs.items()}
        for done, future in enumerate(futures, 1):
            key = futures[future]
            results[key] = future.result()
            progress(f"[{done}/{len(runs)}] counted {label(key)}: "
                     f"{results[key][0]['Ir'] / 1e6:,.1f} M instructions")
    finally:
        # A failed run ends the whole count at once, not after every queued run has finished.
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def valgrind_or_exit(script):
    """valgrind's path, or exit with how to install it."""
    found = shutil.which("valgrind")
    if found is None:
        raise SystemExit(f"{script}: valgrind is not installed (Debian: apt-get install valgrind)")
    return found


def cachegrind(valgrind, cmd, env=None, cwd=None, timeout=7200):
    """Runs `cmd` under cachegrind (caches simulated); returns its totals (a dict of
    CACHEGRIND_EVENTS) and its stdout. Counts do not depend on the machine's speed or load."""
    fd, counts_file = tempfile.mkstemp(prefix="cachegrind-", dir=cwd)
    os.close(fd)
    full = [valgrind, "--tool=cachegrind", "--cache-sim=yes",
            f"--cachegrind-out-file={counts_file}"] + list(cmd)
    try:
        proc = subprocess.run(full, capture_output=True, text=True, env=env, cwd=cwd,
                              timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{shlex.join(cmd[:4])} ... under cachegrind failed (exit "
                               f"{proc.returncode}):\n{proc.stderr[-3000:]}")
        with open(counts_file) as f:
            text = f.read()
    finally:
        os.unlink(counts_file)
    events = re.search(r"^events:\s*(.+)$", text, re.M).group(1).split()
    totals = re.search(r"^summary:\s*(.+)$", text, re.M).group(1).split()
    values = dict(zip(events, map(int, totals)))
    missing = [e for e in CACHEGRIND_EVENTS if e not in values]
    if missing:
        raise RuntimeError(f"cachegrind reported no {', '.join(missing)} (events: {events})")
    return values, proc.stdout


def per_unit(with_work, without, units):
    """Counts of one unit of work (a loop, a request, an iteration): a run doing `units` of it
    minus a run doing none (start-up, imports), divided by `units`."""
    return {e: max(with_work[e] - without[e], 0) / units for e in CACHEGRIND_EVENTS}


def estimated_cycles(counts):
    """A cycle estimate from cachegrind's counts: Ir + 10 x first-level misses + 100 x
    last-level misses (a model: no branch prediction, TLB or frequency)."""
    first = counts["I1mr"] + counts["D1mr"] + counts["D1mw"]
    last = counts["ILmr"] + counts["DLmr"] + counts["DLmw"]
    return counts["Ir"] + 10 * first + 100 * last
