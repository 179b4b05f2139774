"""The leak watcher on real programs (tests/programs): each common kind of leak must be flagged
at the right line within 10 windows, and warm-up, churn and growing temporary batches must
never be flagged. Every program runs under `heaptrail run --interval 0.5 --report FILE`, all
at once, and the JSON Lines reports are scored."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROGRAMS = Path(__file__).resolve().parent / "programs"
LEAKS = sorted(p.name for p in PROGRAMS.glob("leak_*.py"))
NOT_LEAKS = sorted(p.name for p in PROGRAMS.glob("ok_*.py"))
SECONDS = 8
INTERVAL = 0.5


def marked_lines(program, *markers):
    text = (PROGRAMS / program).read_text().splitlines()
    return {i for i, line in enumerate(text, 1) if any(f"# {m}" in line for m in markers)}


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    out = tmp_path_factory.mktemp("watch")
    env = dict(os.environ, HEAPTRAIL_TEST_SECONDS=str(SECONDS))
    procs = {}
    for program in LEAKS + NOT_LEAKS + ["native_growth.py"]:
        report = out / f"{program}.jsonl"
        cmd = [sys.executable, "-m", "heaptrail", "run", "--interval", str(INTERVAL),
               "--report", str(report), "--", sys.executable, str(PROGRAMS / program)]
        procs[program] = (subprocess.Popen(cmd, cwd=PROGRAMS, env=env, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True), report)
    results = {}
    for program, (proc, report) in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{program} failed:\n{stderr}"
        windows = [json.loads(line) for line in report.read_text().splitlines()]
        results[program] = (windows, stderr)
    return results


def flagged(windows, program, verdict="leak"):
    """{line: first window flagged} for sites in `program` with `verdict`."""
    found = {}
    for w in windows:
        for site in w["sites"]:
            if site["verdict"] == verdict and site["filename"] == str(PROGRAMS / program):
                found.setdefault(site["lineno"], w["window"])
    return found


def test_report_schema(reports):
    windows, _ = reports[LEAKS[0]]
    assert len(windows) >= 10
    w = windows[-1]
    for field in ("schema", "time", "pid", "window", "rss_bytes", "traced_bytes",
                  "traced_peak_bytes", "process_verdict", "sites"):
        assert field in w, field
    assert w["schema"] == "heaptrail.watch/1"
    site = w["sites"][0]
    for field in ("filename", "lineno", "traceback", "size", "size_diff", "count", "count_diff",
                  "bytes_per_second", "verdict", "confidence"):
        assert field in site, field
    assert all(len(f) == 2 for f in site["traceback"])
    assert [x["window"] for x in windows] == list(range(1, len(windows) + 1))


@pytest.mark.parametrize("program", LEAKS)
def test_leak_is_flagged_at_its_line_within_10_windows(reports, program):
    windows, stderr = reports[program]
    found = flagged(windows, program)
    expected = marked_lines(program, "LEAK")
    allowed = expected | marked_lines(program, "ALSO")
    hits = {line: w for line, w in found.items() if line in expected}
    assert hits, f"{program}: leak not flagged at {expected}; flagged {found}\n{stderr}"
    assert min(hits.values()) <= 10, f"{program}: flagged only at window {min(hits.values())}"
    innocent = {line: w for line, w in found.items() if line not in allowed}
    assert not innocent, f"{program}: innocent lines flagged as leaks: {innocent}"
    assert "leak at" in stderr.lower()  # logged when found (and in the exit summary if still live)


@pytest.mark.parametrize("program", NOT_LEAKS)
def test_no_leak_is_reported(reports, program):
    windows, stderr = reports[program]
    leaks = [(w["window"], s["filename"], s["lineno"]) for w in windows for s in w["sites"]
             if s["verdict"] == "leak"]
    assert not leaks, f"{program}: flagged {leaks}\n{stderr}"
    assert "no leak found" in stderr


def test_native_growth_is_named_as_such(reports):
    windows, stderr = reports["native_growth.py"]
    verdicts = [w["process_verdict"] for w in windows]
    assert "native-growth" in verdicts[-6:], verdicts
    assert not flagged(windows, "native_growth.py"), "the Python side does not leak"
