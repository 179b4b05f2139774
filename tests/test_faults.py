"""Faults heaptrail must survive inside the process it watches (issue 9): signals and forks
in the middle of a window, a callback that blocks. The application carries on (or ends as it
would without heaptrail), and what was written before stays whole. (Disk full, a vanished
report directory and logrotate: test_report_file.py; a port in use and hostile clients:
test_prometheus.py; bad settings: test_cli.py.)"""

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import heaptrail

HEAPTRAIL = [sys.executable, "-m", "heaptrail"]

CHURN = textwrap.dedent("""
    import os, sys, threading, time
    kept = []
    def churn(n):
        rows = [{"id": i, "name": f"row-{i}"} for i in range(n)]
        kept.append(rows[0]["name"])
        return len(rows)
""")


def start(tmp_path, program, interval="0.02"):
    script = tmp_path / "app.py"
    script.write_text(CHURN + textwrap.dedent(program))
    report = tmp_path / "report.jsonl"
    process = subprocess.Popen([*HEAPTRAIL, "run", "--interval", interval, "--report",
                                str(report), "--", sys.executable, str(script)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process, report


def whole_windows(report, cut_short=0):
    """The windows of `report`. Up to `cut_short` lines may be the start of a window whose
    process died while writing it (os._exit in a forked child, a fatal signal): each must be
    alone on its line, never glued to the next window. Without such deaths, every line is
    whole, the last one included."""
    data = report.read_text()
    assert cut_short or data.endswith("\n"), "the last line of the report is whole"
    windows, partial = [], []
    for line in data.splitlines():
        try:
            windows.append(json.loads(line))
        except ValueError:
            partial.append(line)
    assert len(partial) <= cut_short, partial[:2]
    assert all(p.startswith('{"schema":"heaptrail.watch/2"') and p.count('{"schema"') == 1
               for p in partial), "a cut window never swallows the next one"
    assert windows and all(w["schema"] == "heaptrail.watch/2" for w in windows)
    return windows


def wait_for_windows(report, n, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if report.exists() and report.read_text().count("\n") >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} windows in {seconds} s")


def test_sigterm_and_sigint_in_the_middle_of_windows(tmp_path):
    program = """
        print("ready", flush=True)
        while True:
            churn(200)
    """
    for sig in (signal.SIGTERM, signal.SIGINT):
        process, report = start(tmp_path, program)
        assert process.stdout.readline().strip() == "ready"
        wait_for_windows(report, 20)
        # To the application (heaptrail run's child), as an orchestrator would send it.
        child = int(subprocess.run(["ps", "-o", "pid=", "--ppid", str(process.pid)],
                                   capture_output=True, text=True).stdout.split()[0])
        os.kill(child, sig)
        out, err = process.communicate(timeout=60)
        assert process.returncode != 0, err  # it ends as it would without heaptrail
        # SIGTERM's default action kills the process at once: a window being written then is
        # cut (and the next writer starts a new line); SIGINT ends through the program's
        # exception, and heaptrail waits for the window in flight.
        whole_windows(report, cut_short=1 if sig == signal.SIGTERM else 0)
        if sig == signal.SIGINT:  # it ends through its exception: heaptrail's summary follows
            assert "KeyboardInterrupt" in err and "heaptrail [pid" in err, err[-2000:]
        report.unlink()


def test_fork_from_another_thread_during_windows(tmp_path):
    program = """
        def forker():
            done = 0
            for _ in range(15):
                pid = os.fork()
                if pid == 0:
                    end = time.monotonic() + 0.2
                    while time.monotonic() < end:
                        churn(100)
                    os._exit(0)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    finished, status = os.waitpid(pid, os.WNOHANG)
                    if finished:
                        done += os.waitstatus_to_exitcode(status) == 0
                        break
                    time.sleep(0.01)
                else:
                    os.kill(pid, 9)
                    print("child hung", pid, flush=True)
            print("forks ok", done, flush=True)
        t = threading.Thread(target=forker)
        t.start()
        while t.is_alive():
            churn(200)
    """
    process, report = start(tmp_path, program)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-3000:]
    assert "forks ok 15" in out and "hung" not in out, out + err[-2000:]
    # A child ends with os._exit while its watcher may be writing: that window may be cut.
    windows = whole_windows(report, cut_short=15)
    assert len({w["pid"] for w in windows}) >= 2, "forked children watched too"


def test_a_callback_that_blocks_never_hangs_stop(caplog):
    release = threading.Event()
    entered = threading.Event()

    def blocking(report):
        entered.set()
        release.wait(30)

    watcher = heaptrail.watch(interval=0.05, callback=blocking)
    try:
        assert entered.wait(10), "a window ran the callback"
        with caplog.at_level(logging.WARNING, logger="heaptrail"):
            started = time.monotonic()
            watcher.stop(timeout=1)
            assert time.monotonic() - started < 5
        assert "did not end within 1 s" in caplog.text
        assert watcher.check_now(timeout=0.5) is None  # the blocked window holds the lock
    finally:
        release.set()
        if heaptrail.is_tracing():
            heaptrail.stop()
