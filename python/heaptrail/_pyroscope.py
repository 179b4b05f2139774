"""Pushes the watcher's heap profile to Grafana Pyroscope, one profile per window.

The request is Pyroscope's HTTP ingest API (docs/sources/configure-server/about-server-api.md
in grafana/pyroscope, "pprof format" and "Sample Type Configuration"), sent the way its own Go
client does (pyroscope-go, upstream/remote/remote.go)::

    POST {url}/ingest?name=APP{host=HOST,pid=PID,...}&from=UNIX_S&until=UNIX_S&spyName=heaptrail
    Content-Type: multipart/form-data; boundary=...
    Authorization: Basic ...          (HEAPTRAIL_PYROSCOPE_USER/_PASSWORD, or user:pass@ in url)
    X-Scope-OrgID: TENANT             (HEAPTRAIL_PYROSCOPE_TENANT: multi-tenant Pyroscope)

    part "profile" (a file part: filename="profile.pprof"): the gzipped pprof heap profile
    part "sample_type_config" (a file part): units and aggregation of its sample types

There is no ``format=pprof`` in the query, on purpose: Pyroscope's handler
(pkg/ingester/pyroscope/ingest_handler.go) takes ``format=pprof`` to mean "the whole body is
the profile" and only reads a multipart form when no format is given, so the two together are
refused. Both parts must be *file* parts: Go's multipart reader files a part without a
filename under form values, where Pyroscope never looks, and the push would be accepted and
silently empty. ``from``/``until`` are whole seconds (the server also reads ms/us/ns by their
digit count). ``spyName`` is the ``pyroscope_spy`` label; it must not be ``pyspy``/``rbspy``,
which make Pyroscope rewrite function names.

The sink lives inside someone else's service for weeks, so it must not become its stall, its
leak or its noise:

* ``emit()`` only appends to a bounded queue (drop-oldest, counted) under a lock the sender
  never holds during I/O: a dead or slow backend costs the application nothing.
* One daemon thread, excluded from tracing, builds each window's profile as soon as the
  window is queued (``profile()`` describes the *latest* window, so a window it could not
  reach in time is skipped and counted), and sends the oldest built one, with a timeout. While
  the backend fails it backs off exponentially (1 s doubling to 60 s) and keeps the last
  ``queue_size`` profiles (``queue_bytes`` at most), sent in order once it answers again; a
  profile older than Pyroscope's default ingestion window (1 h) is dropped instead of sent.
* Quiet: one WARNING on the ``heaptrail`` logger when pushing starts to fail, one INFO when it
  works again; never a traceback, never a credential (URLs are logged without them).
* ``close()`` sends what it can within ``close_timeout`` (2 s) and returns; a request still
  in flight then is aborted, so the thread ends.
"""

import base64
import http.client
import json
import logging
import math
import os
import re
import secrets
import socket
import sys
import threading
import time
import urllib.parse
from collections import deque

from . import _native

log = logging.getLogger("heaptrail")

ENV_USER = "HEAPTRAIL_PYROSCOPE_USER"
ENV_PASSWORD = "HEAPTRAIL_PYROSCOPE_PASSWORD"
ENV_TENANT = "HEAPTRAIL_PYROSCOPE_TENANT"
SPY_NAME = "heaptrail"
MAX_AGE = 3600.0  # Pyroscope's default reject_older_than (1h): older pushes are refused
MAX_LABELS = 20   # extra labels; Pyroscope allows 30 label names per series, 6 are its own

# Pyroscope's grammar for `name` (api/model/labelset): the application name, then
# {key=value,...}. Application names: letters, digits and _ . / -; label names: letters, digits,
# _ and . (a dot is turned into _ by the server, so heaptrail accepts _ only), not starting
# with a digit or "__" (reserved, dropped at ingestion). The parser has no escaping: a value
# ends at "," or "}" and is stripped of surrounding spaces.
_APP_NAME = re.compile(r"[A-Za-z0-9_./-]+")
_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VALUE_FORBIDDEN = re.compile(r"[,{}\s]")
_OWN_LABELS = ("host", "pid")
_RESERVED_LABELS = ("service_name", "pid")  # the application name is the service; pid is ours

