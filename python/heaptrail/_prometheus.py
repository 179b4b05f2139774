"""The watcher's opt-in HTTP endpoint: Prometheus metrics of its latest window, and heap
profiles.

Binds 127.0.0.1 unless a host is given. Serves GET (and HEAD) of ``/metrics`` and ``/`` (the
Prometheus text format) and, when a profile source is given (the watcher gives itself),
``/debug/pprof/heap`` (a pprof heap profile, ``?seconds=N`` for a delta; see
_pprof_endpoint.py); other methods get 405, other paths 404, a malformed request 400.
Nothing a client sends is interpreted beyond the request line: the path is compared with
those strings, never used to open anything, and the only query parameters read are the
profile's, each checked. Label values (file names, lines, holders) are bounded: per window at most
MAX_SITE_SERIES (100) reported sites and as many leaks get series of their own, the flagged
and fastest-growing first; ``heaptrail_site_series_dropped`` counts the others.

The endpoint lives inside someone else's service for weeks, so it must not become its leak,
its stall or its noise:

* **One thread, one selector loop.** A thread per connection (the stdlib's
  ThreadingHTTPServer) lets idle clients add threads to the application without bound; a
  fixed pool of N workers is simpler to reason about per request but is itself exhausted by
  N idle clients. A non-blocking loop costs one file descriptor and a few hundred bytes per
  connection, so idle clients are cheap, and one thread is easy to exclude from tracing and to
  stop. Requests are tiny and rendering is cached per window, so one thread is enough.
* **Limits** (constructor keywords): ``header_timeout`` (5 s from accept to the end of the
  request head), ``idle_timeout`` (5 s without progress while reading or sending),
  ``max_connections`` (64; when full, the oldest connection still waiting for its request
  head is closed to make room -- slow or idle clients cannot lock scrapers out -- and when
  none is waiting, the newcomer gets a 503), ``max_head_bytes`` (8 KiB, then 431),
  ``max_response_bytes`` (4 MiB; above it, the per-site and per-leak series are left out of
  that window's text), ``max_site_series`` (100 sites and 100 leaks per window). One request
  per connection (``Connection: close``).
* **Quiet.** Clients that disconnect or time out are closed silently; anything else goes to
  the ``heaptrail`` logger as one line, without traceback, at most once per ``log_interval``
  (60 s). The loop thread is excluded from tracing, so its own allocations are never reported
  as a leak of the application.
"""

import logging
import re
import selectors
import socket
import threading
import time

from . import _native

log = logging.getLogger("heaptrail")

