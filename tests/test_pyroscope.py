"""Pushing heap profiles to Pyroscope: the request checked against Pyroscope's documented ingest
API (and the rules of its handler, where the documentation is silent), the profile decoded by
`go tool pprof`, and a backend that is down, slow, or answers 500, under which the watcher's
side never waits, never raises, keeps bounded state and says so once. Binds 127.0.0.1."""

import base64
import email.parser
import email.policy
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import heaptrail
from heaptrail._pyroscope import PyroscopeSink, default_app_name
from heaptrail._settings import Settings

from tools import require

WAIT = 10.0  # seconds any awaited event may take before the test fails

# Pyroscope's ingest API: POST /ingest, metadata in the query. The documented parameters
# (docs/sources/configure-server/about-server-api.md; its table spells aggregationType
# "aggregrationType", the handler reads "aggregationType").
DOCUMENTED = {"name", "from", "until", "format", "sampleRate", "spyName", "units",
              "aggregationType"}
APP_NAME = re.compile(r"[A-Za-z0-9_./-]+")             # labelset.IsServiceNameRuneAllowed
LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")    # labelset.ValidateLabelName, no digit 1st


def parse_name(name):
    """Pyroscope's grammar for `name` (api/model/labelset.Parse): APP{key=value,...}. Returns
    (app, labels); AssertionError for what Pyroscope refuses or would read otherwise than meant."""
    app, brace, rest = name.partition("{")
    assert APP_NAME.fullmatch(app), f"application name {app!r}"
    labels = {}
    if brace:
        assert rest.endswith("}") and "}" not in rest[:-1], f"labels of {name!r}"
        for item in filter(None, rest[:-1].split(",")):
            key, eq, value = item.partition("=")
            assert eq and LABEL_NAME.fullmatch(key) and not key.startswith("__"), item
            # No escaping: a value ends at "," or "}", and is stripped.
            assert value and value == value.strip() and "{" not in value, item
            assert key not in labels, f"{key} twice"
            labels[key] = value
    return app, labels


def check_ingest(request, path="/ingest"):
    """The request against the API; returns (app, labels, query, parts)."""
    assert request["method"] == "POST"
    url = urllib.parse.urlsplit(request["path"])
    assert url.path == path
    pairs = urllib.parse.parse_qsl(url.query, keep_blank_values=True, strict_parsing=True)
    query = dict(pairs)
    assert len(query) == len(pairs), f"a parameter twice: {pairs}"
    assert set(query) <= DOCUMENTED, set(query) - DOCUMENTED
    assert {"name", "from", "until"} <= set(query)
    app, labels = parse_name(query["name"])
    # Unix seconds: the handler reads 13, 16 and 19 digits as ms, us, ns.
    start, end = query["from"], query["until"]
    assert start.isdigit() and end.isdigit() and len(start) == len(end) == 10, (start, end)
    assert int(start) < int(end)
    # Pyroscope's default ingestion window: no older than 1 h, no newer than 10 min.
    assert time.time() - 3600 < int(end) < time.time() + 600
    # pyspy/rbspy/scripting make Pyroscope rewrite function names.
    assert query.get("spyName") not in ("pyspy", "rbspy", "scripting")
    headers = request["headers"]
    assert int(headers["Content-Length"]) == len(request["body"])
    content_type = headers["Content-Type"]
    # The handler: format=pprof means "the body is the profile"; only without a format is a
    # multipart form read. Heaptrail sends the form.
    assert content_type.startswith("multipart/form-data; boundary="), content_type
    assert "format" not in query, "format=pprof with a multipart body is refused by Pyroscope"
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + request["body"])
    assert message.is_multipart() and not message.defects, message.defects
    parts = {}
    for part in message.iter_parts():
        assert part.get_content_disposition() == "form-data"
        field = part.get_param("name", header="content-disposition")
        # Go's multipart reader (Pyroscope's) files a part without a filename under values,
        # where the handler never looks: the push would be accepted and empty.
        assert part.get_filename(), f"part {field!r} is not a file part"
        assert field not in parts
        parts[field] = part.get_payload(decode=True)
    assert set(parts) <= {"profile", "sample_type_config"}, set(parts)  # prev_profile: refused
    assert parts["profile"][:2] == b"\x1f\x8b"  # gzipped pprof
    if "sample_type_config" in parts:
        config = json.loads(parts["sample_type_config"])
        for entry in config.values():
            assert set(entry) <= {"units", "aggregation", "display-name", "sampled",
                                  "cumulative"}, entry
            assert entry.get("units", "bytes") in ("samples", "objects", "bytes")
            assert entry.get("aggregation", "sum") in ("sum", "average")
    return app, labels, query, parts


