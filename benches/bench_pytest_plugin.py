"""What checking every test for leaks costs: real test suites from PyPI (tests/real_suites.py,
pinned) timed side by side in one run.

  plain              pytest as the project runs it
  heaptrail          pytest --heaptrail-leaks (every test: warm-up runs, then measured iterations)
  memray             pytest --memray (pytest-memray from PyPI: each test run once under memray)
  memray limit_leaks pytest --memray with pytest-memray's limit_leaks marker on every test (added
                     by a small plugin this script writes; limit set by --leak-limit)

Each configuration is the whole suite in a fresh `python -m pytest` process, wall time from start
to exit, repeated (--repeat) and reported as median (min). The `flagged` columns count the tests
each tool failed that pass plain: for heaptrail, the leaks it reported; for limit_leaks, what
pytest-memray called a leak. The target (issue 11): heaptrail <= plain x (iterations + 1) x 1.3.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import _common  # noqa: E402
import real_suites  # noqa: E402
from heaptrail.pytest_plugin import ITERATIONS  # noqa: E402  (the default measured iterations)

PYTEST_MEMRAY = "pytest-memray==1.11.0"

LIMIT_LEAKS_PLUGIN = '''
import pytest

LIMIT = {limit!r}


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.limit_leaks(LIMIT))
'''


def configurations(args, scratch):
    plugin_dir = Path(scratch)
    (plugin_dir / "bench_limit_leaks_everywhere.py").write_text(
        LIMIT_LEAKS_PLUGIN.format(limit=args.leak_limit))
    configs = {"plain": ([], {}), "heaptrail": (["--heaptrail-leaks"], {})}
    if not args.no_memray:
        configs["memray"] = (["--memray"], {})
        configs["memray limit_leaks"] = (["--memray", "-p", "bench_limit_leaks_everywhere"],
                                         {"extra_path": str(plugin_dir)})
    return configs


def run_suite(suite, options, extra_path, junit, timeout):
    argv, cwd, env = real_suites.pytest_command(suite, *options, junit=junit)
    if extra_path:
        env["PYTHONPATH"] = env["PYTHONPATH"] + os.pathsep + extra_path
    start = time.perf_counter()
    try:
        subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, {}
    seconds = time.perf_counter() - start
    return seconds, {test: outcome for test, (outcome, _) in
                     real_suites.junit_results(junit).items()}


def main():
    p = _common.parser(__doc__.split("\n\n")[0], repeat=3)
    p.add_argument("--no-memray", action="store_true", help="leave pytest-memray out")
    p.add_argument("--leak-limit", default="1 KB",
                   help="limit_leaks' per-location limit for the memray limit_leaks column "
                        "(default '1 KB')")
    p.add_argument("--timeout", type=float, default=1800,
                   help="seconds allowed per suite run (default 1800)")
    args = p.parse_args()
    if args.quick:
        args.repeat = 1
    env = _common.environment()
    if not args.no_memray:
        _common.ensure_packages({"pytest_memray": PYTEST_MEMRAY})
    rows, data = [], {"environment": env, "suites": {}}
    with tempfile.TemporaryDirectory(prefix="bench-pytest-") as scratch:
        configs = configurations(args, scratch)
        for suite in real_suites.SUITES:
            label = f"{suite.name} {suite.version}"
            _common.progress(f"{label}: fetching the sdist" if not suite.directory.exists()
                             else f"{label}: ready")
            real_suites.prepare(suite)
            times = {name: [] for name in configs}
            results = {}
            for repeat in range(args.repeat):
                for name, (options, extra) in configs.items():
                    _common.progress(f"{label}: {name} (run {repeat + 1}/{args.repeat})")
                    junit = Path(scratch) / f"{suite.name}-{name.replace(' ', '-')}.xml"
                    seconds, found = run_suite(suite, options, extra.get("extra_path"), junit,
                                               args.timeout)
                    if seconds is not None:
                        times[name].append(seconds)
                    results[name] = found
            plain_passed = {t for t, o in results["plain"].items() if o == "passed"}
            summary = {name: _common.summary(values) for name, values in times.items()}
            flagged = {name: sorted(t for t in plain_passed if results[name].get(t) != "passed")
                       for name in configs if name != "plain"}
            data["suites"][label] = {"tests": len(results["plain"]), "passed_plain": len(plain_passed),
                                     "seconds": summary, "flagged": flagged}
            base = summary["plain"]["median"]
            row = [label, len(plain_passed), _common.fmt_median_min(base, summary["plain"]["min"])]
            for name in configs:
                if name == "plain":
                    continue
                s = summary[name]
                if s["median"] is None:
                    row += [f"> {args.timeout:.0f} s", "-", "-"]
                    continue
                row += [_common.fmt_median_min(s["median"], s["min"]),
                        _common.fmt_ratio(s["median"] / base), len(flagged[name])]
            target = (ITERATIONS + 1) * 1.3
            ratio = summary["heaptrail"]["median"] / base if summary["heaptrail"]["median"] else None
            row.append(f"{target:.1f}x {'PASS' if ratio and ratio <= target else 'MISS'}")
            rows.append(row)
    headers = ["suite", "tests", "plain"]
    for name in configs:
        if name != "plain":
            headers += [name, "/plain", "flagged"]
    headers.append("target (heaptrail)")
    text = "\n".join([
        _common.header(env, "Checking every test of a real suite for leaks: wall time of the "
                            "whole suite, median (min)"),
        "",
        _common.table(headers, rows),
        "",
        "flagged: tests that pass plain but failed under the tool (heaptrail: leaks reported; "
        f"limit_leaks: over {args.leak_limit} left at one location).",
    ])
    for label, suite_data in data["suites"].items():
        for name, tests in suite_data["flagged"].items():
            if tests:
                text += f"\n  {label}, {name}: " + ", ".join(tests[:10]) + (
                    f" and {len(tests) - 10} more" if len(tests) > 10 else "")
    _common.emit(args, text, data)


if __name__ == "__main__":
    main()
