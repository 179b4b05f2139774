"""heaptrail's pytest plugin: a test fails when the code it runs leaks, and its failure names
the leaking line, the bytes and blocks per iteration, who holds them and the fix.

Registered through the ``pytest11`` entry point and inactive unless asked:

* ``@pytest.mark.no_leaks`` on a test (or a class, or ``pytestmark`` in a module), or
  ``--heaptrail-leaks`` to check every test of the run;
* ``@pytest.mark.limit_memory("24 MB")``: the test fails when its traced peak is larger.

How a test is checked (see the README, "Catching leaks in tests"): its fixtures are set up once,
as for any test; its body then runs ``warmup`` times (caches fill, lazy imports happen), then
``iterations`` times with heaptrail tracing. After each iteration (and a garbage collection)
the leak watcher takes a window whose clock counts iterations, so the trend detector sees each
site's live memory *per iteration*: a site that grows iteration after iteration is a leak; one
that filled during the warm-up, or fills and stops, is not. The leaking sites then go through
the watcher's holder analysis, which names who keeps them and the pattern.
"""

import gc
import inspect
import itertools
import sys

import pytest

from ._classes import _format_size
from ._settings import parse_bytes
from ._sinks import entry_details

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
                    help=f"iterations run before measuring (default {WARMUP})")


def pytest_configure(config):
    # Bad values on the command line stop the run before any test, as pytest's own do.
    iterations = config.getoption("heaptrail_iterations")
    if iterations is not None and iterations < MIN_ITERATIONS:
        raise pytest.UsageError(f"heaptrail: iterations must be an integer >= {MIN_ITERATIONS}, "
                                f"not {iterations!r}")
    warmup = config.getoption("heaptrail_warmup")
    if warmup is not None and warmup < 0:
        raise pytest.UsageError(f"heaptrail: warmup must be an integer >= 0, not {warmup!r}")
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
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise pytest.UsageError(f"heaptrail: warmup must be an integer >= 0, not "
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


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    leaks_marker = pyfuncitem.get_closest_marker("no_leaks")
    limit_marker = pyfuncitem.get_closest_marker("limit_memory")
    if limit_marker is not None and _memray_active(pyfuncitem.config):
        limit_marker = None  # pytest-memray, run with --memray, enforces the same marker
    check_leaks = leaks_marker is not None or pyfuncitem.config.getoption("heaptrail_leaks")
    if not check_leaks and limit_marker is None:
        return None  # pytest calls the test as usual
    function = pyfuncitem.obj
    if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
        return None  # an async plugin runs it; heaptrail cannot repeat it here
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    body = lambda: function(**args)  # noqa: E731
    limit = _limit_bytes(limit_marker) if limit_marker is not None else None
    options = _Options(leaks_marker, pyfuncitem.config) if check_leaks else None
    if limit is not None:
        _check_peak(pyfuncitem, body, limit)
    if options is not None:
        _check_leaks(pyfuncitem, body, options, ran_once=limit is not None)
    return True


def _check_peak(item, body, limit):
    import heaptrail
    started = not heaptrail.is_tracing()
    if started:
        heaptrail.start(NFRAME)
    try:
        heaptrail.reset_peak()
        base = heaptrail.get_traced_memory()[0]
        body()
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
    _native._release_unused_tracebacks()
    gc.collect()


def _check_leaks(item, body, options, ran_once):
    from . import _native
    from ._settings import Settings
    from ._watcher import Watcher
    for _ in range(options.warmup - ran_once):
        body()
    iteration = itertools.count(1)
    settings = Settings(interval=1.0, nframe=NFRAME, top=100_000, include=options.include,
                        exclude=options.exclude)
    # Windows on an iteration clock: "per second" below means per iteration. min_growth is the
    # slope below which a site is not a leak; warm_skip 1, because the warm-up is done.
    detector = {"history": options.iterations, "min_rate": float(options.min_growth),
                "min_growth_bytes": float(options.min_growth) * 2, "warm_skip": 1}
    watcher = Watcher(settings, detector_options=detector, clock=lambda: float(next(iteration)),
                      log_windows=False).start(background=False)
    counts = []  # per iteration: {(filename, lineno): live blocks}
    # Only the body is traced on this thread: pytest's and heaptrail's own work between
    # iterations (this bookkeeping, the windows) is not the test's memory. (Frees are always
    # seen; other threads the body starts are traced.)
    traced_before = not _native._ignore_current_thread(True)
    try:
        for _ in range(options.iterations):
            _native._ignore_current_thread(False)
            try:
                body()
            finally:
                _native._ignore_current_thread(True)
            _clear_caches()
            report = watcher.check_now()
            if report is None:
                return  # something stopped tracing: nothing to judge
            counts.append({(s["filename"], s["lineno"]): s["count"] for s in report["sites"]})
    finally:
        watcher.stop()
        _native._ignore_current_thread(not traced_before)
    leaks = report.get("leaks") or []
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
        lines.append(f"LEAK at {where[0]}:{where[1]}: {_format_size(entry['bytes_per_second'], True)}"
                     f" and {blocks:+.1f} blocks per iteration; {_format_size(entry['size'], False)}"
                     f" live in {entry['count']} blocks at the end")
        lines.extend(f"    {part}" for part in entry_details(entry))
        frames = list(itertools.takewhile(lambda frame: frame[0] != __file__,
                                          rows.get(where, {}).get("traceback") or []))
        if frames:
            lines.append("    allocated at (most recent call first):")
            lines.extend(f"      {f}:{n}" for f, n in frames[:8])
    pytest.fail("\n".join(lines), pytrace=False)
