"""What heaptrail does inside each Python process started by `heaptrail run`: watch for leaks
from start-up (settings from HEAPTRAIL_* variables), log verdict changes as they happen, and
print a summary of the verdicts when the process exits. A forked worker gets a watcher of its
own, appending to the same report (each line has its pid)."""

import atexit
import logging
import os
import sys
from dataclasses import replace

from . import _native
from ._classes import _format_rate, _format_size
from ._settings import Settings
from ._sinks import entry_details, site_text
from ._watcher import Watcher

_state = {}


def start_from_environment():
    _log_to_stderr()
    # Read once: a bad variable is one warning (`heaptrail run` refuses them up front).
    settings = Settings.from_environment()
    _state.update(watcher=Watcher(settings).start(), pid=os.getpid(), settings=settings)
    atexit.register(_summary_at_exit)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_restart_in_child)


def _log_to_stderr():
    log = logging.getLogger("heaptrail")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def _restart_in_child():
    # The parent's watcher thread does not exist in the child: start a fresh one and forget
    # the parent's verdict history. It appends to the same report (whole lines, its pid in
    # each): servers that recycle workers do not leave a file per worker ever started.
    # A worker cannot serve metrics on the parent's port: only the parent keeps the endpoint.
    settings = _state["settings"]
    try:
        watcher = Watcher(replace(settings, prometheus="")).start()
        _state.update(watcher=watcher, pid=os.getpid())
    except Exception as exc:  # never break the worker
        _state.update(watcher=None)
        print(f"heaptrail: not watching forked process {os.getpid()}: {exc}", file=sys.stderr)


def _summary_at_exit():
    watcher = _state.get("watcher")
    if watcher is None or os.getpid() != _state.get("pid"):
        return
    # The last regular window, not a new one: at exit the program is winding down (threads
    # joined, buffers released) and a sample taken now says nothing about its steady state.
    report = watcher.report or watcher.check_now(timeout=5)
    watcher.stop(timeout=5)
    sys.stderr.write("\n".join(summary_lines(report, watcher.windows)) + "\n")


def summary_lines(report, windows):
    """The verdicts of the last window, as a person wants to read them at exit."""
    pid = os.getpid()
    if report is None:
        return [f"heaptrail [pid {pid}]: no window was taken"]
    sampled = (f" (sampled every {_format_rate(report['sample_rate'])}: sizes are "
               "estimates)" if report.get("sample_rate") else "")
    lines = [f"heaptrail [pid {pid}]: {windows} windows of {report['interval']:g} s; traced "
             f"{_format_size(report['traced_bytes'], False)}, RSS {_format_size(report['rss_bytes'], False)}; "
             f"process verdict: {report['process_verdict']}{sampled}"]
    rows = {(s["filename"], s["lineno"]): s for s in report["sites"]}
    for entry in report.get("leaks", ()):
        site = entry["site"]
        row = rows.get((site["filename"], site["lineno"]), {})
        confidence = f" (confidence {row['confidence']:.2f})" if row else ""
        lines.append(f"heaptrail [pid {pid}]: LEAK at {site_text(site)}: "
                     f"{_format_size(entry['size'], False)} live in {entry['count']} blocks, growing "
                     f"{_format_size(entry['bytes_per_second'], True)}/s{confidence}")
        lines.extend(f"    {part}" for part in entry_details(entry))
        if row.get("traceback"):
            lines.append("    allocated at (most recent call first):")
            lines.extend(f"      {f}:{n}" for f, n in row["traceback"][:8])
    for row in report["sites"]:
        where = f"heaptrail [pid {pid}]: {row['verdict'].upper()} at {site_text(row)}: "
        if row["verdict"] == _native.FIXED:
            lines.append(f"{where}was leaking, now flat at {_format_size(row['size'], False)} "
                         f"in {row['count']} blocks")
        elif row["verdict"] == _native.SUSPECT:
            lines.append(f"{where}{_format_size(row['size'], False)} live in {row['count']} blocks, "
                         f"growing {_format_size(row['bytes_per_second'], True)}/s "
                         f"(confidence {row['confidence']:.2f})")
    if not report.get("leaks"):
        lines.append(f"heaptrail [pid {pid}]: no leak found")
    counts = {}
    for site in report["sites"]:
        if site["verdict"] not in _native.ALWAYS_REPORTED:
            counts[site["verdict"]] = counts.get(site["verdict"], 0) + 1
    if counts:
        lines.append(f"heaptrail [pid {pid}]: other sites shown: " +
                     ", ".join(f"{n} {v}" for v, n in sorted(counts.items())))
    return lines
