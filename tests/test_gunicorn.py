"""`heaptrail run` on a pre-forking server: gunicorn with several workers, each of which gets
its own watcher, appending to the one report (each line with its pid), and flags the app's
leaking line."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

APP_DIR = Path(__file__).resolve().parent / "programs" / "gunicorn_app"
GUNICORN = shutil.which("gunicorn", path=os.path.dirname(sys.executable))
pytestmark = pytest.mark.skipif(GUNICORN is None and not os.environ.get("CI"),
                                reason="gunicorn is not installed (scripts/setup installs it)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_gunicorn_worker_reports_the_leak(tmp_path):
    port, report, pidfile = free_port(), tmp_path / "leaks.jsonl", tmp_path / "gunicorn.pid"
    leak_line = next(i for i, line in enumerate((APP_DIR / "leaky_wsgi.py").read_text().splitlines(), 1)
                     if "# LEAK" in line)
    server = subprocess.Popen(
        [sys.executable, "-m", "heaptrail", "run", "--interval", "0.5", "--report", str(report), "--",
         GUNICORN, "-w", "3", "-b", f"127.0.0.1:{port}", "--pid", str(pidfile), "--chdir", str(APP_DIR),
         "leaky_wsgi:app"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).read()
                break
            except OSError:
                time.sleep(0.2)
        end = time.monotonic() + 8
        n = 0
        while time.monotonic() < end:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/order?id={n}", timeout=5).read()
            n += 1
    finally:
        master = None
        if pidfile.exists():
            master = int(pidfile.read_text())
            os.kill(master, signal.SIGTERM)
        else:
            server.terminate()
        _, stderr = server.communicate(timeout=60)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("leaks")) \
        == ["leaks.jsonl"], "workers share the report: no file per worker"
    windows = [json.loads(line) for line in report.read_text().splitlines()]
    by_pid = {}
    for w in windows:
        by_pid.setdefault(w["pid"], []).append(w)
    workers = {pid: ws for pid, ws in by_pid.items() if pid != master}
    assert len(workers) >= 3, (sorted(by_pid), master, stderr)
    flagged = 0
    for pid, ws in workers.items():
        assert [w["window"] for w in ws] == list(range(1, len(ws) + 1)), pid
        if any(s["verdict"] == "leak" and s["lineno"] == leak_line
               and s["filename"] == str(APP_DIR / "leaky_wsgi.py") for w in ws for s in w["sites"]):
            flagged += 1
    assert flagged >= 2, f"only {flagged} of {len(workers)} workers flagged the leak\n{stderr}"
