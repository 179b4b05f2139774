"""The watcher's opt-in Prometheus endpoint: valid exposition format (checked by promtool) and
scraped by a real Prometheus server started by the test. Binds 127.0.0.1."""

import json
import os
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

import heaptrail

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
needs = pytest.mark.skipif(
    not (PROMTOOL and PROMETHEUS) and not os.environ.get("CI"),
    reason="needs Debian's prometheus package (CI installs it)")

leaked = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def watcher():
    heaptrail.stop()
    w = heaptrail.watch(interval=0.2, prometheus="0")
    try:
        for _ in range(60):
            leaked.append(bytearray(4096))
            time.sleep(0.01)
        w.check_now()
        yield w
    finally:
        w.stop()
        leaked.clear()


def scrape(address):
    with urllib.request.urlopen(f"http://{address[0]}:{address[1]}/metrics", timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        return r.read().decode()


@needs
def test_metrics_pass_promtool(watcher):
    host, port = watcher._prometheus.address
    assert host == "127.0.0.1"
    text = scrape((host, port))
    assert "heaptrail_traced_bytes " in text and "heaptrail_site_bytes{" in text
    check = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


@needs
def test_a_real_prometheus_scrapes_it(watcher, tmp_path):
    target = "%s:%d" % watcher._prometheus.address
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: heaptrail\n    static_configs: [{{targets: ['{target}']}}]\n")
    port = free_port()
    server = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        value = None
        while time.monotonic() < deadline and value is None:
            time.sleep(1)
            try:
                url = f"http://127.0.0.1:{port}/api/v1/query?query=heaptrail_traced_bytes"
                with urllib.request.urlopen(url, timeout=5) as r:
                    result = json.load(r)["data"]["result"]
                if result:
                    value = float(result[0]["value"][1])
            except OSError:
                continue
        assert value is not None and value > 0, "Prometheus never scraped heaptrail"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_metrics_endpoint_serves_only_metrics(watcher):
    host, port = watcher._prometheus.address
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://{host}:{port}/admin", timeout=5)
    assert err.value.code == 404


# ---- the endpoint under hostile or careless clients ---------------------------------------------
# These drive PrometheusEndpoint directly with short, configurable timeouts. Every wait polls
# against a generous deadline; no test depends on how fast the machine is.

from heaptrail import _prometheus  # noqa: E402
from heaptrail._prometheus import PrometheusEndpoint  # noqa: E402

REQUEST = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def fake_report(nsites):
    """A window report with ``nsites`` sites (about 600 bytes of metrics text each)."""
    sites = [{"filename": f"/srv/app/module_{i}.py", "lineno": i, "verdict": "plateau",
              "pattern": "", "size": 1000 + i, "count": i, "bytes_per_second": 0.0}
             for i in range(nsites)]
    return {"window": 3, "rss_bytes": 50 << 20, "traced_bytes": 10 << 20,
            "traced_peak_bytes": 11 << 20, "process_verdict": "ok", "sites": sites, "leaks": []}


@pytest.fixture
def make_endpoint():
    endpoints = []

    def make(**limits):
        endpoint = PrometheusEndpoint(("127.0.0.1", 0), **limits)
        endpoint.emit(fake_report(5), [])
        endpoints.append(endpoint)
        return endpoint

    yield make
    for endpoint in endpoints:
        endpoint.close()


def exchange(address, data, shut_write=False, timeout=10):
    """Sends ``data``, reads to EOF; returns (status, headers, body)."""
    with socket.create_connection(address, timeout=timeout) as s:
        s.sendall(data)
        if shut_write:
            s.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def timed_scrape(address):
    start = time.monotonic()
    status, _, body = exchange(address, REQUEST)
    assert status == 200 and b"heaptrail_traced_bytes " in body
    return time.monotonic() - start


def threads():
    """Python threads and OS threads of this process. Compared with `<=`: a thread left by an
    earlier test (a daemon finishing late) may end meanwhile, never start."""
    return threading.active_count(), len(os.listdir("/proc/self/task"))


def no_more_threads(now, before):
    return all(a <= b for a, b in zip(now, before))


def closed_by_server(sock):
    """True once the server has closed ``sock`` (EOF or reset), without blocking."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def wait_until(predicate, seconds=15):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_idle_clients_add_no_threads_and_scrapes_are_still_answered(make_endpoint):
    endpoint = make_endpoint(header_timeout=60, idle_timeout=60)
    timed_scrape(endpoint.address)
    before = threads()
    idle = []
    try:
        for i in range(200):
            s = socket.create_connection(endpoint.address, timeout=10)
            if i % 2:
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
            idle.append(s)
        # The cap (64) closes the oldest waiting connections to make room: promptly, not
        # after the 60 s timeout.
        wait_until(lambda: sum(closed_by_server(s) for s in idle) >= 200 - 64)
        assert no_more_threads(threads(), before), (threads(), before)
        for _ in range(5):
            assert timed_scrape(endpoint.address) < 2.0
        assert no_more_threads(threads(), before), (threads(), before)
    finally:
        for s in idle:
            s.close()


def test_slow_and_idle_clients_are_timed_out(make_endpoint):
    endpoint = make_endpoint(header_timeout=0.5, idle_timeout=0.3)
    idle = [socket.create_connection(endpoint.address) for _ in range(20)]
    slow = socket.create_connection(endpoint.address)  # one byte at a time, never done
    try:
        start = time.monotonic()
        for byte in REQUEST[:-2]:
            if closed_by_server(slow):
                break
            slow.setblocking(True)
            slow.sendall(bytes([byte]))
            time.sleep(0.1)
        # Progress does not extend the head's deadline: slowloris is closed after ~0.5 s.
        assert closed_by_server(slow) and time.monotonic() - start < len(REQUEST) * 0.1
        wait_until(lambda: all(closed_by_server(s) for s in idle))
        timed_scrape(endpoint.address)
    finally:
        for s in idle + [slow]:
            s.close()


def test_half_closed_clients(make_endpoint):
    endpoint = make_endpoint(header_timeout=60, idle_timeout=60)
    # A complete request, then the client's write side closed: still answered.
    status, _, body = exchange(endpoint.address, REQUEST, shut_write=True)
    assert status == 200 and b"heaptrail_rss_bytes" in body
    # Half a request, then EOF: closed at once, not after the 60 s timeout.
    with socket.create_connection(endpoint.address) as s:
        s.sendall(b"GET /metr")
        s.shutdown(socket.SHUT_WR)
        wait_until(lambda: closed_by_server(s), seconds=10)
    timed_scrape(endpoint.address)


@pytest.mark.parametrize("request_bytes", [
    b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\n" + b"X-Many: header\r\n" * 4000 + b"\r\n",
    b"GET /" + b"m" * 20000 + b" HTTP/1.1\r\n\r\n",
    b"A" * 30000,  # no line end at all
], ids=["one-big-field", "many-fields", "long-request-line", "no-line-end"])
def test_oversized_request_heads_get_431(make_endpoint, request_bytes):
    endpoint = make_endpoint(max_head_bytes=8192)
    status, _, _ = exchange(endpoint.address, request_bytes)
    assert status == 431
    timed_scrape(endpoint.address)


@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET /metrics\r\n\r\n",                        # HTTP/0.9
    b"GET /metrics HTTP/1.1 extra\r\n\r\n",
    b"GET  /metrics HTTP/1.1\r\n\r\n",
    b"GET metrics HTTP/1.1\r\n\r\n",
    b"GET http://127.0.0.1/metrics HTTP/1.1\r\n\r\n",  # absolute form: only origin form
    b"GET /metrics FTP/1.0\r\n\r\n",
    b"GET /metrics HTTP/2.0\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"GET /met\x00rics HTTP/1.1\r\n\r\n",
    b"G\xc3\x89T /metrics HTTP/1.1\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\n folded: field\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(256)) + b"\r\n\r\n",  # TLS-ish
], ids=lambda b: repr(b[:24]))
def test_malformed_requests_get_400(make_endpoint, request_bytes):
    endpoint = make_endpoint()
    status, _, body = exchange(endpoint.address, request_bytes)
    assert status == 400 and b"heaptrail" not in body
    timed_scrape(endpoint.address)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE",
                                    "CONNECT", "PROPFIND"])
def test_only_get_and_head_are_allowed(make_endpoint, method):
    endpoint = make_endpoint()
    request = f"{method} /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello".encode()
    status, headers, _ = exchange(endpoint.address, request)
    assert status == 405 and headers["Allow"] == "GET, HEAD"


@pytest.mark.parametrize("target,expected", [
    ("/metrics", 200), ("/", 200), ("/metrics?name[]=x", 200), ("/metrics/", 404),
    ("/admin", 404), ("/../../etc/passwd", 404), ("/%2e%2e/etc/passwd", 404), ("//metrics", 404),
])
def test_paths(make_endpoint, target, expected):
    endpoint = make_endpoint()
    status, headers, body = exchange(endpoint.address, f"GET {target} HTTP/1.0\r\n\r\n".encode())
    assert status == expected and headers["Connection"] == "close"
    assert (b"heaptrail_rss_bytes" in body) == (expected == 200)


def test_head_has_headers_and_no_body(make_endpoint):
    endpoint = make_endpoint()
    _, get_headers, get_body = exchange(endpoint.address, REQUEST)
    status, headers, body = exchange(endpoint.address, b"HEAD /metrics HTTP/1.1\r\n\r\n")
    assert status == 200 and body == b""
    assert headers["Content-Length"] == str(len(get_body)) == get_headers["Content-Length"]
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")


def test_clients_that_disconnect_mid_response_are_silent(make_endpoint, capfd, caplog):
    endpoint = make_endpoint(max_site_series=10_000)
    endpoint.emit(fake_report(4000), [])  # megabytes of text: the send outlives the client
    assert len(exchange(endpoint.address, REQUEST)[2]) > 1_000_000
    for i in range(30):
        s = socket.create_connection(endpoint.address, timeout=10)
        s.sendall(REQUEST)
        if i % 3:
            s.recv(1000)
        if i % 2:  # reset rather than FIN: the server's next send fails at once
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    timed_scrape(endpoint.address)
    endpoint.close()
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert [r for r in caplog.records if r.name == "heaptrail"] == []


def test_the_connection_cap_refuses_with_503_when_every_slot_is_busy(make_endpoint, monkeypatch,
                                                                     caplog):
    # Answered clients that keep their connections open hold their slot while the server
    # lingers (reading what they might still send); made long here so the slots stay busy.
    monkeypatch.setattr(_prometheus, "_LINGER_SECONDS", 60)
    endpoint = make_endpoint(max_connections=2, idle_timeout=60)
    held = []
    try:
        for _ in range(2):
            s = socket.create_connection(endpoint.address, timeout=10)
            s.sendall(REQUEST)
            answer = b""
            while b"heaptrail_sites" not in answer:
                answer += s.recv(65536)
            held.append(s)
        for _ in range(5):
            # A client that waits to be accepted gets the 503; one whose request is already
            # on its way may be reset instead (the server does not wait for it): refused too.
            assert exchange(endpoint.address, b"")[0] == 503
            try:
                assert exchange(endpoint.address, REQUEST)[0] == 503
            except ConnectionResetError:
                pass
        warnings = [r for r in caplog.records if r.name == "heaptrail"]
        assert len(warnings) == 1 and "cap" in warnings[0].getMessage()  # rate limited
    finally:
        for s in held:
            s.close()
    wait_until(lambda: exchange(endpoint.address, REQUEST)[0] == 200)


def test_response_size_cap_keeps_the_process_wide_series(make_endpoint, caplog):
    endpoint = make_endpoint(max_response_bytes=20_000)
    endpoint.emit(fake_report(500), [])
    for _ in range(3):
        status, headers, body = exchange(endpoint.address, REQUEST)
        assert status == 200 and int(headers["Content-Length"]) == len(body) <= 20_000
        assert b"heaptrail_traced_bytes " in body and b"heaptrail_site_bytes{" not in body
    warnings = [r for r in caplog.records if r.name == "heaptrail"]
    assert len(warnings) == 1 and "exceeds the cap" in warnings[0].getMessage()
    endpoint.emit(fake_report(5), [])
    assert b"heaptrail_site_bytes{" in exchange(endpoint.address, REQUEST)[2]


def test_close_releases_the_port_and_the_thread():
    endpoint = PrometheusEndpoint(("127.0.0.1", 0), header_timeout=60, idle_timeout=60)
    endpoint.emit(fake_report(4000), [])
    assert endpoint._thread.is_alive()
    native_id = endpoint._thread.native_id
    idle = [socket.create_connection(endpoint.address) for _ in range(10)]
    reading = socket.create_connection(endpoint.address)  # mid-response, not reading on
    reading.sendall(REQUEST)
    reading.recv(100)
    start = time.monotonic()
    endpoint.close()
    assert time.monotonic() - start < 2.0
    endpoint.close()  # twice is harmless
    assert not endpoint._thread.is_alive() and endpoint._thread not in threading.enumerate()
    # The OS thread ends just after join() returns.
    wait_until(lambda: str(native_id) not in os.listdir("/proc/self/task"), seconds=5)
    wait_until(lambda: all(closed_by_server(s) for s in idle), seconds=5)
    for s in idle + [reading]:
        s.close()
    with pytest.raises(OSError):
        socket.create_connection(endpoint.address, timeout=5).close()
    same = PrometheusEndpoint(endpoint.address)  # the very port, at once (a restarted watcher)
    try:
        assert same.address == endpoint.address
        assert exchange(same.address, REQUEST)[0] == 200
    finally:
        same.close()


LOAD = r"""
import http.client, sys, threading, time
host, port, nthreads, each = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ok, failures, worst = [0], [], [0.0]
lock = threading.Lock()
def scraper():
    for _ in range(each):
        start = time.monotonic()
        try:
            c = http.client.HTTPConnection(host, port, timeout=10)
            c.request("GET", "/metrics")
            r = c.getresponse()
            body = r.read()
            c.close()
            good = r.status == 200 and b"heaptrail_windows_total" in body
        except OSError as e:
            good, r = False, e
        with lock:
            worst[0] = max(worst[0], time.monotonic() - start)
            if good:
                ok[0] += 1
            else:
                failures.append(repr(getattr(r, "status", r)))
ts = [threading.Thread(target=scraper) for _ in range(nthreads)]
for t in ts: t.start()
for t in ts: t.join()
print(ok[0], round(worst[0], 3), failures[:5])
"""


def scrape_load(address, nthreads=8, each=30):
    """Concurrent scrapes from another process: ``nthreads`` x ``each``, bounded in time."""
    return subprocess.Popen(
        [sys.executable, "-c", LOAD, address[0], str(address[1]), str(nthreads), str(each)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_load(load, expected):
    out, err = load.communicate(timeout=120)
    assert load.returncode == 0, err
    ok, worst, failures = out.split(" ", 2)
    assert int(ok) == expected, (out, err)
    return float(worst)


def test_concurrent_scrapes_from_another_process(make_endpoint, capfd):
    endpoint = make_endpoint()
    endpoint.emit(fake_report(200), [])
    before = threads()
    load = scrape_load(endpoint.address)
    latencies = []
    while load.poll() is None:  # the endpoint keeps answering this process meanwhile
        latencies.append(timed_scrape(endpoint.address))
        assert no_more_threads(threads(), before), (threads(), before)
        time.sleep(0.05)
    finish_load(load, 8 * 30)
    assert latencies and max(latencies) < 5.0
    assert capfd.readouterr().err == ""


def test_the_endpoint_is_never_traced_nor_reported_as_a_leak():
    """The endpoint's thread allocates (buffers, rendered text, selector tables); none of it
    may show in the traces of the process, and no site in its files may be reported."""
    own = {os.path.realpath(m.__file__) for m in (_prometheus, selectors, socket)}

    def own_tracebacks(snapshot):
        return {tuple((f.filename, f.lineno) for f in t.traceback) for t in snapshot.traces
                if any(os.path.realpath(f.filename) in own for f in t.traceback)}

    heaptrail.stop()
    w = heaptrail.watch(interval=0.1, prometheus="0")
    try:
        base = own_tracebacks(heaptrail.take_snapshot())
        load = scrape_load(w._prometheus.address, nthreads=4, each=60)
        finish_load(load, 4 * 60)
        w.check_now()
        assert own_tracebacks(heaptrail.take_snapshot()) - base == set()
        reported = {s["filename"] for report in w.history for s in report["sites"]}
        assert not {f for f in reported if os.path.realpath(f) in own}
    finally:
        w.stop()


def test_per_site_series_are_bounded_whatever_the_number_of_sites():
    """A series per site ever reported would make the metrics a leak of their own (labels are
    file names, lines, holders): a window exports at most MAX_SITE_SERIES sites and as many
    leaks, the flagged and fastest-growing first, and counts the rest."""
    from heaptrail import _native
    from heaptrail._prometheus import MAX_SITE_SERIES, render_metrics

    def site(i, verdict):
        return {"filename": f"/app/mod{i}.py", "lineno": i, "verdict": verdict, "pattern": "",
                "size": 1000 + i, "count": 1, "bytes_per_second": float(i % 7)}

    sites = [site(i, "plateau") for i in range(450)]
    sites += [site(1000 + i, _native.LEAK) for i in range(5)]
    leaks = [{"site": {"filename": f"/app/leak{i}.py", "lineno": i}, "holder": f"app.cache{i}",
              "pattern": "unbounded-cache", "size": 10 * i, "bytes_per_second": float(i)}
             for i in range(MAX_SITE_SERIES + 20)]
    report = {"window": 3, "rss_bytes": 1, "traced_bytes": 1, "traced_peak_bytes": 1,
              "process_verdict": _native.PROCESS_VERDICTS[0], "sites": sites, "leaks": leaks}
    text = render_metrics(report)
    site_series = [line for line in text.splitlines() if line.startswith("heaptrail_site_bytes{")]
    leak_series = [line for line in text.splitlines() if line.startswith("heaptrail_leak_bytes{")]
    assert len(site_series) == MAX_SITE_SERIES
    assert len(leak_series) == MAX_SITE_SERIES
    # Every leaking site is kept, and the fastest-growing leaks.
    assert sum('verdict="leak"' in line for line in site_series) == 5
    assert f'holder="app.cache{MAX_SITE_SERIES + 19}"' in text and 'holder="app.cache0"' not in text
    dropped = 455 - MAX_SITE_SERIES + 20
    assert f"heaptrail_site_series_dropped {dropped}" in text
    assert f"heaptrail_site_series_dropped {455 + len(leaks)}" in render_metrics(report, per_site=False)
    if PROMTOOL:
        done = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stdout + done.stderr
