"""The fleet summary: `heaptrail report` and `heaptrail html` over many processes' watcher
reports. End to end: gunicorn with 3 workers, each watched by heaptrail into its own report
(a post_fork hook), a client that hits a leaking path and a churning one; the summary must name
the leak once, at its line, in every worker that served leaking requests, and never the churn.
Then hand-made reports (every window encoded by the schema's owner, `_native._encode_window`)
for the rules (latest window, rotated files, pids per file) and for bad input: warnings and
keep going, a one-line error and exit status 2 only when nothing usable was read."""

import collections
import html
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from heaptrail import _native

APP_DIR = Path(__file__).resolve().parent / "programs" / "gunicorn_fleet"
APP = APP_DIR / "fleet_wsgi.py"
GUNICORN = shutil.which("gunicorn", path=os.path.dirname(sys.executable))
WORKERS = 3


def line_of(marker, path=APP):
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1)
                if f"# {marker}" in line)


def heaptrail(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "heaptrail", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result, *words):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("heaptrail "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


# --- end to end: gunicorn workers, one report each ---------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def latest_leak_lines(report):
    """The leak lines of the latest complete window of a report file."""
    try:
        lines = report.read_text().splitlines()
    except OSError:
        return set()
    for line in reversed(lines):
        try:
            window = json.loads(line)
        except ValueError:
            continue  # being written
        return {(leak["site"]["filename"], leak["site"]["lineno"]) for leak in window["leaks"]}
    return set()


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory):
    """Runs gunicorn until every worker that served leaking requests flags the leak (at most
    30 s), then stops it. Returns (report directory, {worker pid: leaking requests served})."""
    if GUNICORN is None:
        if os.environ.get("CI"):
            pytest.fail("gunicorn is not installed; CI must install it (tests/requirements.txt)")
        pytest.skip("gunicorn is not installed (scripts/setup installs it)")
    reports = tmp_path_factory.mktemp("fleet")
    port = free_port()
    env = dict(os.environ, FLEET_REPORT_DIR=str(reports), FLEET_INTERVAL="0.5")
    server = subprocess.Popen(
        [GUNICORN, "-w", str(WORKERS), "-b", f"127.0.0.1:{port}", "-c",
         str(APP_DIR / "gunicorn_conf.py"), "--chdir", str(APP_DIR), "fleet_wsgi:app"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    served = collections.Counter()
    stop = threading.Event()

    def client():
        n = 0
        while not stop.is_set():
            path = "/order" if n % 2 == 0 else "/search"
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).read()
            except OSError:
                if stop.is_set():
                    return
                time.sleep(0.1)  # not up yet
                continue
            if path == "/order":
                served[int(body.decode().rsplit("pid=", 1)[1])] += 1
            n += 1

    clients = [threading.Thread(target=client) for _ in range(WORKERS + 1)]
    try:
        for c in clients:
            c.start()
        leak = (str(APP), line_of("LEAK"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.5)
            pids = dict(served)
            if pids and all(leak in latest_leak_lines(reports / f"w-{pid}.jsonl")
                            for pid in pids):
                time.sleep(1.0)  # one more window or two, still under load
                break
    finally:
        stop.set()
        for c in clients:
            c.join(10)
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=30)
    assert served, f"no request was served\n{stderr[-3000:]}"
    return reports, dict(served)


@pytest.fixture(scope="module")
def fleet_json(fleet_dir):
    reports, _ = fleet_dir
    out = heaptrail("report", "--json", "--limit", "0", reports)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_every_worker_that_served_the_leak_counts_once(fleet_dir, fleet_json):
    reports, served = fleet_dir
    assert len(list(reports.iterdir())) == WORKERS, "one report per worker"
    doc = fleet_json
    assert doc["schema"] == _native.FLEET_SCHEMA
    assert doc["process_count"] == WORKERS
    assert sorted(p["pid"] for p in doc["processes"]) == sorted(
        int(f.name[2:-6]) for f in reports.iterdir())
    ours = [leak for leak in doc["leaks"] if leak["site"]["filename"] == str(APP)]
    assert len(ours) == 1, json.dumps(doc["leaks"], indent=1)[:3000]
    leak = ours[0]
    assert leak["site"]["lineno"] == line_of("LEAK")
    assert leak["site"]["function"] == "order", "the function the workers recorded"
    assert leak["pattern"] == "unbounded-list" and "bound it" in leak["hint"]
    assert leak["holder"] == "fleet_wsgi.audit_log"
    workers_with_leaking_requests = sorted(pid for pid, n in served.items() if n > 0)
    assert leak["processes"] == len(workers_with_leaking_requests), served
    assert sorted(p["pid"] for p in leak["seen_in"]) == workers_with_leaking_requests
    rates = leak["process_bytes_per_second"]
    assert 0 < rates["min"] <= rates["median"] <= rates["max"]
    if leak["processes"] == 3:  # the total of three rates: their min, median and max
        assert leak["bytes_per_second"] == pytest.approx(sum(rates.values()))
    assert leak["size"] > 0 and leak["first_seen"] <= leak["last_seen"]
    assert doc["process_verdicts"]["python-growth"] >= 1
    assert set(doc["process_verdicts"]) >= set(_native.PROCESS_VERDICTS)


def test_the_churning_path_is_not_a_leak(fleet_json):
    churn = line_of("CHURN")
    flagged = [(leak["site"]["filename"], leak["site"]["lineno"]) for leak in fleet_json["leaks"]]
    assert (str(APP), churn) not in flagged, flagged
    assert all(f != str(APP) or n == line_of("LEAK") for f, n in flagged), flagged


def test_the_text_summary(fleet_dir):
    reports, served = fleet_dir
    out = heaptrail("report", reports)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    text = out.stdout
    assert text.startswith(f"Fleet: {WORKERS} processes in {WORKERS} report files, ")
    assert "Each process counts with its latest window." in text
    assert text.count(f"{APP}:{line_of('LEAK')} in order: unbounded-list") == 1, text
    n = sum(1 for v in served.values() if v)
    assert f"in {n} of {WORKERS} processes: +" in text, text
    assert "held by: fleet_wsgi.audit_log" in text and "fix: collection that only grows" in text


def test_the_fleet_page(fleet_dir, tmp_path):
    reports, _ = fleet_dir
    out = heaptrail("html", reports)
    page = Path(str(reports) + ".html")
    try:
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"wrote {page}"
        text = page.read_text()
    finally:
        page.unlink(missing_ok=True)
    assert "<h2>Leaks</h2>" in text and "fleet_wsgi.audit_log" in text
    assert f"<b>fleet_wsgi.py:{line_of('LEAK')}</b> <span class=\"fn\">order</span>" in text
    assert f"<b>{WORKERS}</b> of {WORKERS}" in text


# --- hand-made reports: the rules -----------------------------------------------------------

def window(pid, n, leaks=(), verdict="python-growth", time_=None):
    """One window line; ``leaks``: (filename, lineno, pattern, holder, bytes_per_second)."""
    rows, entries = [], []
    for filename, lineno, pattern, holder, rate in leaks:
        rows.append({"filename": filename, "lineno": lineno, "traceback": [[filename, lineno]],
                     "size": 1000 * n, "size_diff": 1000, "count": 10 * n, "count_diff": 10,
                     "bytes_per_second": rate, "verdict": "leak", "confidence": 0.99,
                     "windows": n, "growth_bytes": 1000 * n, "holder": holder,
                     "pattern": pattern})
        entries.append({"site": {"filename": filename, "lineno": lineno}, "holder": holder,
                        "holder_type": "builtins.list", "path": [], "pattern": pattern,
                        "hint": _native.LEAK_PATTERNS[pattern], "size": 1000 * n,
                        "count": 10 * n, "bytes_per_second": rate,
                        "sites": [{"filename": filename, "lineno": lineno, "role": "element",
                                   "size": 1000 * n, "count": 10 * n,
                                   "bytes_per_second": rate}],
                        "feeding_line": None})
    return _native._encode_window({
        "schema": _native.WATCH_SCHEMA, "time": 1_800_000_000.0 + (time_ or n), "pid": pid,
        "window": n, "interval": 1.0, "rss_bytes": 10_000_000, "traced_bytes": 5_000_000,
        "traced_peak_bytes": 6_000_000, "process_verdict": verdict, "process_confidence": 0.9,
        "sites": rows, "leaks": entries}) + "\n"


LEAK_A = ("/srv/app/orders.py", 41, "unbounded-list", "orders.AUDIT", 100.0)
LEAK_B = ("/srv/app/cache.py", 7, "unbounded-cache", "cache._SESSIONS", 300.0)


def write(path, *lines):
    path.write_text("".join(lines))
    return path


def test_latest_window_rotation_and_pids_per_file(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    # `heaptrail run` workers 1 and 2 share leaks.jsonl, rotated once: leaks.jsonl.1 is older.
    # Worker 3 ended before the rotation; worker 1's leak stopped in its latest window.
    write(logs / "leaks.jsonl.1", window(1, 1, [LEAK_A]), window(2, 1, [LEAK_A]),
          window(3, 1, [LEAK_A]))
    write(logs / "leaks.jsonl", window(1, 2, [], verdict="ok"), window(2, 2, [LEAK_A, LEAK_B]))
    # Another host, its own file: pid 1 again, a process of its own.
    write(logs / "host2.jsonl", window(1, 5, [LEAK_B], time_=20))
    out = heaptrail("report", "--json", logs)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    doc = json.loads(out.stdout)
    procs = sorted((Path(p["source"]).name, p["pid"], p["window"], p["windows"])
                   for p in doc["processes"])
    assert procs == [("host2.jsonl", 1, 5, 1), ("leaks.jsonl", 1, 2, 2),
                     ("leaks.jsonl", 2, 2, 2), ("leaks.jsonl", 3, 1, 1)]
    assert doc["process_verdicts"]["ok"] == 1 and doc["process_verdicts"]["python-growth"] == 3
    b, a = doc["leaks"]  # fastest-growing in total first
    assert (b["site"]["lineno"], b["processes"], b["bytes_per_second"]) == (7, 2, 600.0)
    assert (a["site"]["lineno"], a["processes"], a["bytes_per_second"]) == (41, 2, 200.0)
    assert sorted(p["pid"] for p in a["seen_in"]) == [2, 3], "pid 1's latest window is clean"
    assert a["first_seen"] == 1_800_000_001.0, "first reported in the rotated file"
    assert b["last_seen"] == 1_800_000_020.0
    assert a["hint"] == _native.LEAK_PATTERNS["unbounded-list"]
    # The same files named one by one give the same summary.
    again = heaptrail("report", "--json", *sorted(logs.iterdir()))
    assert json.loads(again.stdout)["leaks"] == doc["leaks"]
    # One shared file alone is a fleet of its pids too.
    shared = heaptrail("report", logs / "leaks.jsonl")
    assert shared.returncode == 0
    assert shared.stdout.startswith("Fleet: 2 processes in 1 report file, 2 windows")
    assert "#1 /srv/app/cache.py:7 unbounded-cache\n    in 1 of 2 processes" in shared.stdout


def test_limit_and_no_leak(tmp_path):
    write(tmp_path / "a.jsonl", window(1, 1, [LEAK_A, LEAK_B]))
    out = heaptrail("report", "--limit", "1", tmp_path)
    assert "#1 /srv/app/cache.py:7" in out.stdout and "#2" not in out.stdout
    assert out.stdout.endswith("1 more leak not shown (--limit)\n")
    doc = json.loads(heaptrail("report", "--json", "--limit", "1", tmp_path).stdout)
    assert (len(doc["leaks"]), doc["leak_count"]) == (1, 2)
    write(tmp_path / "a.jsonl", window(1, 1, [], verdict="ok"))
    quiet = heaptrail("report", tmp_path)
    assert quiet.returncode == 0
    assert "Process verdicts: ok 1\n\nNo leak in the latest window of any process." in quiet.stdout


# --- bad input -------------------------------------------------------------------------------

def snapshot_file(path):
    subprocess.run([sys.executable, "-c", "import heaptrail, sys; heaptrail.start(); "
                    "keep = [str(i) for i in range(1000)]; "
                    "heaptrail.take_snapshot().dump(sys.argv[1])", str(path)],
                   check=True, timeout=60)
    return path


def test_bad_files_are_warnings_when_others_can_be_read(tmp_path):
    d = tmp_path / "reports"
    d.mkdir()
    cut = window(1, 3, [LEAK_A])
    write(d / "w-1.jsonl", window(1, 1), window(1, 2, [LEAK_A]), cut[:len(cut) // 2])
    write(d / "w-2.jsonl")  # a worker that has not written yet
    write(d / "w-3.jsonl", '{"schema": "heaptrail.watch/2", "pid": 3, "wind')
    write(d / "notes.txt", "hello\n")
    snapshot_file(d / "app.heaptrail")
    (d / "w-4.jsonl").symlink_to(tmp_path / "gone.jsonl")
    (d / "old").mkdir()
    out = heaptrail("report", d)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    assert "#1 /srv/app/orders.py:41 unbounded-list\n    in 1 of 1 process" in out.stdout
    warnings = out.stderr.strip().splitlines()
    assert all(w.startswith("heaptrail report: warning: ") for w in warnings), warnings
    text = "\n".join(warnings)
    assert "skipped 2 files that are not watcher reports: app.heaptrail, notes.txt" in text
    assert f"{d / 'w-1.jsonl'}: line 3: incomplete JSON" in text and "still writing" in text
    assert f"{d / 'w-2.jsonl'}: no window in the file (it is empty); file skipped" in text
    assert f"{d / 'w-3.jsonl'}: line 1: not a heaptrail watcher report: incomplete JSON" in text
    assert f"{d / 'w-4.jsonl'}: cannot read it: No such file" in text
    assert len(warnings) == 5, text
    # A snapshot named among reports is skipped with a warning; alone it is read as before.
    mixed = heaptrail("report", d / "w-1.jsonl", d / "app.heaptrail")
    assert mixed.returncode == 0
    assert "app.heaptrail is a heaptrail snapshot, not a watcher report; skipped" in mixed.stderr
    alone = heaptrail("report", "--limit", "1", d / "app.heaptrail")
    assert alone.returncode == 0 and "size=" in alone.stdout and "Total:" in alone.stdout


def test_nothing_usable_is_one_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(heaptrail("report", empty),
                          "no watcher report in this directory (it is empty)")
    assert_one_line_error(heaptrail("html", empty), "it is empty")
    junk = tmp_path / "junk"
    junk.mkdir()
    write(junk / "a.txt", "x\n")
    assert_one_line_error(heaptrail("report", junk),
                          "its files are not watcher reports: a.txt")
    bad = write(tmp_path / "bad.jsonl", '{"schema": "heaptrail.watch/2"}\n')
    assert_one_line_error(heaptrail("report", bad),
                          "bad.jsonl: line 1: not a heaptrail watcher report: missing field")
    both = heaptrail("report", bad, tmp_path / "missing.jsonl")
    assert both.returncode == 2 and "Traceback" not in both.stderr
    lines = both.stderr.strip().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("heaptrail report: warning: ") and "bad.jsonl" in lines[0]
    assert "missing.jsonl: cannot read it" in lines[1]
    assert lines[2].startswith("heaptrail report: no window could be read from ")
    refused = heaptrail("report", "--key", "traceback", "--include", "*x*", junk)
    assert_one_line_error(refused, "--key, --include: for a snapshot, not for watcher reports")


# --- the page --------------------------------------------------------------------------------

EVIL = "/srv/<script>alert(1)</script>/a&b.py"


def test_fleet_page_options_and_escaping(tmp_path):
    d = tmp_path / "logs"
    d.mkdir()
    write(d / "w-1.jsonl", window(1, 1, [(EVIL, 3, "unbounded-list", "<b>holder</b>", 5.0)]))
    write(d / "w-2.jsonl", window(2, 1, [(EVIL, 3, "unbounded-list", "<b>holder</b>", 7.0)]))
    write(d / "w-3.jsonl", window(3, 1, [], verdict="ok"))
    out = heaptrail("html", d, "--title", "<i>fleet</i>")
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "logs.html").read_text()
    assert "<script>alert" not in text and "<b>holder</b>" not in text and "<i>fleet" not in text
    assert html.escape("<b>holder</b>", quote=True) in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<b>2</b> of 3" in text and "<b>+12 B/s</b>" in text
    assert "default-src 'none'" in text
    several = heaptrail("html", d / "w-1.jsonl", d / "w-2.jsonl")
    assert_one_line_error(several, "several inputs: name the page with -o OUT")
    written = heaptrail("html", d / "w-1.jsonl", d / "w-2.jsonl", "-o", tmp_path / "two.html")
    assert written.returncode == 0 and "<b>2</b> of 2" in (tmp_path / "two.html").read_text()
    assert_one_line_error(heaptrail("html", d, "--pid", "1"), "--pid applies to one")
    # One report file alone keeps its per-process page.
    single = heaptrail("html", d / "w-1.jsonl", "-o", tmp_path / "one.html")
    assert single.returncode == 0 and "<h2>Process 1 " in (tmp_path / "one.html").read_text()


def test_help_explains_the_inputs():
    for command in ("report", "html"):
        text = " ".join(heaptrail(command, "--help").stdout.split())
        assert "a directory (every watcher report file in it" in text, text
        assert "rotated copies FILE.1" in text and "latest window" in text
    assert _native.FLEET_SCHEMA in " ".join(heaptrail("report", "--help").stdout.split())