_VERDICTS = tuple(_native.SITE_VERDICTS)
_PROCESS_VERDICTS = tuple(_native.PROCESS_VERDICTS)
_MAX_LABEL = 200  # characters of a holder path or a function name kept in a label
_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def _label(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


MAX_SITE_SERIES = 100  # per-site and per-leak series per metric, at most (see _bounded)


def _bounded(rows, limit, key):
    """At most `limit` rows, the ones `key` ranks first. Label values are file names, lines,
    holders: a series per site ever seen would make the metrics a leak of their own (in
    Prometheus's memory, and in every scrape's size), so a window exports a bounded set."""
    return rows if len(rows) <= limit else sorted(rows, key=key)[:limit]


def _site_rank(site):
    """Sites with a verdict worth alerting on first, then the fastest-growing, then the
    biggest."""
    flagged = site["verdict"] in _native.ALWAYS_REPORTED or site["verdict"] == _native.PART_OF_LEAK
    return (not flagged, -site["bytes_per_second"], -site["size"])


def render_metrics(report, per_site=True, max_series=MAX_SITE_SERIES):
    """The Prometheus exposition text for one window report; without ``per_site``, only the
    process-wide series (the fallback when the full text exceeds the response cap). At most
    `max_series` sites and as many leaks get series of their own; the others are counted in
    ``heaptrail_site_series_dropped``."""
    out = []

    def metric(name, kind, help_text, samples):
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lab = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            out.append(f"{name}{{{lab}}} {value}" if lab else f"{name} {value}")

    if report is None:
        metric("heaptrail_windows_total", "counter", "Watcher windows taken.", [({}, 0)])
        return "\n".join(out) + "\n"
    metric("heaptrail_windows_total", "counter", "Watcher windows taken.", [({}, report["window"])])
    metric("heaptrail_rss_bytes", "gauge", "Resident set size of the process.", [({}, report["rss_bytes"])])
    metric("heaptrail_traced_bytes", "gauge", "Memory in live blocks traced by heaptrail.",
           [({}, report["traced_bytes"])])
    metric("heaptrail_traced_peak_bytes", "gauge", "Peak traced memory during the last window.",
           [({}, report["traced_peak_bytes"])])
    metric("heaptrail_process_verdict", "gauge", "1 for the process verdict of the last window.",
           [({"verdict": v}, int(v == report["process_verdict"])) for v in _PROCESS_VERDICTS])
    sites = report["sites"]
    metric("heaptrail_sites", "gauge", "Reported sites per verdict.",
           [({"verdict": v}, sum(1 for s in sites if s["verdict"] == v)) for v in _VERDICTS])
    all_leaks = report.get("leaks", [])
    exported = _bounded(sites, max_series, _site_rank) if per_site else []
    leaks = _bounded(all_leaks, max_series, lambda e: -e["bytes_per_second"]) if per_site else []
    metric("heaptrail_site_series_dropped", "gauge",
           "Reported sites and leaks left without series of their own this window (the cap).",
           [({}, len(sites) - len(exported) + len(all_leaks) - len(leaks))])
    if not per_site:
        return "\n".join(out) + "\n"
    # `function` (the code running the line, empty when unknown) is named by the site itself:
    # it adds no series.
    labels = [({"filename": s["filename"], "lineno": s["lineno"],
                "function": (s.get("function") or "")[:_MAX_LABEL], "verdict": s["verdict"],
                "pattern": s.get("pattern", "")}, s) for s in exported]
    metric("heaptrail_site_bytes", "gauge", "Live memory allocated at a site.",
           [(lab, s["size"]) for lab, s in labels])
    metric("heaptrail_site_blocks", "gauge", "Live blocks allocated at a site.",
           [(lab, s["count"]) for lab, s in labels])
    metric("heaptrail_site_growth_bytes_per_second", "gauge",
           "Growth rate of a site's live memory (Sen's slope).",
           [(lab, s["bytes_per_second"]) for lab, s in labels])
    leak_labels = [({"filename": e["site"]["filename"], "lineno": e["site"]["lineno"],
                     "function": (e["site"].get("function") or "")[:_MAX_LABEL],
                     "holder": (e["holder"] or "")[:_MAX_LABEL], "pattern": e["pattern"]}, e)
                   for e in leaks]
    metric("heaptrail_leak_bytes", "gauge",
           "Live memory of a leak: every site feeding one holder (one series per leak).",
           [(lab, e["size"]) for lab, e in leak_labels])
    metric("heaptrail_leak_growth_bytes_per_second", "gauge", "Growth rate of a leak.",
           [(lab, e["bytes_per_second"]) for lab, e in leak_labels])
    return "\n".join(out) + "\n"


_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"  # RFC 9110 token: methods and field names
# Origin-form only ("/path?query"): what Prometheus sends. Visible ASCII, no spaces.
_REQUEST_LINE = re.compile(rb"(%s) (/[\x21-\x7e]*) HTTP/1\.[0-9]" % _TOKEN)
_FIELD_LINE = re.compile(rb"%s:[\t\x20-\x7e\x80-\xff]*" % _TOKEN)
_END_OF_HEAD = re.compile(rb"\r?\n\r?\n")
_PATHS = (b"/metrics", b"/")
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            429: "Too Many Requests", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}
_LINGER_SECONDS = 2.0    # at most this long reading what a client still sends after our answer
_LINGER_BYTES = 1 << 18  # ... and at most this much of it

# Connection states (_WAIT: a delta profile is being measured for it).
_HEAD, _WAIT, _WRITE, _LINGER = "head", "wait", "write", "linger"


def _response(status, body=b"", content_type=b"text/plain; charset=utf-8", head_only=False,
              extra=b""):
    """The response as a list of buffers (the body is shared between connections, not copied)."""
    head = (b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s"
            b"Connection: close\r\n\r\n"
            % (status, _REASONS[status].encode(), content_type, len(body), extra))
    return [memoryview(head)] if head_only or not body else [memoryview(head), memoryview(body)]


