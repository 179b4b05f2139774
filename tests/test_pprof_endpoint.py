"""Live heap profiles over HTTP: ``/debug/pprof/heap`` (and ``?seconds=N`` deltas) on the
watcher's endpoint, read by ``go tool pprof`` as Go's are, labelled with each site's verdict
and leak pattern; bounded (one profile at a time, a size cap) and strict with bad requests."""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import heaptrail
from heaptrail._pprof_endpoint import HeapProfiles
from tools import require

PROGRAMS = Path(__file__).parent / "programs"
HEAPTRAIL = [sys.executable, "-m", "heaptrail"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def exchange(address, request, timeout=30):
    """Sends a raw request, reads to EOF; returns (status, headers, body)."""
    with socket.create_connection(address, timeout=timeout) as s:
        s.sendall(request)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    return int(lines[0].split()[1]), dict(line.split(": ", 1) for line in lines[1:]), body


def get(address, target):
    return exchange(address, f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


def wait_until(predicate, seconds=30, what="condition"):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached in {seconds} s"
        time.sleep(0.1)


def pprof_top(go, source, *flags):
    """`go tool pprof -top -lines` rows as (flat bytes text, "file:line") leaf lines."""
    out = subprocess.run([go, "tool", "pprof", "-top", "-lines", *flags, source],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PPROF_TMPDIR": os.path.dirname(source)
                              if os.path.exists(source) else "/tmp"})
    assert out.returncode == 0, out.stderr
    rows = []
    for line in out.stdout.splitlines():
        m = re.match(r"\s*(-?[\d.]+\w*B?)\s+[\d.]+%\s+[\d.]+%\s+\S+\s+[\d.]+%\s+.*?(\S+\.py:\d+)", line)
        if m:
            rows.append((m.group(1), m.group(2)))
    return rows, out.stdout


def marked_line(path, marker="# LEAK"):
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if marker in line)


# ---- a leaking service watched by `heaptrail run`, read by go tool pprof ---------------------

@pytest.fixture
def leaking_service(tmp_path, request):
    program = PROGRAMS / request.param
    port = free_port()
    env = {**os.environ, "HEAPTRAIL_TEST_SECONDS": "60", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*HEAPTRAIL, "run", "--interval", "1", "--prometheus", f"127.0.0.1:{port}", "--",
         sys.executable, str(program)],
        cwd=PROGRAMS, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    address = ("127.0.0.1", port)

    def flagged():
        try:
            status, _, body = get(address, "/metrics")
        except OSError:
            return False
        return status == 200 and re.search(rb'heaptrail_sites\{verdict="leak"\} [1-9]', body)

    try:
        wait_until(lambda: proc.poll() is not None or flagged(), 45, "a leak flagged")
        assert proc.poll() is None, proc.stderr.read().decode()
        yield program, address
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("leaking_service", ["leak_unbounded_cache.py",
                                             "leak_listener_never_removed.py"], indirect=True)
def test_go_tool_pprof_reads_the_live_and_delta_heap_with_the_leak_on_top(leaking_service,
                                                                         tmp_path):
    go = require("go", package="golang-go")
    program, (host, port) = leaking_service
    leak = f"/{program.name}:{marked_line(program)}"
    url = f"http://{host}:{port}/debug/pprof/heap"

    # Go's delta convention: the growth over the next N seconds, fetched by pprof itself.
    rows, text = pprof_top(go, url, "-seconds", "4")
    assert "Duration: 4s" in text and "delta profile" in text, text
    assert rows and rows[0][1].endswith(leak), text

    # The live heap, kept to the samples the watcher calls leaks: the leak's line is on top.
    status, headers, body = get((host, port), "/debug/pprof/heap")
    assert status == 200 and headers["Content-Type"] == "application/octet-stream"
    saved = tmp_path / "heap.pb.gz"
    saved.write_bytes(body)
    rows, text = pprof_top(go, str(saved), "-tagfocus", "verdict=leak")
    assert rows and rows[0][1].endswith(leak), text
    tags = subprocess.run([go, "tool", "pprof", "-tags", str(saved)], capture_output=True,
                          text=True, timeout=120).stdout
    pattern = re.search(r"# PATTERN: (\S+)", program.read_text()).group(1)
    assert re.search(r"verdict: Total", tags) and " leak\n" in tags, tags
    assert re.search(rf"pattern: Total[^\n]*\n[^\n]*{re.escape(pattern)}", tags), tags