# heaptrail's profile holds live blocks only: every sample type is a level, not a counter, so
# all four are averaged over time (Go's heap client declares alloc_* as counters).
SAMPLE_TYPE_CONFIG = json.dumps({
    "inuse_space": {"units": "bytes", "aggregation": "average"},
    "inuse_objects": {"units": "objects", "aggregation": "average"},
    "alloc_space": {"units": "bytes", "aggregation": "average"},
    "alloc_objects": {"units": "objects", "aggregation": "average"},
}, separators=(",", ":")).encode()


# ---- settings: checked at start-up, with errors a person can act on ---------------------------


def redact(url):
    """`url` without its user and password, to show in messages."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.username is None and parts.password is None:
            return url
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port is not None else host
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<a URL that is not valid>"


def parse_url(url):
    """(scheme, host, port, path of the ingest endpoint, user, password) of a Pyroscope URL
    (http[s]://[USER:PASSWORD@]HOST[:PORT][/PREFIX], the address of the server or of the
    reverse proxy in front of it; "/ingest" is added unless the path already ends with it).
    ValueError naming the problem, never the password."""
    shown = redact(url)
    problem = (f"pyroscope must be an http:// or https:// URL such as http://HOST:4040, "
               f"not {shown!r}")
    try:
        parts = urllib.parse.urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ValueError(problem + " (bad port or brackets)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(problem)
    if parts.query or parts.fragment:
        raise ValueError(problem + " (no ?query or #fragment: heaptrail sets the query)")
    path = parts.path.rstrip("/")
    if not path.endswith("/ingest"):
        path += "/ingest"
    user = urllib.parse.unquote(parts.username) if parts.username is not None else None
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    default_port = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname, port or default_port, path, user, password


def check_app_name(name):
    """`name` if Pyroscope accepts it as an application name, else ValueError."""
    if not _APP_NAME.fullmatch(name):
        raise ValueError(f"pyroscope_app must be letters, digits and _ . / - (Pyroscope's rule "
                         f"for application names), not {name!r}")
    return name


def parse_labels(text):
    """"env=prod,region=eu-1" -> {"env": "prod", "region": "eu-1"}: extra labels of every
    push. ValueError for what Pyroscope would refuse or misread."""
    labels = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not value:
            raise ValueError(f"pyroscope_labels must be NAME=VALUE,... (e.g. env=prod,region=eu), "
                             f"not {item!r}")
        if not _LABEL_NAME.fullmatch(key) or key.startswith("__"):
            raise ValueError(f"pyroscope label name {key!r} must be letters, digits and _, not "
                             "starting with a digit or __")
        if key in _RESERVED_LABELS:
            raise ValueError(f"pyroscope label {key!r} must be left to heaptrail"
                             + (" (it is the application name: pyroscope_app)"
                                if key == "service_name" else " (it sets it)"))
        if _VALUE_FORBIDDEN.search(value) or len(value) > 1024:
            raise ValueError(f"pyroscope label {key}={value!r}: a value must be at most 1024 "
                             "characters without spaces, commas or braces (Pyroscope's name "
                             "syntax has no escaping)")
        if key in labels:
            raise ValueError(f"pyroscope label names must be unique: {key!r} is given twice")
        labels[key] = value
    if len(labels) > MAX_LABELS:
        raise ValueError(f"pyroscope_labels must be at most {MAX_LABELS} labels, not "
                         f"{len(labels)}")
    return labels


def default_app_name():
    """The program's name, what Pyroscope users call their service: `python -m pkg` -> "pkg",
    `python app/server.py` -> "server", `gunicorn ...` -> "gunicorn". Read when the first
    profile is pushed, not at start-up: under `heaptrail run` the watcher starts before Python
    knows which module is __main__."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = getattr(spec, "name", "") or ""
    if name.endswith(".__main__"):
        name = name[: -len(".__main__")]
    if not name:
        argv0 = sys.argv[0] if getattr(sys, "argv", None) else ""
        name = "" if argv0 in ("", "-c", "-m", "-") else os.path.basename(argv0)
        if name.endswith(".py"):
            name = name[:-3]
    return re.sub(r"[^A-Za-z0-9_./-]", "_", name) or "python"