def _profile_response(answer, head_only):
    return _response(answer.status, answer.body, answer.content_type, head_only, answer.extra)


class _Connection:
    __slots__ = ("sock", "state", "buf", "out", "deadline", "head_deadline", "lingered",
                 "deferred", "head_only")

    def __init__(self, sock, now, header_timeout, idle_timeout):
        self.sock = sock
        self.state = _HEAD
        self.buf = bytearray()
        self.out = []
        # The whole head must arrive by head_deadline, however steadily it trickles in
        # (slowloris); deadline is the nearer of that and the idle timeout.
        self.head_deadline = now + header_timeout
        self.deadline = min(self.head_deadline, now + idle_timeout)
        self.lingered = 0  # bytes read and dropped after the answer
        self.deferred = None  # the _pprof_endpoint.Deferred answer it waits for (_WAIT)
        self.head_only = False


class _Throttle:
    """At most one line on the heaptrail logger per interval, saying how many were dropped."""

    def __init__(self, interval):
        self.interval = interval
        self.last = None
        self.dropped = 0

    def warn(self, message):
        now = time.monotonic()
        if self.last is not None and now - self.last < self.interval:
            self.dropped += 1
            return
        if self.dropped:
            message += f" ({self.dropped} more such events since the last message)"
        self.last, self.dropped = now, 0
        log.warning("heaptrail: metrics endpoint: %s", message)


