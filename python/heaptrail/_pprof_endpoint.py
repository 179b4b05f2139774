"""``/debug/pprof/heap`` on the watcher's HTTP endpoint: the live heap as a Go-convention pprof
heap profile, or with ``?seconds=N`` the growth over the next N seconds (a delta profile, as
Go's ``net/http/pprof`` serves one), readable by ``go tool pprof http://HOST:PORT/debug/pprof/heap``
and by scrapers that pull pprof endpoints. Samples carry the labels ``verdict`` (the site's
verdict in the watcher's latest window) and ``pattern`` (for a leak's sites).

Bounded, because it runs inside someone else's service: one profile request at a time (a
second one, while a delta profile is being measured, gets 429 with Retry-After), at most
``max_seconds`` per delta, at most ``max_bytes`` per profile (else 503 saying so). Taking the
heap's totals holds the GIL as long as a watcher window does; the profile is built in Rust
without it. Nothing from the request is used beyond the parameters below, each checked.

This module decides what to answer; the HTTP loop (_prometheus.py) does the I/O and calls
back when a delta's time is up.
"""

import time
from urllib.parse import parse_qsl

PATH = b"/debug/pprof/heap"
MAX_SECONDS = 600           # longest delta profile (Go's default server has no such limit)
MAX_BYTES = 64 << 20        # largest profile sent (gzipped)
_CONTENT_TYPE = b"application/octet-stream"
_DISPOSITION = b'Content-Disposition: attachment; filename="heap.pb.gz"\r\n'


class Answer:
    """An HTTP answer: status, body, content type, extra header lines."""
    __slots__ = ("status", "body", "content_type", "extra")

    def __init__(self, status, body, content_type=b"text/plain; charset=utf-8", extra=b""):
        self.status, self.body, self.content_type, self.extra = status, body, content_type, extra


class Deferred:
    """An answer due in `seconds`: the loop calls `finish()` then (or `cancel()` if the
    client left first)."""
    __slots__ = ("seconds", "finish", "cancel")

    def __init__(self, seconds, finish, cancel):
        self.seconds, self.finish, self.cancel = seconds, finish, cancel


class HeapProfiles:
    """Answers ``GET /debug/pprof/heap[?seconds=N]`` from `source`, an object with
    ``heap_totals()`` (the tracer's per-traceback totals now, or None when not tracing) and
    ``heap_profile(table, base=None, seconds=0)`` (gzipped pprof bytes): the Watcher."""

    def __init__(self, source, max_seconds=MAX_SECONDS, max_bytes=MAX_BYTES):
        self._source = source
        self._max_seconds = max_seconds
        self._max_bytes = max_bytes
        self._pending_until = None  # monotonic end of the delta profile being measured

    def answer(self, query):
        """The Answer (or Deferred) for a request with query string `query` (bytes)."""
        seconds = self._seconds(query)
        if isinstance(seconds, Answer):
            return seconds
        if self._pending_until is not None:
            retry = max(1, round(self._pending_until - time.monotonic()))
            return Answer(429, b"one profile at a time: a delta profile is being measured\n",
                          extra=b"Retry-After: %d\r\n" % retry)
        base = self._source.heap_totals()
        if base is None:
            return Answer(503, b"not tracing: no heap profile\n")
        if not seconds:
            return self._profile(base)
        self._pending_until = time.monotonic() + seconds

        def finish():
            self._pending_until = None
            table = self._source.heap_totals()
            if table is None:
                return Answer(503, b"tracing stopped while the delta profile was measured\n")
            return self._profile(table, base, seconds)

        def cancel():
            self._pending_until = None

        return Deferred(seconds, finish, cancel)

    def _seconds(self, query):
        """The `seconds` parameter (0: none), or an Answer saying what is wrong."""
        try:
            params = parse_qsl(query.decode("ascii"), keep_blank_values=True,
                               strict_parsing=bool(query), max_num_fields=8)
        except ValueError:  # not ASCII, malformed, too many fields
            return Answer(400, b"malformed query string\n")
        seconds = 0
        for key, value in params:
            if key == "seconds":
                if not (value.isascii() and value.isdigit()) or not 0 < int(value) <= self._max_seconds:
                    return Answer(400, b"seconds must be a whole number from 1 to %d\n"
                                  % self._max_seconds)
                seconds = int(value)
            elif key == "gc":
                pass  # Go's "collect first": heaptrail reports live blocks, nothing to force
            elif key == "debug":
                if value != "0":
                    return Answer(400, b"only the binary profile is served (debug=0)\n")
            else:
                return Answer(400, b"unknown parameter (seconds, gc and debug are known)\n")
        return seconds

    def _profile(self, table, base=None, seconds=0):
        body = self._source.heap_profile(table, base=base, seconds=seconds)
        if len(body) > self._max_bytes:
            return Answer(503, b"the profile (%d bytes) exceeds the cap of %d bytes\n"
                          % (len(body), self._max_bytes))
        return Answer(200, body, _CONTENT_TYPE, _DISPOSITION)