# ---- the endpoint in this process: limits and bad requests -----------------------------------

kept = []


@pytest.fixture
def watcher():
    heaptrail.stop()
    w = heaptrail.watch(interval=3600, prometheus="0")
    try:
        kept.extend(bytearray(1000) for _ in range(100))
        w.check_now()
        yield w
    finally:
        w.stop()
        kept.clear()


@pytest.mark.parametrize("query,expected", [
    ("", 200), ("?gc=1", 200), ("?debug=0", 200), ("?seconds=abc", 400), ("?seconds=0", 400),
    ("?seconds=-5", 400), ("?seconds=1.5", 400), ("?seconds=601", 400), ("?seconds=" + "9" * 30, 400),
    ("?debug=1", 400), ("?file=/etc/passwd", 400), ("?seconds", 400), ("?%ff=1", 400),
    ("?a=1&b=2&c=3&d=4&e=5&f=6&g=7&h=8&i=9", 400),
])
def test_parameters_are_checked(watcher, query, expected):
    status, headers, body = get(watcher._prometheus.address, "/debug/pprof/heap" + query)
    assert status == expected, body
    if expected == 200:
        assert body[:2] == b"\x1f\x8b", "a gzipped profile"
    else:
        assert headers["Content-Type"].startswith("text/plain") and body.endswith(b"\n")


def test_head_and_other_methods(watcher):
    address = watcher._prometheus.address
    status, headers, body = exchange(address, b"HEAD /debug/pprof/heap HTTP/1.1\r\n\r\n")
    assert status == 200 and int(headers["Content-Length"]) > 0 and body == b""
    status, headers, _ = exchange(address, b"POST /debug/pprof/heap HTTP/1.1\r\n"
                                           b"Content-Length: 0\r\n\r\n")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert get(address, "/debug/pprof/heap/../../etc/passwd")[0] == 404
    assert get(address, "/debug/pprof/")[0] == 404


def test_one_profile_at_a_time_and_metrics_are_served_meanwhile(watcher):
    address = watcher._prometheus.address
    results = {}

    def delta():
        results["delta"] = get(address, "/debug/pprof/heap?seconds=2")

    first = threading.Thread(target=delta)
    started = time.monotonic()
    first.start()
    wait_until(lambda: watcher._prometheus._profiles._pending_until is not None, 10,
               "the delta profile started")
    status, headers, body = get(address, "/debug/pprof/heap")
    assert status == 429 and 1 <= int(headers["Retry-After"]) <= 2, body
    assert get(address, "/debug/pprof/heap?seconds=1")[0] == 429
    # The loop is not blocked by the delta being measured: metrics answer at once.
    status, _, body = get(address, "/metrics")
    assert status == 200 and b"heaptrail_traced_bytes" in body
    assert time.monotonic() - started < 2, "metrics waited for the delta profile"
    first.join(30)
    status, headers, body = results["delta"]
    assert status == 200 and body[:2] == b"\x1f\x8b"
    assert get(address, "/debug/pprof/heap")[0] == 200, "free again once answered"


def test_a_client_that_leaves_during_a_delta_frees_the_slot(watcher):
    address = watcher._prometheus.address
    with socket.create_connection(address, timeout=10) as s:
        s.sendall(b"GET /debug/pprof/heap?seconds=600 HTTP/1.1\r\n\r\n")
        wait_until(lambda: watcher._prometheus._profiles._pending_until is not None, 10,
                   "the delta profile started")
    wait_until(lambda: watcher._prometheus._profiles._pending_until is None, 10,
               "the slot freed")
    assert get(address, "/debug/pprof/heap")[0] == 200


def test_profiles_over_the_size_cap_get_a_clear_503(watcher):
    watcher._prometheus._profiles = HeapProfiles(watcher, max_bytes=100)
    status, _, body = get(watcher._prometheus.address, "/debug/pprof/heap")
    assert status == 503 and b"exceeds the cap of 100 bytes" in body


def test_not_tracing_gets_503(watcher):
    heaptrail.stop()
    status, _, body = get(watcher._prometheus.address, "/debug/pprof/heap")
    assert status == 503 and b"not tracing" in body


def test_the_profile_endpoint_binds_loopback_by_default(watcher):
    assert watcher._prometheus.address[0] == "127.0.0.1"
