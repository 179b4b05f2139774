"""heaptrail's pytest plugin: a test fails when the code it runs leaks, and its failure names
the leaking line, the bytes and blocks per iteration, who holds them and the fix.

Registered through the ``pytest11`` entry point and inactive unless asked:

* ``@pytest.mark.no_leaks`` on a test (or a class, or ``pytestmark`` in a module), or
  ``--heaptrail-leaks`` to check every test of the run;
* ``@pytest.mark.limit_memory("24 MB")``: the test fails when its traced peak is larger.

How a test is checked (see the README, "Catching leaks in tests"): its fixtures are set up once,
as for any test; its body then runs ``warmup`` times (pytest's own call is the first; caches
fill, lazy imports happen), then ``iterations`` times with heaptrail tracing. A body is what
pytest runs for the test: the function (an ``async def`` one through the plugin that runs it,
e.g. pytest-asyncio), or a ``unittest.TestCase`` method with its ``setUp`` and ``tearDown``.
After each iteration (and a garbage collection) the leak watcher takes a window whose clock
counts iterations, so the trend detector sees each site's live memory *per iteration*: a site
that grows iteration after iteration is a leak; one that filled during the warm-up, or fills
and stops, is not. The leaking sites then go through the watcher's holder analysis, which
names who keeps them and the pattern.
"""

import gc
import inspect
import itertools
import os
import sys
import unittest
import warnings

import _pytest
import pluggy
import pytest
from _pytest.unittest import TestCaseFunction

from ._classes import _format_size
from ._settings import parse_bytes
from ._sinks import entry_details, site_text

ITERATIONS = 10  # measured iterations (>= MIN_ITERATIONS)
WARMUP = 3       # iterations run before measuring
# The detector needs min_windows + warm_skip samples before it can call a leak (see
# TrendConfig), and one more to confirm it: 6 + 1 + 1.
MIN_ITERATIONS = 8
NFRAME = 16


def pytest_addoption(parser):
    group = parser.getgroup("heaptrail", "heaptrail: leak checks")
    group.addoption("--heaptrail-leaks", action="store_true", default=False,
                    help="check every test for leaks: run its body repeatedly and fail it when "
                         "a line's live memory grows with each iteration (tests marked "
                         "no_leaks are checked without it)")
    group.addoption("--heaptrail-iterations", type=int, default=None, metavar="N",
                    help=f"measured iterations per checked test (default {ITERATIONS}, at "
                         f"least {MIN_ITERATIONS}); a marker's own value wins")
    group.addoption("--heaptrail-warmup", type=int, default=None, metavar="N",
                    help=f"runs before measuring, pytest's own call of the test included "
                         f"(default {WARMUP}, at least 1)")


def pytest_configure(config):
    # Bad values on the command line stop the run before any test, as pytest's own do.
    iterations = config.getoption("heaptrail_iterations")
    if iterations is not None and iterations < MIN_ITERATIONS:
        raise pytest.UsageError(f"heaptrail: iterations must be an integer >= {MIN_ITERATIONS}, "
                                f"not {iterations!r}")
    warmup = config.getoption("heaptrail_warmup")
    if warmup is not None and warmup < 1:
        raise pytest.UsageError(f"heaptrail: warmup must be an integer >= 1, not {warmup!r}")
    if not WRAPPERS:
        message = (f"heaptrail's pytest plugin needs pytest 8 or later (pluggy {pluggy.__version__}"
                   " has no hook wrappers): no_leaks and limit_memory are not checked")
        if config.getoption("heaptrail_leaks"):
            raise pytest.UsageError(message)
        warnings.warn(pytest.PytestConfigWarning(message), stacklevel=2)
    config.addinivalue_line(
        "markers",
        "no_leaks(iterations=10, warmup=3, min_growth=1, include=None, exclude=None): fail "
        "the test when a line's live memory grows across repeated runs of its body "
        "(heaptrail). min_growth: bytes per iteration below which growth is not a leak; "
        "include / exclude: fnmatch patterns of files that are / are never the code to blame.")
    config.addinivalue_line(
        "markers",
        "limit_memory(limit): fail the test when the memory it allocates at its peak "
        "(heaptrail's traced peak) exceeds limit, e.g. \"24 MB\" or 25165824.")


