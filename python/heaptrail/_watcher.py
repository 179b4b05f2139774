"""The leak watcher: a background thread that takes a snapshot every interval, reduces it to
live memory per site in the user's code, and asks the Rust TrendDetector which sites leak.

Each window becomes one report (schema "heaptrail.watch/2", see the README) handed to the
sinks: the `heaptrail` logger, a JSON Lines file, a Prometheus endpoint, a callback. Sites the
trend detector calls leaks go through the holder analysis (_leaks.py), which groups them into
one leak entry per holder.
"""

import json
import logging
import os
import sys
import sysconfig
import threading
import time
from collections import deque

from . import _native
from ._process_memory import rss_bytes
from ._settings import Settings, sample_bytes
from ._sinks import CallbackSink, JsonLinesSink, LoggingSink
from ._leaks import LeakAnalyser

SCHEMA = _native.WATCH_SCHEMA  # "heaptrail.watch/2"
# A site row (TraceTable.sites()) for a key the detector reports but the window's sites lack.
_UNKNOWN_SITE = {"filename": "<unknown>", "lineno": 0, "frames": (), "function": None}
# Windows kept in Watcher.history. A report as Python objects is ~15 KB (dicts per site and
# frame); the history keeps each as its JSON line (~3 KB) and decodes on demand, because the
# history is part of what heaptrail costs the application it watches.
HISTORY = 100

log = logging.getLogger("heaptrail")


def library_patterns():
    """Files that are not the user's code: the standard library, installed packages and
    heaptrail itself, and generated code -- any "file" named like ``<...>`` (``<string>``,
    ``<template>``, ``<attrs generated init ...>``, ``<frozen ...>``, ``<unknown>``), which
    has no line a user can edit. Allocations made there are reported at the caller's line."""
    dirs = {sysconfig.get_path(name) for name in ("stdlib", "platstdlib", "purelib", "platlib")}
    dirs.update(p for p in sys.path if p.endswith(("site-packages", "dist-packages")))
    dirs.add(os.path.dirname(os.path.abspath(__file__)))
    patterns = [os.path.join(d, "*") for d in sorted(filter(None, dirs))]
    return patterns + ["<*>"]