class PrometheusEndpoint:
    """Serves /metrics (and /debug/pprof/heap) from one daemon thread; a watcher sink (emit
    keeps the latest report).

    ``address`` is ``(host, port)``; port 0 picks a free port, ``.address`` says which.
    ``profiles``: where heap profiles come from (see _pprof_endpoint.HeapProfiles; None: the
    path is not served). The other keyword arguments are the limits described in the module
    docstring."""

    def __init__(self, address, *, profiles=None, max_connections=64, header_timeout=5.0,
                 idle_timeout=5.0, max_head_bytes=8192, max_response_bytes=4 << 20,
                 log_interval=60.0, max_site_series=MAX_SITE_SERIES):
        self._profiles = None
        if profiles is not None:
            from ._pprof_endpoint import HeapProfiles
            self._profiles = HeapProfiles(profiles)
        self._report = None
        self._max_site_series = max_site_series
        self._max_connections = max_connections
        self._header_timeout = header_timeout
        self._idle_timeout = idle_timeout
        self._max_head_bytes = max_head_bytes
        self._max_response_bytes = max_response_bytes
        self._throttle = _Throttle(log_interval)
        self._body_for = object()  # no report rendered yet (None is a report: "no window yet")
        self._body = None
        self._conns = {}           # socket -> _Connection, in accept order (the oldest first)
        self._accept_resumes = None  # when accepting stopped for lack of descriptors
        self._stopping = False

        host, port = address[0] or "127.0.0.1", address[1]
        family, _, _, _, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        self._listener = socket.create_server(sockaddr, family=family, backlog=128)
        self._listener.setblocking(False)
        self.address = self._listener.getsockname()[:2]
        # close() writes to this pair to wake the loop at once, whatever its select timeout.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._serve, name="heaptrail-prometheus",
                                        daemon=True)
        self._thread.start()

    # ---- the sink ----------------------------------------------------------------------------

    def emit(self, report, transitions):
        self._report = report  # one reference swap; the loop renders it on the next scrape

    def close(self):
        """Stops the loop, closes every connection and the listening socket, joins the thread."""
        if self._stopping:
            return
        self._stopping = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._thread is not threading.current_thread():
            self._thread.join()
        self._wake_w.close()

    # ---- the loop ----------------------------------------------------------------------------

    def _serve(self):
        # First of all: what this thread allocates is heaptrail's, never the application's leak.
        _native._ignore_current_thread(True)
        try:
            while not self._stopping:
                try:
                    self._step()
                except Exception as exc:  # a bug here must not kill the endpoint or print
                    self._throttle.warn(f"internal error: {exc!r}")
                    time.sleep(0.1)  # no busy loop if it repeats
        finally:
            for sock in list(self._conns):
                self._close(sock)
            self._selector.close()
            self._listener.close()
            self._wake_r.close()

    def _step(self):
        now = time.monotonic()
        if self._accept_resumes is not None and now >= self._accept_resumes:
            self._accept_resumes = None
            self._selector.register(self._listener, selectors.EVENT_READ)
        deadlines = [c.deadline for c in self._conns.values()]
        if self._accept_resumes is not None:
            deadlines.append(self._accept_resumes)
        timeout = max(0.0, min(deadlines) - now) if deadlines else None
        events = self._selector.select(timeout)
        now = time.monotonic()
        accept = False
        # Serve clients that sent something before accepting new ones: when full, a
        # newcomer may evict a connection whose request already arrived.
        for key, _ in events:
            if key.fileobj is self._listener:
                accept = True
            elif key.fileobj is self._wake_r:
                return  # close() was called
            else:
                self._ready(key.data, now)
        if accept:
            self._accept(now)
        for conn in [c for c in self._conns.values() if c.deadline <= now]:
            if conn.state == _WAIT:
                self._finish_deferred(conn, now)  # its delta profile's time is up
            else:
                self._close(conn.sock)  # timed out: idle, slow, or half-open; closed silently

    def _accept(self, now):
        for _ in range(self._max_connections):  # bounded: one burst cannot starve the rest
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:  # out of file descriptors: the application's, so back off
                self._throttle.warn(f"cannot accept connections: {exc}")
                self._selector.unregister(self._listener)
                self._accept_resumes = now + 1.0
                return
            sock.setblocking(False)
            if len(self._conns) >= self._max_connections and not self._make_room(sock):
                continue
            conn = _Connection(sock, now, self._header_timeout, self._idle_timeout)
            self._conns[sock] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _make_room(self, newcomer):
        """At the connection cap: close the oldest connection still waiting for its request
        head (an idle or slow client) and return True; if every connection is being answered,
        refuse the newcomer with a 503 and return False."""
        waiting = next((s for s, c in self._conns.items() if c.state == _HEAD), None)
        if waiting is not None:
            self._close(waiting)
            self._throttle.warn(f"{self._max_connections} connections open (the cap); "
                                "closed the oldest one still sending its request")
            return True
        # Best effort, without waiting: a request that arrives after this read makes close()
        # send a reset instead, which the client sees as a refused scrape all the same.
        try:
            newcomer.recv(self._max_head_bytes)
        except OSError:  # usually BlockingIOError: nothing sent yet
            pass
        try:
            newcomer.send(b"".join(_response(503, b"too many connections\n")))
        except OSError:
            pass
        newcomer.close()
        self._throttle.warn(f"{self._max_connections} connections open (the cap); "
                            "refused one with 503")
        return False

    def _close(self, sock):
        conn = self._conns.get(sock)
        if conn is not None and conn.deferred is not None:
            conn.deferred.cancel()  # the client left before its delta profile was ready
            conn.deferred = None
        self._conns.pop(sock, None)
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    def _ready(self, conn, now):
        if conn.sock not in self._conns:
            return  # closed earlier in this round (evicted)
        try:
            if conn.state == _HEAD:
                self._read_head(conn, now)
            elif conn.state == _WAIT:
                self._linger(conn, now)  # only to notice a client that leaves
            elif conn.state == _WRITE:
                self._write(conn, now)
            else:
                self._linger(conn, now)
        except OSError:
            self._close(conn.sock)  # reset, broken pipe, ...: the client left; not worth a word
        except Exception as exc:
            self._close(conn.sock)
            self._throttle.warn(f"internal error: {exc!r}")

    def _read_head(self, conn, now):
        data = conn.sock.recv(4096)
        if not data:
            self._close(conn.sock)  # gone (or half-closed) before finishing its request
            return
        conn.buf += data
        if conn.buf[:1] in (b"\r", b"\n"):  # empty lines before a request line are allowed
            conn.buf = bytearray(conn.buf.lstrip(b"\r\n"))
        end = _END_OF_HEAD.search(conn.buf)
        if end is None:
            if len(conn.buf) > self._max_head_bytes:
                self._respond(conn, now, _response(431, b"request head too large\n"))
            else:
                conn.deadline = min(conn.head_deadline, now + self._idle_timeout)
            return
        if end.end() > self._max_head_bytes:
            self._respond(conn, now, _response(431, b"request head too large\n"))
            return
        lines = bytes(conn.buf[:end.start()]).split(b"\n")
        conn.buf = bytearray()
        answer = self._answer(conn, [line.rstrip(b"\r") for line in lines])
        if isinstance(answer, list):
            self._respond(conn, now, answer)
        else:  # a delta profile: answered when its time is up
            conn.state, conn.deferred = _WAIT, answer
            conn.deadline = now + answer.seconds

    def _finish_deferred(self, conn, now):
        deferred, conn.deferred = conn.deferred, None
        try:
            answer = deferred.finish()
        except Exception as exc:
            self._throttle.warn(f"cannot build the heap profile: {exc!r}")
            self._respond(conn, now, _response(500, b"heap profile failed; see the heaptrail log\n"))
            return
        self._respond(conn, now, _profile_response(answer, conn.head_only))

    def _answer(self, conn, lines):
        """The response to a complete request head (its lines, without line ends)."""
        request = _REQUEST_LINE.fullmatch(lines[0])
        if request is None or not all(_FIELD_LINE.fullmatch(line) for line in lines[1:]):
            return _response(400, b"malformed request\n")
        method, target = request.group(1), request.group(2)
        if method not in (b"GET", b"HEAD"):
            return _response(405, b"only GET and HEAD\n", extra=b"Allow: GET, HEAD\r\n")
        path, _, query = target.partition(b"?")
        if path == b"/debug/pprof/heap" and self._profiles is not None:
            conn.head_only = method == b"HEAD"
            try:
                answer = self._profiles.answer(query)
            except Exception as exc:
                self._throttle.warn(f"cannot build the heap profile: {exc!r}")
                return _response(500, b"heap profile failed; see the heaptrail log\n")
            return answer if hasattr(answer, "finish") else _profile_response(answer, conn.head_only)
        if path not in _PATHS:
            return _response(404, b"only /metrics and /debug/pprof/heap are served\n"
                             if self._profiles is not None else b"only /metrics is served\n")
        body = self._metrics()
        if body is None:
            return _response(500, b"metrics unavailable; see the heaptrail log\n")
        return _response(200, body, _CONTENT_TYPE, head_only=method == b"HEAD")

    def _metrics(self):
        """The exposition text of the latest report, rendered once per report."""
        report = self._report
        if report is not self._body_for:
            try:
                body = render_metrics(report, max_series=self._max_site_series).encode()
                if len(body) > self._max_response_bytes:
                    self._throttle.warn(
                        f"metrics text of {len(body)} bytes exceeds the cap of "
                        f"{self._max_response_bytes}; per-site and per-leak series left out")
                    body = render_metrics(report, per_site=False).encode()
                    if len(body) > self._max_response_bytes:
                        body = None
            except Exception as exc:  # a report the renderer does not understand
                self._throttle.warn(f"cannot render metrics: {exc!r}")
                body = None
            self._body_for, self._body = report, body
        return self._body

    def _respond(self, conn, now, buffers):
        conn.state, conn.out = _WRITE, buffers
        self._selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
        self._write(conn, now)  # usually all of it fits in the socket buffer at once

    def _write(self, conn, now):
        while conn.out:
            try:
                sent = conn.sock.send(conn.out[0])
            except BlockingIOError:
                break
            if sent == len(conn.out[0]):
                conn.out.pop(0)
            else:
                conn.out[0] = conn.out[0][sent:]
            conn.deadline = now + self._idle_timeout
        if conn.out:
            return
        # Lingering close: a client still sending (a body, or the rest of an oversized head)
        # would get a reset on close() and could lose our answer, so read and drop the rest
        # for a bounded time before closing.
        conn.sock.shutdown(socket.SHUT_WR)
        conn.state = _LINGER
        conn.deadline = now + min(self._idle_timeout, _LINGER_SECONDS)
        self._selector.modify(conn.sock, selectors.EVENT_READ, conn)

    def _linger(self, conn, now):
        data = conn.sock.recv(65536)
        conn.lingered += len(data)
        if not data or conn.lingered > _LINGER_BYTES:
            self._close(conn.sock)