class _Options:
    """A test's leak-check settings: the marker's, else the command line's, else defaults."""

    def __init__(self, marker, config):
        kwargs = dict(marker.kwargs) if marker is not None else {}
        unknown = set(kwargs) - {"iterations", "warmup", "min_growth", "include", "exclude"}
        if unknown or (marker is not None and marker.args):
            raise pytest.UsageError(f"no_leaks: unknown arguments {sorted(unknown) or marker.args}"
                                    " (use iterations=, warmup=, min_growth=, include=, exclude=)")
        self.iterations = _first(kwargs.get("iterations"),
                                 config.getoption("heaptrail_iterations"), ITERATIONS)
        self.warmup = _first(kwargs.get("warmup"), config.getoption("heaptrail_warmup"), WARMUP)
        self.min_growth = kwargs.get("min_growth", 1)
        self.include = _patterns(kwargs.get("include"))
        self.exclude = _patterns(kwargs.get("exclude"))
        if not isinstance(self.iterations, int) or self.iterations < MIN_ITERATIONS:
            raise pytest.UsageError(f"heaptrail: iterations must be an integer >= "
                                    f"{MIN_ITERATIONS}, not {self.iterations!r}")
        if not isinstance(self.warmup, int) or self.warmup < 1:
            raise pytest.UsageError(f"heaptrail: warmup must be an integer >= 1, not "
                                    f"{self.warmup!r}")
        if not isinstance(self.min_growth, (int, float)) or self.min_growth < 0:
            raise pytest.UsageError(f"heaptrail: min_growth must be a number of bytes >= 0, "
                                    f"not {self.min_growth!r}")


def _first(*values):
    return next(v for v in values if v is not None)


def _patterns(value):
    if value is None:
        return ""
    return value if isinstance(value, str) else ",".join(value)


def _limit_bytes(marker):
    if len(marker.args) != 1 or marker.kwargs:
        raise pytest.UsageError('limit_memory takes one limit, e.g. limit_memory("24 MB")')
    limit = marker.args[0]
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        return limit
    try:
        return parse_bytes(str(limit).replace(" ", ""))
    except ValueError:
        raise pytest.UsageError(f"limit_memory: not a size: {limit!r} (e.g. \"24 MB\", "
                                f"\"512 KiB\", 25165824)") from None


def _memray_active(config):
    try:
        return bool(config.getoption("memray"))
    except ValueError:  # pytest-memray not installed
        return False


def _runtest_call(item):
    """Wraps pytest's call of the test. The call itself (the test's first run, traced when it
    has a memory limit) happens at the ``yield``; a leak check then runs the test again: more
    warm-up runs, then the measured iterations. Each run is ``item.runtest()``, so it is the run
    pytest would make: through ``pytest_pyfunc_call`` for a test function (and whatever plugin
    runs it, e.g. pytest-asyncio's event loop for ``async def`` tests), and ``setUp`` / test /
    ``tearDown`` for a ``unittest.TestCase`` method."""
    leaks_marker = item.get_closest_marker("no_leaks")
    limit_marker = item.get_closest_marker("limit_memory")
    if limit_marker is not None and _memray_active(item.config):
        limit_marker = None  # pytest-memray, run with --memray, enforces the same marker
    check_leaks = leaks_marker is not None or item.config.getoption("heaptrail_leaks")
    if not isinstance(item, pytest.Function) or (not check_leaks and limit_marker is None):
        # Doctests and non-Python items run once as usual: a doctest's examples share one
        # namespace and are seldom written to be run twice.
        return (yield)
    limit = _limit_bytes(limit_marker) if limit_marker is not None else None
    options = _Options(leaks_marker, item.config) if check_leaks else None
    if limit is None:
        result = yield
    else:
        result = yield from _check_peak(item, limit)
    if options is not None and not _failed(item):
        _check_leaks(item, options)
    return result


# New-style hook wrappers need pluggy 1.1 (pytest 8 requires 1.5). On older ones the plugin
# leaves pytest's calls alone, and says so when asked to check (pytest_configure).
WRAPPERS = "wrapper" in inspect.signature(pluggy.HookimplMarker.__call__).parameters
if WRAPPERS:
    pytest_runtest_call = pytest.hookimpl(wrapper=True)(_runtest_call)


def _failed(item):
    """A unittest.TestCase method reports its failures and skips to pytest's result object
    (``item._excinfo``) instead of raising them; a test function raises."""
    return bool(getattr(item, "_excinfo", None))