def _label_value(value):
    return _VALUE_FORBIDDEN.sub("_", str(value))[:1024] or "_"


# ---- the request --------------------------------------------------------------------------------


def multipart_body(profile):
    """(content type, body) of the form: the profile and its sample type configuration, both
    as file parts (see the module docstring for why)."""
    parts = (("profile", "profile.pprof", profile),
             ("sample_type_config", "sample_type_config.json", SAMPLE_TYPE_CONFIG))
    boundary = secrets.token_hex(16)
    while any(boundary.encode() in data for _, _, data in parts):
        boundary = secrets.token_hex(16)
    chunks = []
    for field, filename, data in parts:
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
                      f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                      .encode())
        chunks += [data, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(chunks)


class _Push:
    """One window to push: its time span, and its profile once built."""
    __slots__ = ("window", "start", "end", "pid", "body")

    def __init__(self, window, start, end, pid):
        self.window, self.start, self.end, self.pid = window, start, end, pid
        self.body = None  # the gzipped pprof, once built


class _Failure(Exception):
    """A push that did not go through: `retry` when it may go through later (the backend is
    down, slow, overloaded), else the backend refused this profile."""

    def __init__(self, reason, retry):
        super().__init__(reason)
        self.retry = retry


def _http_failure(status, body):
    text = " ".join(body.decode("utf-8", "replace").split())[:200]
    reason = f"HTTP {status}" + (f": {text}" if text else "")
    if 300 <= status < 400:
        reason += " (redirects are not followed: give the final URL)"
    # 408 timeout, 429 over a limit, 5xx: may work later. Other 4xx: this request is wrong
    # (bad credentials, a profile too big) and would be refused again.
    return _Failure(reason, retry=status in (408, 429) or status >= 500)


class PyroscopeSink:
    """A watcher sink that pushes each window's heap profile to Pyroscope (see the module
    docstring). `profile`: a zero-argument callable returning the latest window's heap profile
    as gzipped pprof bytes, or None when there is none (it may raise: said once, like an
    unreachable backend)."""

    def __init__(self, url, *, profile, app_name=None, labels=None, queue_size=10,
                 queue_bytes=32 << 20, timeout=10.0, backoff=(1.0, 60.0), close_timeout=2.0,
                 environ=None):
        environ = os.environ if environ is None else environ
        self.url = redact(url)
        self._scheme, self._host, self._port, self._path, user, password = parse_url(url)
        self._profile = profile
        self._app = check_app_name(app_name) if app_name else None  # None: default_app_name()
        self._labels = {"host": _label_value(socket.gethostname())}
        self._labels.update(labels or {})
        self._headers = {"User-Agent": f"heaptrail/{_version()}", "Connection": "close"}
        # The variables win over a user in the URL: a deployment sets them per environment.
        user = environ.get(ENV_USER) or user
        password = environ.get(ENV_PASSWORD) or password
        if user or password:
            token = base64.b64encode(f"{user or ''}:{password or ''}".encode()).decode()
            self._headers["Authorization"] = "Basic " + token
        if environ.get(ENV_TENANT):
            self._headers["X-Scope-OrgID"] = environ[ENV_TENANT]
        self.queue_size, self.queue_bytes = queue_size, queue_bytes
        self.timeout, self.close_timeout = timeout, close_timeout
        self._backoff_start, self._backoff_max = backoff
        self.sent = 0      # profiles the backend accepted
        self.dropped = 0   # windows never sent: queue full, too old, refused, not built
        self._pending = deque()   # _Push, oldest first
        self._lock = threading.Condition()
        self._closing = False
        self._deadline = None     # monotonic time close() gives up at
        self._retry_at = 0.0      # monotonic time of the next attempt while failing
        self._delay = 0.0         # current backoff; 0 while pushes go through
        self._failing = None      # the reason pushing fails, said once; None when it works
        self._profile_failing = False
        self._conn = None         # the request in flight, aborted by close()
        self._busy = None         # the window being built or sent: never trimmed meanwhile
        self._thread = threading.Thread(target=self._run, name="heaptrail-pyroscope", daemon=True)
        self._thread.start()

    # ---- the watcher's side: never blocks, never raises ------------------------------------

    def emit(self, report, transitions):
        try:
            end = float(report["time"])
            push = _Push(report["window"], end - float(report["interval"]), end, report["pid"])
        except (KeyError, TypeError, ValueError):
            with self._lock:
                self.dropped += 1
            return
        with self._lock:
            if self._closing:
                return
            self._pending.append(push)
            self._trim()
            self._lock.notify()

    def close(self):
        """Send what can be sent within close_timeout, then stop the thread."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._deadline = time.monotonic() + self.close_timeout
            self._lock.notify()
        self._thread.join(self.close_timeout)
        if self._thread.is_alive():  # a request still in flight: abort it
            conn = self._conn
            sock = getattr(conn, "sock", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._thread.join(0.5)

    @property
    def queued(self):
        return len(self._pending)

    def _trim(self):
        """Drop the oldest windows past the bounds (called with the lock held), except the one
        the sender is working on."""
        size = sum(len(p.body) for p in self._pending if p.body is not None)
        for old in list(self._pending):
            if len(self._pending) <= self.queue_size and (size <= self.queue_bytes
                                                          or len(self._pending) <= 1):
                break
            if old is not self._busy:
                self._pending.remove(old)
                size -= len(old.body) if old.body is not None else 0
                self.dropped += 1

    # ---- the sender thread ----------------------------------------------------------------

    def _run(self):
        try:
            _native._ignore_current_thread(True)  # its buffers are not the application's leak
        except Exception:  # noqa: BLE001 - tracing stopped meanwhile: nothing to exclude from
            pass
        while True:
            try:
                job = self._next_job()
                if job is None:
                    return
                kind, push = job
                try:
                    if kind == "build":
                        self._build(push)
                    else:
                        self._send(push)
                finally:
                    self._busy = None
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any surprise
                self._failed(_Failure(f"{type(exc).__name__}: {exc}", retry=False), None)
                with self._lock:  # and must not spin on it
                    if self._closing:
                        return
                    self._lock.wait(self._delay)

    def _next_job(self):
        """("build", push) for the newest window without a profile, ("send", push) for the
        oldest built one when it is time, or None when closing is done. Waits for work."""
        with self._lock:
            while True:
                now = time.monotonic()
                if self._closing and (now >= self._deadline or not self._pending
                                      or (self._failing and now < self._retry_at)):
                    self.dropped += len(self._pending)
                    self._pending.clear()
                    return None
                unbuilt = [p for p in self._pending if p.body is None]
                if unbuilt:
                    # profile() gives the latest window only: the older ones are out of reach.
                    for old in unbuilt[:-1]:
                        self._pending.remove(old)
                        self.dropped += 1
                    self._busy = unbuilt[-1]
                    return "build", self._busy
                if self._pending and now >= self._retry_at:
                    self._busy = self._pending[0]
                    return "send", self._busy
                wait = self._retry_at - now if self._pending else None
                if self._closing:
                    wait = min(wait if wait is not None else math.inf, self._deadline - now)
                self._lock.wait(wait)

    def _build(self, push):
        try:
            body = self._profile()
            if body is None:  # no window to describe (yet): nothing to push, nothing wrong
                with self._lock:
                    if push in self._pending:
                        self._pending.remove(push)
                        self.dropped += 1
                return
            if not isinstance(body, (bytes, bytearray, memoryview)):
                raise TypeError(f"the profile callable returned {type(body).__name__}, not bytes")
            body = bytes(body)
        except Exception as exc:  # noqa: BLE001 - said once, the window is dropped
            with self._lock:
                if push in self._pending:
                    self._pending.remove(push)
                    self.dropped += 1
            if not self._profile_failing:
                self._profile_failing = True
                log.warning("heaptrail: cannot build the heap profile for Pyroscope: %s: %s "
                            "(said once; windows without a profile are not pushed)",
                            type(exc).__name__, exc)
            return
        if self._profile_failing:
            self._profile_failing = False
            log.info("heaptrail: heap profiles for Pyroscope are built again")
        with self._lock:
            if push in self._pending:  # not dropped meanwhile by a full queue
                push.body = body
                self._trim()

    def _send(self, push):
        if time.time() - push.end > MAX_AGE:
            with self._lock:
                if push in self._pending:
                    self._pending.remove(push)
                    self.dropped += 1
            return
        try:
            self._post(push)
        except _Failure as failure:
            self._failed(failure, push)
            return
        with self._lock:
            if push in self._pending:
                self._pending.remove(push)
            self.sent += 1
            self._delay, self._retry_at = 0.0, 0.0
            was_failing, self._failing = self._failing, None
        if was_failing:
            log.info("heaptrail: pushing heap profiles to Pyroscope at %s again (%d windows "
                     "dropped so far)", self.url, self.dropped)

    def _failed(self, failure, push):
        """Back off; keep `push` for a retry if the failure may pass, else drop it."""
        with self._lock:
            if push is not None and not failure.retry and push in self._pending:
                self._pending.remove(push)
                self.dropped += 1
            self._delay = min(self._backoff_max, max(self._backoff_start, self._delay * 2))
            self._retry_at = time.monotonic() + self._delay
            first = self._failing is None
            self._failing = str(failure)
        if first:
            then = (f"keeping the last {self.queue_size} windows to retry" if failure.retry
                    else "dropping what it refuses")
            log.warning("heaptrail: cannot push heap profiles to Pyroscope at %s: %s; %s, with "
                        "backoff up to %g s (said once, until it works again)", self.url,
                        failure, then, self._backoff_max)

    def query(self, push):
        """The query string of `push`'s request."""
        app = self._app or default_app_name()
        labels = dict(self._labels, pid=str(push.pid))
        name = app + "{" + ",".join(f"{k}={v}" for k, v in labels.items()) + "}"
        return urllib.parse.urlencode([
            ("name", name),
            ("from", str(math.floor(push.start))),
            ("until", str(max(math.ceil(push.end), math.floor(push.start) + 1))),
            ("spyName", SPY_NAME),
        ])

    def _post(self, push):
        content_type, body = multipart_body(push.body)
        headers = dict(self._headers, **{"Content-Type": content_type,
                                         "Content-Length": str(len(body))})
        timeout = self.timeout
        if self._deadline is not None:
            timeout = max(0.1, min(timeout, self._deadline - time.monotonic()))
        cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=timeout)
        self._conn = conn
        try:
            conn.request("POST", f"{self._path}?{self.query(push)}", body=body, headers=headers)
            response = conn.getresponse()
            answer = response.read(4096)  # enough to say why; the rest is not needed
            status = response.status
        except (OSError, http.client.HTTPException) as exc:
            if self._closing:
                reason = f"no answer within {self.close_timeout:g} s of stopping"
            elif isinstance(exc, TimeoutError):  # socket.timeout too
                reason = f"timed out after {timeout:g} s"
            else:
                reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise _Failure(reason, retry=True) from None
        finally:
            self._conn = None
            conn.close()
        if not 200 <= status < 300:
            raise _http_failure(status, answer)


def _version():
    from . import __version__  # at call time: heaptrail/__init__ imports the watcher first
    return __version__
