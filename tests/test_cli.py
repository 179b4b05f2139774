"""`heaptrail run` on real programs: the bundled leaky service, forked workers, bad input."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import heaptrail


ROOT = Path(__file__).resolve().parent.parent
SERVICE = ROOT / "examples" / "leaky_service.py"
HEAPTRAIL = [sys.executable, "-m", "heaptrail"]


def run(*args, timeout=120):
    return subprocess.run([*HEAPTRAIL, *args], capture_output=True, text=True, timeout=timeout)


def test_reports_the_leaking_line_of_the_example_service(tmp_path):
    report = tmp_path / "leaks.jsonl"
    out = run("run", "--interval", "0.5", "--report", str(report), "--",
              sys.executable, str(SERVICE), "--seconds", "8")
    assert out.returncode == 0, out.stderr
    summary = out.stderr
    leaks = set(re.findall(r"LEAK at (\S+):(\d+) in (\S+): ", summary))
    # body = json.dumps(...) in render_order: the cached responses
    assert (str(SERVICE), "37", "render_order") in leaks, summary
    assert "held by __main__._rendered_orders" in summary
    assert "pattern unbounded-cache" in summary
    assert "/s (confidence" in summary
    windows = [json.loads(line) for line in report.read_text().splitlines()]
    # The process verdict needs as many windows as a site's: judge the last few windows.
    assert "python-growth" in [w["process_verdict"] for w in windows[-4:]], \
        [w["process_verdict"] for w in windows]
    # Neither the warm-up catalogue nor the per-request churn is ever flagged.
    flagged = {s["lineno"] for w in windows for s in w["sites"]
               if s["verdict"] in ("leak", "suspect") and s["filename"] == str(SERVICE)}
    assert not flagged & {29, 30, 36}, flagged


def test_report_file_and_forked_workers(tmp_path):
    script = tmp_path / "prefork.py"
    script.write_text(
        "import os, time\n"
        "leak = []\n"
        "pids = []\n"
        "for _ in range(2):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        deadline = time.monotonic() + 4\n"
        "        while time.monotonic() < deadline:\n"
        "            leak.extend(str(i) * 10 for i in range(500))  # worker leak\n"
        "            time.sleep(0.01)\n"
        "        raise SystemExit(0)\n"
        "    pids.append(pid)\n"
        "for pid in pids:\n"
        "    os.waitpid(pid, 0)\n")
    report = tmp_path / "report.jsonl"
    out = run("run", "--interval", "0.25", "--report", str(report), "--", sys.executable, str(script))
    assert out.returncode == 0, out.stderr
    # Workers append to the parent's report (whole lines, each with its pid): no file per
    # worker, so servers that recycle workers do not leave one per worker ever started.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prefork.py", "report.jsonl"]
    windows = [json.loads(line) for line in report.read_text().splitlines()]
    by_pid = {}
    for w in windows:
        by_pid.setdefault(w["pid"], []).append(w)
    assert len(by_pid) == 3, sorted(by_pid)  # the parent and its two workers
    leaking = [pid for pid, ws in by_pid.items()
               if any(s["verdict"] == "leak" and s["lineno"] == 9 and s["filename"] == str(script)
                      for w in ws for s in w["sites"])]
    assert len(leaking) == 2, {pid: len(ws) for pid, ws in by_pid.items()}
    for ws in by_pid.values():
        assert [w["window"] for w in ws] == list(range(1, len(ws) + 1))


def test_missing_command_and_bad_options():
    assert run("run").returncode == 2
    out = run("run", "--", "no-such-command-heaptrail")
    assert out.returncode == 127 and "command not found" in out.stderr
    out = run("run", "--nframe", "0", "--", sys.executable, "-c", "pass")
    assert out.returncode == 2 and "1..65535" in out.stderr
    out = run("run", "--interval", "0", "--", sys.executable, "-c", "pass")
    assert out.returncode == 2 and "must be > 0" in out.stderr
    out = run("run", "--prometheus", "localhost:http", "--", sys.executable, "-c", "pass")
    assert out.returncode == 2 and "HOST:PORT" in out.stderr
    out = run("--help")
    assert out.returncode == 0 and "run" in out.stdout


def test_bad_environment_settings_do_not_break_the_program(tmp_path):
    env = dict(os.environ, HEAPTRAIL_NFRAME="lots",
               PYTHONPATH=str(Path(__import__("heaptrail").__file__).parent / "_inject"
                              / "bootstrap"))
    out = subprocess.run([sys.executable, "-c", "print('still runs')"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "still runs" in out.stdout
    assert out.stderr.count("HEAPTRAIL_NFRAME='lots' is invalid (it is not a number); using "
                            "the default HEAPTRAIL_NFRAME=16") == 1, out.stderr


def test_run_refuses_bad_settings_before_starting_anything(tmp_path):
    marker = tmp_path / "started"
    program = [sys.executable, "-c", f"open({str(marker)!r}, 'w')"]
    cases = [({"HEAPTRAIL_INTERVAL": "abc"}, [], "HEAPTRAIL_INTERVAL='abc' is invalid"),
             ({"HEAPTRAIL_TOP": "0"}, [], "HEAPTRAIL_TOP='0' is invalid (top must be >= 1"),
             ({}, ["--report", str(tmp_path / "missing" / "r.jsonl")], "cannot write the report"),
             ({"HEAPTRAIL_REPORT": str(tmp_path / "missing" / "r.jsonl")}, [],
              "cannot write the report")]
    for env, options, message in cases:
        out = subprocess.run([*HEAPTRAIL, "run", *options, "--", *program],
                             env=dict(os.environ, **env), capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 2 and message in out.stderr, (env, options, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert not marker.exists(), "the command must not start"
    # A good variable is honoured when its option is not given; the option wins over it.
    out = subprocess.run([*HEAPTRAIL, "run", "--", sys.executable, "-c",
                          "import heaptrail._child as c; print(c._state['settings'].interval)"],
                         env=dict(os.environ, HEAPTRAIL_INTERVAL="0.25"), capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.splitlines()[0] == "0.25", out.stdout + out.stderr
    out = subprocess.run([*HEAPTRAIL, "run", "--interval", "7", "--", sys.executable, "-c",
                          "import heaptrail._child as c; print(c._state['settings'].interval)"],
                         env=dict(os.environ, HEAPTRAIL_INTERVAL="0.25"), capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.splitlines()[0] == "7.0", out.stdout + out.stderr


def test_version_is_the_packages_one():
    from importlib.metadata import version

    assert heaptrail.__version__ == version("heaptrail")
    out = subprocess.run([sys.executable, "-m", "heaptrail", "--version"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"heaptrail {version('heaptrail')}"