def _run(item):
    """One more run of the test, as pytest makes it. A unittest.TestCase method runs under a
    plain ``unittest.TestResult``, not pytest's: its setUp, test and tearDown are the same, but
    its subtests are not reported to pytest again on every run (pytest would keep each report
    until the session ends, and the suite's output would repeat them)."""
    # The warnings a run raises are recorded here and dropped, not added to the list pytest
    # keeps for the test (the first run's are reported; pytest's filters still apply).
    with warnings.catch_warnings(record=True):
        if not isinstance(item, TestCaseFunction):
            item.runtest()
            return
        result = unittest.TestResult()
        testcase = getattr(item, "_testcase", None) or item.instance
        testcase(result=result)
    problems = result.errors + result.failures
    if problems:
        raise _RunFailed("\n".join(text for _, text in problems))
    if result.unexpectedSuccesses:
        raise _RunFailed("unexpected success")


class _RunFailed(Exception):
    """A repeated run of a unittest.TestCase method failed; the message is unittest's
    traceback text."""


def _check_peak(item, limit):
    """Runs pytest's call of the test (the ``yield``) traced; fails the test when its traced
    peak exceeds `limit`."""
    import heaptrail
    started = not heaptrail.is_tracing()
    if started:
        heaptrail.start(NFRAME)
    try:
        heaptrail.reset_peak()
        base = heaptrail.get_traced_memory()[0]
        result = yield
        peak = heaptrail.get_traced_memory()[1] - base
        largest = heaptrail.take_snapshot().statistics("lineno")[:5] if peak > limit else []
    finally:
        if started:
            heaptrail.stop()
    item.user_properties.append(("heaptrail_peak_bytes", peak))
    if peak > limit:
        lines = [f"heaptrail: {item.name} allocated {_format_size(peak, False)} at its peak, over "
                 f"its limit of {_format_size(limit, False)}"]
        if largest:
            lines.append("    largest allocations still live at its end:")
            lines.extend(f"      {s.traceback[0].filename}:{s.traceback[0].lineno}: "
                         f"{_format_size(s.size, False)} in {s.count} blocks" for s in largest)
        pytest.fail("\n".join(lines), pytrace=False)
    return result


# Types whose instances only hold what others put in them: the owner of a growing container is
# the nearest object on its holder path that is not one of these.
_CONTAINER_TYPES = frozenset({
    "builtins.dict", "builtins.list", "builtins.tuple", "builtins.set", "builtins.frozenset",
    "builtins.cell", "collections.deque", "collections.OrderedDict", "collections.defaultdict",
})
_RUNNER_MODULES = ("_pytest.", "pluggy.", "pytest.")


def _kept_by_runner(entry):
    """Is this growth pytest's own record of the repeated runs (the reports of a test's
    subtests in its terminal reporter, say)? True when the growing container belongs to an
    object of pytest or pluggy (or to one of their modules). An application object a fixture
    made is the owner of its own containers, so its leaks still count."""
    path = entry.get("path") or []
    for edge in reversed(path[:-1]):
        type_name = edge.get("type") or ""
        if type_name == "builtins.module":
            return (edge.get("name") or "").startswith(_RUNNER_MODULES)
        if type_name not in _CONTAINER_TYPES:
            return type_name.startswith(_RUNNER_MODULES)
    return False


def _runner_directories():
    return tuple(os.path.dirname(module.__file__) + os.sep for module in (_pytest, pluggy))


def _is_runner(filename):
    """Is this frame pytest's, pluggy's or this plugin's (the machinery that ran the test)?"""
    return filename == __file__ or filename.startswith(_runner_directories())


def _clear_caches():
    """Garbage; the interpreter's type attribute cache, which keeps a reference to the name of
    each lookup it caches (up to 4096), so code that looks up freshly built names
    (``hasattr(obj, "repr_" + kind)`` in reprlib, run by asyncio) grows by a block now and then
    for thousands of iterations, a bounded cache no test should fail for; and heaptrail's own
    references to code objects of tracebacks no live block uses, which it otherwise lets go
    of in batches (a test that execs fresh source each iteration would look like a leak)."""
    from . import _native
    clear = getattr(sys, "_clear_internal_caches", None) or sys._clear_type_cache  # 3.13: renamed
    clear()
    gc.collect()
    # (Code objects are not tracked by the collector: letting them go frees what they own at
    # once, by reference counting, with no second collection.)
    _native._release_unused_tracebacks()


