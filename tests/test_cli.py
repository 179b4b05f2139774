"""`heaptrail run` on real programs: the bundled leaky service, forked workers, bad input."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVICE = ROOT / "examples" / "leaky_service.py"
HEAPTRAIL = [sys.executable, "-m", "heaptrail"]


def run(*args, timeout=120):
    return subprocess.run([*HEAPTRAIL, *args], capture_output=True, text=True, timeout=timeout)


def test_reports_the_leaking_line_of_the_example_service():
    out = run("run", "--warmup", "1", "--top", "3", "--", sys.executable, str(SERVICE), "--seconds", "4")
    assert out.returncode == 0, out.stderr
    report = out.stderr
    ranked = re.findall(r"#(\d) (\S+):(\d+): size=", report)
    assert ranked, report
    first = ranked[0]
    assert first[1] == str(SERVICE) and first[2] == "37", report  # body = json.dumps(...)
    flagged = {(name, int(line)) for _, name, line in ranked}
    # Neither the warm-up catalogue nor the per-request churn is reported.
    assert (str(SERVICE), 29) not in flagged and (str(SERVICE), 36) not in flagged, report
    assert "/s]" in report and "traceback of #1" in report


def test_report_file_and_forked_workers(tmp_path):
    script = tmp_path / "prefork.py"
    script.write_text(
        "import os, time\n"
        "leak = []\n"
        "pids = []\n"
        "for _ in range(2):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        time.sleep(0.3)\n"
        "        for i in range(20000):\n"
        "            leak.append(str(i) * 10)  # worker leak\n"
        "        raise SystemExit(0)\n"
        "    pids.append(pid)\n"
        "for pid in pids:\n"
        "    os.waitpid(pid, 0)\n")
    report = tmp_path / "report.txt"
    out = run("run", "--warmup", "0.1", "--report", str(report), "--", sys.executable, str(script))
    assert out.returncode == 0, out.stderr
    worker_reports = sorted(tmp_path.glob("report.txt.*"))
    assert len(worker_reports) == 2, list(tmp_path.iterdir())
    for path in worker_reports:
        text = path.read_text()
        assert f"prefork.py:9: size=" in text, text
    assert report.exists()


def test_missing_command_and_bad_options():
    assert run("run").returncode == 2
    out = run("run", "--", "no-such-command-heaptrail")
    assert out.returncode == 127 and "command not found" in out.stderr
    out = run("run", "--nframe", "0", "--", sys.executable, "-c", "pass")
    assert out.returncode == 2 and "1..65535" in out.stderr
    out = run("--help")
    assert out.returncode == 0 and "run" in out.stdout


def test_bad_environment_settings_do_not_break_the_program(tmp_path):
    env = dict(os.environ, HEAPTRAIL_NFRAME="lots",
               PYTHONPATH=str(Path(__import__("heaptrail").__file__).parent / "_bootstrap"))
    out = subprocess.run([sys.executable, "-c", "print('still runs')"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "still runs" in out.stdout
    assert "HEAPTRAIL_NFRAME='lots' is not a valid int" in out.stderr