class Receiver:
    """A local ingest endpoint. `mode`: "ok" (200), "error" (500), "denied" (401), "hang"
    (reads the request, never answers until the test ends)."""

    def __init__(self, mode="ok"):
        self.mode = mode
        self.requests = []
        self.changed = threading.Condition()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.changed:
                    receiver.requests.append(dict(method="POST", path=self.path,
                                                  headers=dict(self.headers), body=body,
                                                  mode=receiver.mode))
                    receiver.changed.notify_all()
                    mode = receiver.mode
                if mode == "hang":
                    receiver.release.wait(WAIT * 3)
                    return
                status = {"ok": 200, "error": 500, "denied": 401}[mode]
                answer = b"" if status == 200 else b"ingestion failed: try later"
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, predicate, what):
        with self.changed:
            assert self.changed.wait_for(lambda: predicate(self.requests), WAIT), \
                f"waited {WAIT} s for {what}; got {len(self.requests)} requests"
            return list(self.requests)

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


class Said(logging.Handler):
    """Records the `heaptrail` logger; wait() for a message."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []
        self.changed = threading.Condition()

    def emit(self, record):
        with self.changed:
            self.records.append(record)
            self.changed.notify_all()

    def wait(self, text):
        with self.changed:
            assert self.changed.wait_for(
                lambda: any(text in r.getMessage() for r in self.records), WAIT), \
                f"never said {text!r}: {self.text()}"

    def text(self):
        return "\n".join(r.getMessage() for r in self.records)


@pytest.fixture
def said():
    handler = Said()
    log = logging.getLogger("heaptrail")
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    yield handler
    log.removeHandler(handler)
    log.setLevel(level)


keep = []


def allocate_for_the_profile():
    keep.extend(bytearray(4096) for _ in range(64))  # 256 KiB at this line


@pytest.fixture(scope="module")
def profile_bytes(tmp_path_factory):
    """A real heaptrail heap profile (gzipped pprof) with allocate_for_the_profile in it."""
    was_tracing = heaptrail.is_tracing()
    heaptrail.start(8)
    try:
        allocate_for_the_profile()
        path = tmp_path_factory.mktemp("profile") / "heap.pb.gz"
        heaptrail.take_snapshot().export(path)
        return path.read_bytes()
    finally:
        keep.clear()
        if not was_tracing:
            heaptrail.stop()


class Profile:
    """The `profile` callable: returns `data` (or raises `error`), counts calls."""

    def __init__(self, data, error=None):
        self.data, self.error, self.calls = data, error, 0
        self.changed = threading.Condition()

    def __call__(self):
        with self.changed:  # what this call returns is decided before wait_calls() sees it
            data, error = self.data, self.error
            self.calls += 1
            self.changed.notify_all()
        if error is not None:
            raise error
        return data

    def wait_calls(self, n):
        with self.changed:
            assert self.changed.wait_for(lambda: self.calls >= n, WAIT), (self.calls, n)


WINDOW = 0


def window(interval=1.0):
    """A minimal watcher report, as the sink reads it."""
    global WINDOW
    WINDOW += 1
    return {"schema": "heaptrail.watch/2", "time": round(time.time(), 3), "pid": os.getpid(),
            "window": WINDOW, "interval": interval, "sites": [], "leaks": []}


def go_pprof(tmp_path, data, *options):
    go = require("go", package="golang-go")
    path = tmp_path / "received.pb.gz"
    path.write_bytes(data)
    env = dict(os.environ, HOME=str(tmp_path / "home"), GOCACHE=str(tmp_path / "gocache"),
               GOFLAGS="", GOPATH=str(tmp_path / "gopath"))
    out = subprocess.run([go, "tool", "pprof", *options, str(path)], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def pyroscope_threads():
    return [t for t in threading.enumerate() if t.name == "heaptrail-pyroscope"]


def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once closed


# ---- the request -----------------------------------------------------------------------------


def test_push_follows_the_ingest_api_and_go_pprof_reads_the_profile(receiver, said,
                                                                      profile_bytes, tmp_path):
    environ = {"HEAPTRAIL_PYROSCOPE_USER": "alice", "HEAPTRAIL_PYROSCOPE_PASSWORD": "s3cret!",
               "HEAPTRAIL_PYROSCOPE_TENANT": "team-a"}
    sink = PyroscopeSink(receiver.url, profile=Profile(profile_bytes), app_name="shop.api",
                         labels={"env": "test"}, environ=environ)
    report = window(interval=10)
    sink.emit(report, [])
    request, = receiver.wait_for(len, "the push")
    sink.close()
    app, labels, query, parts = check_ingest(request)
    assert app == "shop.api"
    assert labels == {"host": socket.gethostname(), "pid": str(os.getpid()), "env": "test"}
    assert int(query["from"]) <= report["time"] - 10 and report["time"] <= int(query["until"])
    assert int(query["until"]) - int(query["from"]) <= 12
    assert query["spyName"] == "heaptrail"
    assert parts["profile"] == profile_bytes
    headers = request["headers"]
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"alice:s3cret!").decode()
    assert headers["X-Scope-OrgID"] == "team-a"
    assert (sink.sent, sink.dropped, sink.queued) == (1, 0, 0)
    assert "s3cret" not in said.text()

    raw = go_pprof(tmp_path, parts["profile"], "-raw")
    assert "inuse_space/bytes" in raw and "inuse_objects/count" in raw
    top = go_pprof(tmp_path, parts["profile"], "-top", "-unit=B", "-nodecount=10000")
    line = next(l for l in top.splitlines() if "allocate_for_the_profile" in l)
    assert int(re.match(r"\s*(\d+)B", line).group(1)) >= 64 * 4096, line


def test_url_path_and_credentials_and_refusal_said_once_without_them(said, profile_bytes):
    receiver = Receiver("denied")
    try:
        host_port = receiver.url.split("//")[1]
        sink = PyroscopeSink(f"http://bob:p%40ss@{host_port}/pyroscope/", environ={},
                             profile=Profile(profile_bytes), app_name="svc",
                             backoff=(0.01, 0.02))
        for n in (1, 2):
            sink.emit(window(), [])
            requests = receiver.wait_for(lambda r, n=n: len(r) >= n, f"push {n}")
        sink.close()
        check_ingest(requests[0], path="/pyroscope/ingest")
        assert requests[0]["headers"]["Authorization"] == \
            "Basic " + base64.b64encode(b"bob:p@ss").decode()
        assert "X-Scope-OrgID" not in requests[0]["headers"]
        # A 401 will not pass by retrying that profile: dropped, not retried; said once.
        assert (sink.sent, sink.dropped, len(receiver.requests)) == (0, 2, 2)
        warnings = [r for r in said.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, said.text()
        assert "HTTP 401" in warnings[0].getMessage()
        assert f"http://{host_port}/pyroscope/" in warnings[0].getMessage()
        assert "p@ss" not in said.text() and "p%40ss" not in said.text()
        assert "bob" not in said.text()
    finally:
        receiver.close()


# ---- a backend that is down, answers 500, or hangs -------------------------------------------


def test_backend_down(said, profile_bytes):
    profile = Profile(profile_bytes)
    before = len(pyroscope_threads())
    sink = PyroscopeSink(closed_port_url(), profile=profile, app_name="svc", queue_size=4,
                         backoff=(0.01, 0.05), environ={})
    slowest = 0.0
    for n in range(1, 41):
        t0 = time.perf_counter()
        sink.emit(window(), [])
        slowest = max(slowest, time.perf_counter() - t0)
        profile.wait_calls(n)  # every window gets its profile, even while the backend is down
        assert sink.queued <= 4
    said.wait("cannot push heap profiles to Pyroscope")
    assert slowest < 0.25, slowest  # a lock and an append, never the network
    assert len(pyroscope_threads()) == before + 1
    t0 = time.monotonic()
    sink.close()
    assert time.monotonic() - t0 < sink.close_timeout + 1
    assert len(pyroscope_threads()) == before
    assert sink.sent == 0 and sink.dropped == 40 and sink.queued == 0
    warnings = [r for r in said.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, said.text()
    assert "refused" in warnings[0].getMessage(), said.text()


def test_backend_500_retries_the_same_profile_with_backoff_then_recovers(said, profile_bytes):
    receiver = Receiver("error")
    try:
        sink = PyroscopeSink(receiver.url, profile=Profile(profile_bytes), app_name="svc",
                             backoff=(0.02, 0.08), environ={})
        first = window()
        sink.emit(first, [])
        requests = receiver.wait_for(lambda r: len(r) >= 4, "retries")
        queries = [urllib.parse.urlsplit(r["path"]).query for r in requests]
        assert len(set(queries)) == 1, queries  # the same window, kept for the retry
        said.wait("HTTP 500: ingestion failed: try later")
        with receiver.changed:
            receiver.mode = "ok"
        second = window()
        sink.emit(second, [])
        receiver.wait_for(lambda r: sum(q["mode"] == "ok" for q in r) >= 2, "both windows")
        said.wait("again")
        sink.close()
        ok = [r for r in receiver.requests if r["mode"] == "ok"]
        untils = [int(urllib.parse.parse_qs(urllib.parse.urlsplit(r["path"]).query)["until"][0])
                  for r in ok]
        assert untils == sorted(untils)  # oldest first
        for r in ok:
            check_ingest(r)
        assert sink.sent == 2 and sink.dropped == 0
        levels = [r.levelno for r in said.records]
        assert levels == [logging.WARNING, logging.INFO], said.text()
    finally:
        receiver.close()


def test_backend_that_hangs_costs_emit_nothing_and_close_aborts_it(said, profile_bytes):
    receiver = Receiver("hang")
    try:
        before = len(pyroscope_threads())
        sinks = []
        for _ in range(3):  # a watcher restarted (attach/detach) must not pile threads up
            sink = PyroscopeSink(receiver.url, profile=Profile(profile_bytes), app_name="svc",
                                 timeout=30, close_timeout=0.3, environ={})
            sink.emit(window(), [])
            sinks.append(sink)
        receiver.wait_for(lambda r: len(r) >= 3, "three requests in flight")
        slowest = 0.0
        for _ in range(100):
            t0 = time.perf_counter()
            sinks[0].emit(window(), [])
            slowest = max(slowest, time.perf_counter() - t0)
        assert slowest < 0.25, slowest  # the sender waits 30 s for an answer
        assert sinks[0].queued <= sinks[0].queue_size
        for sink in sinks:
            t0 = time.monotonic()
            sink.close()
            assert time.monotonic() - t0 < 1.5
        assert len(pyroscope_threads()) == before
        assert all(s.sent == 0 for s in sinks)
        assert sinks[0].dropped == 101  # every window accounted for, the aborted one too
    finally:
        receiver.close()


def test_slow_backend_times_out_and_is_said_once(said, profile_bytes):
    receiver = Receiver("hang")
    try:
        sink = PyroscopeSink(receiver.url, profile=Profile(profile_bytes), app_name="svc",
                             timeout=0.2, backoff=(0.01, 0.02), environ={})
        sink.emit(window(), [])
        receiver.wait_for(lambda r: len(r) >= 3, "retries after timeouts")
        said.wait("timed out")
        sink.close()
        assert len([r for r in said.records if r.levelno == logging.WARNING]) == 1, said.text()
    finally:
        receiver.close()


def test_profile_that_raises_is_said_once_then_recovers(receiver, said, profile_bytes):
    profile = Profile(profile_bytes, error=RuntimeError("no window yet"))
    sink = PyroscopeSink(receiver.url, profile=profile, app_name="svc", environ={})
    for n in (1, 2, 3):
        sink.emit(window(), [])
        profile.wait_calls(n)
    profile.error = None
    sink.emit(window(), [])
    receiver.wait_for(len, "the push once the profile is built")
    said.wait("built again")
    sink.close()
    assert sink.sent == 1 and sink.dropped == 3
    warnings = [r.getMessage() for r in said.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "RuntimeError: no window yet" in warnings[0], warnings


def test_no_profile_yet_is_nothing_to_push_and_nothing_to_say(receiver, said, profile_bytes):
    profile = Profile(None)
    sink = PyroscopeSink(receiver.url, profile=profile, app_name="svc", environ={})
    sink.emit(window(), [])
    profile.wait_calls(1)
    profile.data = profile_bytes
    sink.emit(window(), [])
    receiver.wait_for(len, "the push of the second window")
    sink.close()
    assert (sink.sent, sink.dropped, len(receiver.requests)) == (1, 1, 1)
    assert not said.records, said.text()


def test_queued_profiles_are_bounded_in_bytes(said):
    big = b"\x1f\x8b" + bytes(1 << 20)
    profile = Profile(big)
    sink = PyroscopeSink(closed_port_url(), profile=profile, app_name="svc", queue_size=100,
                         queue_bytes=3 << 20, backoff=(5.0, 5.0), environ={})
    for n in range(1, 11):
        sink.emit(window(), [])
        profile.wait_calls(n)
        with sink._lock:  # what the sink holds: at most 3 MiB of profiles
            assert sum(len(p.body or b"") for p in sink._pending) <= 3 << 20
    sink.close()
    assert sink.sent + sink.dropped == 10


# ---- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("variable, value, expected", [
    ("HEAPTRAIL_PYROSCOPE", "ftp://user:hunter2@host", "http:// or https:// URL"),
    ("HEAPTRAIL_PYROSCOPE", "localhost:4040", "http:// or https:// URL"),
    ("HEAPTRAIL_PYROSCOPE", "http://u:hunter2@host:99999", "bad port"),
    ("HEAPTRAIL_PYROSCOPE", "http://host:4040/?x=1", "no ?query"),
    ("HEAPTRAIL_PYROSCOPE_APP", "  ", "Pyroscope's rule for application names"),
    ("HEAPTRAIL_PYROSCOPE_APP", "my app", "Pyroscope's rule for application names"),
    ("HEAPTRAIL_PYROSCOPE_LABELS", "env", "NAME=VALUE"),
    ("HEAPTRAIL_PYROSCOPE_LABELS", "env=", "NAME=VALUE"),
    ("HEAPTRAIL_PYROSCOPE_LABELS", "1x=a", "not starting with a digit"),
    ("HEAPTRAIL_PYROSCOPE_LABELS", "__name__=a", "not starting with a digit or __"),
    ("HEAPTRAIL_PYROSCOPE_LABELS", "pid=1", "left to heaptrail"),
    ("HEAPTRAIL_PYROSCOPE_LABELS", "service_name=x", "pyroscope_app"),
    ("HEAPTRAIL_PYROSCOPE_LABELS", "env=a}b", "without spaces, commas or braces"),
    ("HEAPTRAIL_PYROSCOPE_LABELS", "env=a,env=b", "given twice"),
])
def test_bad_settings_are_clear_errors_that_never_show_a_password(variable, value, expected):
    with pytest.raises(ValueError) as error:
        Settings.from_environment(environ={variable: value}, strict=True)
    assert str(error.value).startswith(f"{variable}=") and expected in str(error.value), error.value
    assert "hunter2" not in str(error.value)


def test_settings_read_good_values_and_hide_the_url_from_repr():
    settings = Settings.from_environment(environ={
        "HEAPTRAIL_PYROSCOPE": "https://u:hunter2@profiles.example.com",
        "HEAPTRAIL_PYROSCOPE_APP": "shop/api-1.v2",
        "HEAPTRAIL_PYROSCOPE_LABELS": "env=prod, region=eu-1"})
    assert settings.pyroscope_app == "shop/api-1.v2"
    assert "hunter2" not in repr(settings)
    with pytest.raises(ValueError, match="pyroscope must be"):
        heaptrail.watch(interval=1, pyroscope="file:///etc/passwd")


def test_bad_variable_in_a_watched_process_is_one_warning_without_the_password(said):
    settings = Settings.from_environment(environ={"HEAPTRAIL_PYROSCOPE": "htp://u:hunter2@h"})
    assert settings.pyroscope == ""
    assert "HEAPTRAIL_PYROSCOPE='htp://h' is invalid" in said.text()
    assert "hunter2" not in said.text()


@pytest.mark.parametrize("command", ["run", "attach"])
def test_run_and_attach_refuse_a_bad_url_before_starting(command, tmp_path):
    marker = tmp_path / "ran"
    target = (["--", sys.executable, "-c", f"open({str(marker)!r}, 'w')"] if command == "run"
              else [str(os.getpid())])  # checked before the process is touched
    out = subprocess.run([sys.executable, "-m", "heaptrail", command, "--pyroscope",
                          "ftp://u:hunter2@h", "--pyroscope-app", "ok", *target],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out
    assert out.stderr.count("\n") == 1, out.stderr
    assert f"heaptrail {command}: pyroscope must be an http://" in out.stderr
    assert "hunter2" not in out.stderr and not marker.exists()


def test_default_application_name_is_the_programs(tmp_path):
    (tmp_path / "billing_worker.py").write_text(
        "from heaptrail._pyroscope import default_app_name\nprint(default_app_name())\n")
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "__main__.py").write_text(
        "from heaptrail._pyroscope import default_app_name\nprint(default_app_name())\n")
    script = subprocess.run([sys.executable, str(tmp_path / "billing_worker.py")],
                            capture_output=True, text=True, timeout=60)
    module = subprocess.run([sys.executable, "-m", "mypkg"], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert (script.stdout.strip(), module.stdout.strip()) == ("billing_worker", "mypkg"), \
        (script.stderr, module.stderr)
    assert APP_NAME.fullmatch(default_app_name())


# ---- end to end: the watcher pushes each window (needs Watcher._window_profile) --------------


def test_watch_pushes_every_window(receiver, said, tmp_path):
    heaptrail.stop()
    w = heaptrail.watch(interval=0.2, pyroscope=receiver.url, pyroscope_app="e2e",
                        pyroscope_labels={"env": "ci"})
    try:
        assert w._pyroscope is not None, \
            "the watcher has no Watcher._window_profile yet: nothing to push (said: " + \
            said.text() + ")"
        allocate_for_the_profile()
        requests = receiver.wait_for(lambda r: len(r) >= 3, "three windows")
    finally:
        w.stop()
        keep.clear()
    untils = []
    for request in requests:
        app, labels, query, parts = check_ingest(request)
        assert app == "e2e" and labels["env"] == "ci" and labels["pid"] == str(os.getpid())
        untils.append(int(query["until"]))
    assert untils == sorted(untils)
    raw = go_pprof(tmp_path, parts["profile"], "-raw")
    assert "inuse_space/bytes" in raw
    assert not [r for r in said.records if r.levelno >= logging.WARNING], said.text()


def test_heaptrail_run_pushes_with_the_scripts_name(receiver, tmp_path):
    script = tmp_path / "orders_service.py"
    script.write_text("import time\nblobs = []\nfor _ in range(40):\n"
                      "    blobs.append(bytearray(10000)); time.sleep(0.02)\n")
    out = subprocess.run([sys.executable, "-m", "heaptrail", "run", "--interval", "0.2",
                          "--pyroscope", receiver.url, "--pyroscope-labels", "env=ci", "--",
                          sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    requests = receiver.wait_for(len, "a push from the child")
    for request in requests:
        app, labels, _, _ = check_ingest(request)
        assert app == "orders_service" and labels["env"] == "ci"