def _measure(item, options, run):
    """Runs the measured iterations; returns the last window's report and, per iteration,
    {(filename, lineno): live blocks}."""
    from . import _native
    from ._settings import Settings
    from ._watcher import Watcher
    iteration = itertools.count(1)
    settings = Settings(interval=1.0, nframe=NFRAME, top=100_000, include=options.include,
                        exclude=options.exclude)
    # Windows on an iteration clock: "per second" below means per iteration. min_growth is the
    # slope below which a site is not a leak; warm_skip 1, because the warm-up is done.
    detector = {"history": options.iterations, "min_rate": float(options.min_growth),
                "min_growth_bytes": float(options.min_growth) * 2, "warm_skip": 1}
    # Everything alive now (pytest, the libraries, the warm-up's caches) is moved out of the
    # collector's sight, so the collection after each iteration looks only at what the
    # iterations made: a few objects instead of the whole heap. The warm-up's cyclic garbage is
    # collected first from the young generations only: a full collection here, once per test,
    # was a third of the time of a checked suite (it scanned the whole heap, unfrozen after the
    # previous test); the rare warm-up garbage that is older waits, untraced, for the
    # interpreter's next full collection after this test.
    gc.collect(1)
    gc.freeze()
    watcher = Watcher(settings, detector_options=detector, clock=lambda: float(next(iteration)),
                      log_windows=False).start(background=False)
    counts = []
    report = None
    # Only the body is traced on this thread: pytest's and heaptrail's own work between
    # iterations (this bookkeeping, the windows) is not the test's memory. (Frees are always
    # seen; other threads the body starts are traced.)
    traced_before = not _native._ignore_current_thread(True)
    try:
        for _ in range(options.iterations):
            next(run)
            _native._ignore_current_thread(False)
            try:
                _run(item)
            finally:
                _native._ignore_current_thread(True)
            _clear_caches()
            report = watcher.check_now()
            if report is None:
                break
            counts.append({(s["filename"], s["lineno"]): s["count"] for s in report["sites"]})
    finally:
        watcher.stop()
        _native._ignore_current_thread(not traced_before)
        gc.unfreeze()
    return report, counts


def _check_leaks(item, options):
    run = itertools.count(2)  # pytest's own call was run 1
    try:
        for _ in range(options.warmup - 1):
            next(run)
            _run(item)
        report, counts = _measure(item, options, run)
    except BaseException as exc:
        item.add_report_section("call", "heaptrail", f"the test failed on run {next(run) - 1}, "
                                "while checked for leaks (its first run passed): a test checked "
                                "for leaks must pass when repeated in the same process")
        if isinstance(exc, _RunFailed):
            pytest.fail(str(exc), pytrace=False)
        raise
    if report is None:  # the test stopped heaptrail's tracing (its own start/stop)
        item.user_properties.append(("heaptrail_leaks", "not checked"))
        item.add_report_section("call", "heaptrail", "not checked for leaks: the test stops "
                                "heaptrail's tracing itself")
        return
    leaks = [entry for entry in report.get("leaks") or [] if not _kept_by_runner(entry)]
    item.user_properties.append(("heaptrail_leaks", len(leaks)))
    if not leaks:
        item.add_report_section("call", "heaptrail", f"no leak over {options.iterations} "
                                f"iterations (after {options.warmup} warm-up)")
        return
    lines = [f"heaptrail: {item.name} leaks: {len(leaks)} growing "
             f"{'line' if len(leaks) == 1 else 'lines'} over {options.iterations} iterations "
             f"(after {options.warmup} warm-up)"]
    rows = {(s["filename"], s["lineno"]): s for s in report["sites"]}
    for entry in leaks:
        where = (entry["site"]["filename"], entry["site"]["lineno"])
        first = next((c[where] for c in counts if where in c), 0)
        blocks = (counts[-1].get(where, 0) - first) / max(len(counts) - 1, 1)
        item.user_properties.append(
            ("heaptrail_leak", f"{where[0]}:{where[1]} {entry['bytes_per_second']:.0f} B "
                               f"{blocks:.1f} blocks per iteration"))
        lines.append(f"LEAK at {site_text(entry['site'])}: "
                     f"{_format_size(entry['bytes_per_second'], True)}"
                     f" and {blocks:+.1f} blocks per iteration; {_format_size(entry['size'], False)}"
                     f" live in {entry['count']} blocks at the end")
        lines.extend(f"    {part}" for part in entry_details(entry))
        frames = list(itertools.takewhile(lambda frame: not _is_runner(frame[0]),
                                          rows.get(where, {}).get("traceback") or []))
        if frames:
            lines.append("    allocated at (most recent call first):")
            lines.extend(f"      {f}:{n}" for f, n in frames[:8])
    pytest.fail("\n".join(lines), pytrace=False)
