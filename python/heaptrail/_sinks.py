"""Where the watcher's window reports go: logging, a JSON Lines file, a user callback.
(The Prometheus endpoint is in _prometheus.py.) Every sink has emit(report, transitions)
and close(); `transitions` lists (site row, previous verdict) for sites whose verdict changed."""

import logging
import os

from . import _native
from ._classes import _format_size
from ._report_file import ReportFile


def site_text(line):
    """How a site is named to people: ``app/cache.py:42 in Cache.remember``, or
    ``app/cache.py:42`` when the function running the line is not known. `line`: a site row,
    a leak entry's ``site`` or one of its ``sites``."""
    text = f"{line['filename']}:{line['lineno']}"
    return f"{text} in {line['function']}" if line.get("function") else text


def leak_entry(report, row):
    """The report's leak entry whose line is `row`'s site ({} if none)."""
    for entry in report.get("leaks", ()):
        if (entry["site"]["filename"], entry["site"]["lineno"]) == (row["filename"], row["lineno"]):
            return entry
    return {}


def entry_details(entry):
    """What a person reads after the line: the holder, the pattern and its fix, the other
    sites growing with it."""
    parts = []
    if entry.get("holder"):
        parts.append(f"held by {entry['holder']}")
    elif entry.get("note"):
        parts.append(entry["note"])
    if entry.get("pattern") and entry.get("hint"):  # a known pattern, which has a fix
        parts.append(f"pattern {entry['pattern']}: {entry['hint']}")
    others = [f"{site_text(s)} ({s['role']})" for s in entry.get("sites", ())[1:]]
    if others:
        parts.append("growing with it: " + ", ".join(others[:5])
                     + (f" and {len(others) - 5} more" if len(others) > 5 else ""))
    if entry.get("feeding_line"):
        f = entry["feeding_line"]
        parts.append(f"the holder is library state fed by {site_text(f)}")
    return parts


class LoggingSink:
    """The `heaptrail` logger: WARNING when a site becomes a leak, INFO when a leak is fixed,
    each with structured `extra` fields (heaptrail_site, heaptrail_verdict, ...)."""

    def __init__(self, logger):
        self.logger = logger

    def emit(self, report, transitions):
        for row, old in transitions:
            extra = {
                "heaptrail_site": f"{row['filename']}:{row['lineno']}",
                "heaptrail_function": row.get("function"),
                "heaptrail_verdict": row["verdict"],
                "heaptrail_previous_verdict": old,
                "heaptrail_bytes_per_second": row["bytes_per_second"],
                "heaptrail_size": row["size"],
                "heaptrail_confidence": row["confidence"],
                "heaptrail_window": report["window"],
                "heaptrail_pid": report["pid"],
            }
            if row["verdict"] == _native.LEAK:
                entry = leak_entry(report, row)
                extra.update(heaptrail_holder=entry.get("holder"),
                             heaptrail_pattern=entry.get("pattern"))
                self.logger.warning("heaptrail: leak at %s: %s live, growing %s/s (confidence %.2f)%s",
                                    site_text(row), _format_size(row["size"], False),
                                    _format_size(row["bytes_per_second"], True), row["confidence"],
                                    "".join(f"; {part}" for part in entry_details(entry)),
                                    extra=extra)
            elif row["verdict"] == _native.FIXED:
                self.logger.info("heaptrail: leak at %s is fixed: flat at %s", site_text(row),
                                 _format_size(row["size"], False), extra=extra)

    def close(self):
        pass


class JsonLinesSink:
    """Appends one JSON object per window to a report file (see _report_file.py: whole lines,
    rotation, faults survived), written through the schema's owner, the Rust WindowReport."""

    def __init__(self, path, max_bytes=0, keep=2):
        self.path = os.fspath(path)
        self._file = ReportFile(self.path, max_bytes=max_bytes, keep=keep)

    def emit(self, report, transitions):
        self._file.append((_native._encode_window(report) + "\n").encode("utf-8"))

    def close(self):
        self._file.close()


class CallbackSink:
    """Calls the user's function with each report. Its exceptions are never raised into the
    watcher: the first of each kind is logged with its traceback (the user's bug, to fix),
    repeats are only counted, so a callback failing every window does not flood the log."""

    def __init__(self, callback):
        self.callback = callback
        self._seen = {}  # (exception type, message) -> times

    def emit(self, report, transitions):
        try:
            self.callback(report)
        except Exception as exc:
            key = (type(exc).__name__, str(exc)[:200])
            if len(self._seen) < 100 or key in self._seen:
                self._seen[key] = self._seen.get(key, 0) + 1
            if self._seen.get(key) == 1:
                logging.getLogger("heaptrail").exception(
                    "heaptrail: watch callback failed (repeats of this error are not logged)")

    def close(self):
        pass