class Watcher:
    """Background leak detection in this process. Create with :func:`heaptrail.watch`."""

    def __init__(self, settings, callback=None, detector_options=None, clock=time.monotonic,
                 log_windows=True):
        """clock: the windows' time axis (the pytest plugin counts iterations instead of
        seconds). log_windows: tell leaks and fixes on the `heaptrail` logger."""
        self.settings = settings
        self._detector = _native.TrendDetector(**(detector_options or {}))
        self._clock = clock
        self._library = library_patterns()
        self._sinks = [LoggingSink(log)] if log_windows else []
        if settings.report:
            self._sinks.append(JsonLinesSink(settings.report, settings.report_max_bytes,
                                             settings.report_keep))
        if callback is not None:
            self._sinks.append(CallbackSink(callback))
        self._prometheus = None
        if settings.prometheus_address():
            from ._prometheus import PrometheusEndpoint
            try:
                self._prometheus = PrometheusEndpoint(settings.prometheus_address(),
                                                      profiles=self)
                self._sinks.append(self._prometheus)
            except OSError as exc:
                # A port already taken (another process of the same command, a restart)
                # costs the metrics, never the watching or the application.
                log.warning("heaptrail: cannot serve metrics on %s: %s; watching without "
                            "the endpoint", settings.prometheus, exc.strerror or exc)
        self._pyroscope = None
        if settings.pyroscope:
            from ._pyroscope import PyroscopeSink, parse_labels
            self._pyroscope = PyroscopeSink(
                settings.pyroscope, profile=self._window_profile,
                app_name=settings.pyroscope_app or None,
                labels=parse_labels(settings.pyroscope_labels))
            self._sinks.append(self._pyroscope)
        self._history = deque(maxlen=HISTORY)  # JSON lines (str), oldest first
        self._last = None         # the latest report as a dict
        self._last_window = None  # (report, per-traceback totals) of the latest window, one
                                  # reference swapped at once: profiles pair them right
        self._site_info = {}      # key -> site row (TraceTable.sites()) of the last window
        self._verdicts = {}       # (filename, lineno) -> last verdict, rows of the last window
        self._leaks = LeakAnalyser(self._library, settings.patterns("include"),
                                   settings.patterns("exclude"))
        self._window = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one window at a time (thread vs check_now)
        self._thread = None
        self._started_tracing = False
        self.pauses = deque(maxlen=HISTORY)  # seconds each window's snapshot held the GIL

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self, background=True):
        """Start tracing if needed and, when `background`, the thread that takes a window
        every interval (else windows are taken by check_now() alone)."""
        # The tracer completes tracebacks of library frames only with the user's frame found
        # beyond the frame limit, by the same rules as the sites (see docs/attribution.md).
        _native._set_user_code_rules(self._library, self.settings.patterns("include"),
                                     self.settings.patterns("exclude"))
        if not _native.is_tracing():
            _native.start(self.settings.nframe, self.settings.sample)
            self._started_tracing = True
        elif _native.get_sample_rate() != self.settings.sample:
            log.info("heaptrail: already tracing in %s mode; the watcher keeps that mode",
                     "sampled" if _native.get_sample_rate() else "exact")
        elif _native.get_traceback_limit() < self.settings.nframe:
            # Raises the limit, keeps the traces and the mode (exact or sampled) in force.
            _native.start(self.settings.nframe, _native.get_sample_rate())
        if not background:
            return self
        self._thread = threading.Thread(target=self._run, name="heaptrail-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout=10.0):
        """Stop watching (and tracing, if the watcher started it). Waits up to `timeout`
        seconds for a window in progress; a window that does not end (a callback that
        blocks) is left behind, said once on the `heaptrail` logger: stopping must never hang
        the application (it runs at exit)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("heaptrail: the watcher's window did not end within %g s (a "
                            "callback that blocks?); stopping without it", timeout)
        for sink in self._sinks:
            sink.close()
        if self._started_tracing and _native.is_tracing():
            _native.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    @property
    def running(self):
        return self._thread is not None and self._thread.is_alive()

    @property
    def report(self):
        """The latest window's report (a dict, schema "heaptrail.watch/2"), or None."""
        return self._last

    @property
    def windows(self):
        """Windows taken so far (`history` keeps only the last HISTORY of them)."""
        return self._window

    @property
    def history(self):
        """Reports of the last windows (at most HISTORY), oldest first: fresh dicts."""
        return [json.loads(line) for line in list(self._history)]

    # ---- the windows -------------------------------------------------------------------------

    def _run(self):
        _native._ignore_current_thread(True)  # the watcher's own objects are not traced
        failures = set()
        while not self._stop.wait(self.settings.interval):
            try:
                self.check_now()
            except Exception as exc:  # a bad window must not kill the watcher
                key = (type(exc).__name__, str(exc)[:200])
                if key not in failures and len(failures) < 20:  # each failure said once
                    failures.add(key)
                    log.exception("heaptrail: watcher window failed")

    def check_now(self, timeout=-1):
        """Take one window now and return its report; None if not tracing, or if another
        window did not end within `timeout` seconds (default: wait)."""
        if not self._lock.acquire(timeout=timeout):
            return None
        try:
            if not _native.is_tracing():
                return None
            return self._take_window()
        finally:
            self._lock.release()

    def _take_window(self):
        now, mono = time.time(), self._clock()
        # Code objects nothing but heaptrail references (compiled, run, thrown away) must not
        # be kept alive by heaptrail with blocks they own: let go of them first.
        _native._release_orphaned_code()
        table = _native._get_traceback_totals()  # per-traceback totals: a short pause
        traced, peak = _native.get_traced_memory()
        _native.reset_peak()  # the peak of the *next* window
        self.pauses.append(_native._last_snapshot_pause())
        rss = rss_bytes()
        sites = table.sites(self._library, self.settings.patterns("include"),
                            self.settings.patterns("exclude"))
        self._site_info = {s["key"]: s for s in sites}
        judged = self._detector.observe(
            mono, rss, traced, peak, [(s["key"], s["size"], s["count"]) for s in sites],
            sample_rate=_native.get_sample_rate())
        self._window = judged["window"]
        report = {
            "schema": SCHEMA,
            "time": round(now, 3),
            "pid": os.getpid(),
            "window": judged["window"],
            "interval": self.settings.interval,
            "rss_bytes": rss,
            "traced_bytes": traced,
            "traced_peak_bytes": peak,
            "sample_rate": _native.get_sample_rate() or None,
            "process_verdict": judged["process_verdict"],
            "process_confidence": round(judged["process_confidence"], 4),
            "sites": self._site_rows(judged["sites"]),
        }
        report["leaks"] = self._leaks.entries(judged["window"], report["sites"])
        for row in report["sites"]:
            del row["_key"]
        transitions = self._transitions(report["sites"])
        self._last = report
        self._last_window = (report, table)
        self._history.append(_native._encode_window(report))
        for sink in self._sinks:
            sink.emit(report, transitions)
        return report

    # ---- heap profiles: the endpoint's /debug/pprof/heap, the Pyroscope sender --------------

    def heap_totals(self):
        """The tracer's live bytes and blocks per traceback now (a pause as long as a window's
        snapshot), or None when not tracing."""
        return _native._get_traceback_totals() if _native.is_tracing() else None

    def heap_profile(self, table, base=None, seconds=0, report=None):
        """`table`'s live heap as gzipped pprof bytes (with `base`: the growth since `base`,
        over `seconds`), each sample labelled with its site's verdict and leak pattern in
        `report` (default: the latest window's). Built in Rust, without the GIL."""
        return _native.heap_profile(
            table, base=base, seconds=float(seconds), labels=site_labels(report or self._last),
            library=self._library, include=self.settings.patterns("include"),
            exclude=self.settings.patterns("exclude"),
            time_nanos=round((report or {}).get("time", time.time()) * 1e9))

    def _window_profile(self):
        """The latest window's live heap as gzipped pprof bytes (no new snapshot; labelled by
        that window's verdicts, stamped with its time); None before the first window."""
        window = self._last_window
        if window is None:
            return None
        report, table = window
        return self.heap_profile(table, report=report)

    def _site_rows(self, judged):
        """The report's site rows from the detector's (same field names), with the site's
        place in the code added (file, line, the function running it when known, traceback);
        the leaks, suspects and fixed sites plus the `top` others."""
        rows = []
        for row in judged:
            if len(rows) >= self.settings.top and row["verdict"] not in _native.ALWAYS_REPORTED:
                continue
            key = row.pop("key")
            site = self._site_info.get(key, _UNKNOWN_SITE)
            row.update(_key=key, filename=site["filename"], lineno=site["lineno"])
            if site["function"]:
                row["function"] = site["function"]
            row.update(traceback=[[f, n] for f, n in site["frames"]],
                       bytes_per_second=round(row["bytes_per_second"], 3),
                       confidence=round(row["confidence"], 4))
            rows.append(row)
        return rows

    def _transitions(self, rows):
        """(row, old verdict) for sites whose verdict changed this window."""
        changed = []
        verdicts = {}
        for row in rows:
            key = (row["filename"], row["lineno"])
            old = self._verdicts.get(key)
            if old != row["verdict"]:
                changed.append((row, old))
            verdicts[key] = row["verdict"]
        self._verdicts = verdicts
        return changed


def site_labels(report):
    """pprof labels per site of `report`: ``verdict`` for each site row, ``pattern`` for the
    sites of a leak entry. As (filename, lineno, [(key, value)]) rows for _native.heap_profile."""
    if not report:
        return []
    labels = {(row["filename"], row["lineno"]): [("verdict", row["verdict"])]
              for row in report["sites"]}
    for entry in report.get("leaks", ()):
        if entry.get("pattern"):
            for site in entry.get("sites", ()) or (entry["site"],):
                key = (site["filename"], site["lineno"])
                pairs = labels.setdefault(key, [])
                if ("pattern", entry["pattern"]) not in pairs:
                    pairs.append(("pattern", entry["pattern"]))
    return [(filename, lineno, pairs) for (filename, lineno), pairs in labels.items()]


def watch(interval=None, *, nframe=None, report=None, prometheus=None, callback=None,
          include=None, exclude=None, top=None, report_max_bytes=None, report_keep=None,
          sample=None, pyroscope=None, pyroscope_app=None, pyroscope_labels=None,
          **detector_options):
    """Start background leak detection in this process and return the :class:`Watcher`.

    Starts tracing if needed. Every `interval` seconds (default 60) the watcher takes a
    snapshot, updates a time series per allocation site in your code and classifies each site
    as ``leak``, ``suspect``, ``warming-up``, ``plateau`` or ``fixed``; the process as ``ok``,
    ``python-growth``, ``native-growth``, ``transient-peaks``, ``allocator-retention`` or
    ``unknown`` (RSS unreadable).

    Each argument left as None is read from its HEAPTRAIL_* environment variable
    (HEAPTRAIL_INTERVAL, HEAPTRAIL_NFRAME, HEAPTRAIL_REPORT, HEAPTRAIL_PROMETHEUS,
    HEAPTRAIL_INCLUDE, HEAPTRAIL_EXCLUDE, HEAPTRAIL_TOP, HEAPTRAIL_REPORT_MAX_BYTES,
    HEAPTRAIL_REPORT_KEEP, HEAPTRAIL_SAMPLE, HEAPTRAIL_PYROSCOPE, HEAPTRAIL_PYROSCOPE_APP,
    HEAPTRAIL_PYROSCOPE_LABELS), else its default.

    sample: sampled mode for production (see heaptrail.start): True for the default rate
    (512 KiB), a number of bytes, or 0 / False for exact tracing (the default). Reports, metrics
    and verdicts then rest on unbiased estimates; a leak is flagged a few windows later than in
    exact mode, and only if it grows by well over the rate per window (see the README).

    report: path of a JSON Lines file, one report per window, rotated past report_max_bytes
    (default 64 MiB; 0: never) to report.1 ... report.<report_keep> (default 2; 0: the file
    is emptied instead). prometheus: "HOST:PORT" (or a
    port, bound on 127.0.0.1) to serve metrics on. callback: called with each report dict.
    include / exclude: fnmatch patterns (lists, or comma-separated strings) of files that are /
    are never the user's code. detector_options: TrendDetector settings (history, min_windows,
    leak_p, suspect_p, min_growth_bytes, min_rate, fixed_after, warm_skip).

    pyroscope: URL of a Pyroscope server (``http://HOST:4040``) to push each window's heap
    profile to, from a background thread that never blocks the application; basic auth from
    HEAPTRAIL_PYROSCOPE_USER / HEAPTRAIL_PYROSCOPE_PASSWORD (or ``user:password@`` in the URL),
    tenant from HEAPTRAIL_PYROSCOPE_TENANT. pyroscope_app: the application name (default: the
    program's name). pyroscope_labels: extra labels, a dict or "NAME=VALUE,...".
    """
    as_text = lambda v: ",".join(v) if isinstance(v, (list, tuple)) else v  # noqa: E731
    if isinstance(pyroscope_labels, dict):
        pyroscope_labels = ",".join(f"{k}={v}" for k, v in pyroscope_labels.items())
    settings = Settings.from_environment(
        interval=interval, nframe=nframe, report=report, prometheus=prometheus,
        include=as_text(include), exclude=as_text(exclude), top=top,
        report_max_bytes=report_max_bytes, report_keep=report_keep,
        sample=sample_bytes(sample), pyroscope=pyroscope, pyroscope_app=pyroscope_app,
        pyroscope_labels=pyroscope_labels)
    return Watcher(settings, callback=callback, detector_options=detector_options).start()
