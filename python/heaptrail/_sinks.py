"""Where the watcher's window reports go: logging, a JSON Lines file, a user callback.
(The Prometheus endpoint is in _prometheus.py.) Every sink has emit(report, transitions)
and close(); `transitions` lists (site row, previous verdict) for sites whose verdict changed."""

import json
import logging
import os
import threading

from ._classes import _format_size


def _site_text(row):
    return f"{row['filename']}:{row['lineno']}"


class LoggingSink:
    """The `heaptrail` logger: WARNING when a site becomes a leak, INFO when a leak is fixed,
    each with structured `extra` fields (heaptrail_site, heaptrail_verdict, ...)."""

    def __init__(self, logger):
        self.logger = logger

    def emit(self, report, transitions):
        for row, old in transitions:
            extra = {
                "heaptrail_site": _site_text(row),
                "heaptrail_verdict": row["verdict"],
                "heaptrail_previous_verdict": old,
                "heaptrail_bytes_per_second": row["bytes_per_second"],
                "heaptrail_size": row["size"],
                "heaptrail_confidence": row["confidence"],
                "heaptrail_window": report["window"],
                "heaptrail_pid": report["pid"],
            }
            held = f"; held by {row['held_by']}" if row.get("held_by") else ""
            if row["verdict"] == "leak":
                self.logger.warning(
                    "heaptrail: leak at %s: %s live, growing %s/s (confidence %.2f)%s",
                    _site_text(row), _format_size(row["size"], False),
                    _format_size(row["bytes_per_second"], True), row["confidence"], held,
                    extra=extra)
            elif row["verdict"] == "fixed":
                self.logger.info("heaptrail: leak at %s is fixed: flat at %s", _site_text(row),
                                 _format_size(row["size"], False), extra=extra)

    def close(self):
        pass


class JsonLinesSink:
    """Appends one JSON object per window to a file (flushed each time, so `tail -f` works)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self._file = open(self.path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def emit(self, report, transitions):
        line = json.dumps(report, separators=(",", ":")) + "\n"
        with self._lock:
            if not self._file.closed:
                self._file.write(line)
                self._file.flush()

    def close(self):
        with self._lock:
            self._file.close()


class CallbackSink:
    """Calls the user's function with each report; its exceptions are logged, not raised."""

    def __init__(self, callback):
        self.callback = callback

    def emit(self, report, transitions):
        try:
            self.callback(report)
        except Exception:
            logging.getLogger("heaptrail").exception("heaptrail: watch callback failed")

    def close(self):
        pass
