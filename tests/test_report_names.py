"""The watcher names the function of each site it reports, wherever a site is shown.

A real leaking program (tests/programs/leak_unbounded_cache.py, its `# LEAK` line in
`handle`) runs under `heaptrail run`; the function the snapshot recorded for the line must
reach the report file (an optional `function` field beside `filename`/`lineno`), the log line
and exit summary, `heaptrail report` (the fleet summary, text and JSON), both HTML pages and
the Prometheus labels. A report written before the field existed must still load and render.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from heaptrail import _native
from heaptrail._prometheus import render_metrics

PROGRAMS = Path(__file__).resolve().parent / "programs"
PROGRAM = PROGRAMS / "leak_unbounded_cache.py"
FUNCTION = "handle"


def heaptrail(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "heaptrail", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=PROGRAMS)


def leak_line():
    return next(i for i, line in enumerate(PROGRAM.read_text().splitlines(), 1)
                if "# LEAK" in line)


def without_names(value):
    """`value` (a window, decoded) as heaptrail wrote it before it recorded functions."""
    if isinstance(value, dict):
        return {k: without_names(v) for k, v in value.items() if k != "function"}
    if isinstance(value, list):
        return [without_names(v) for v in value]
    return value


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(report path, stderr of `heaptrail run`, windows) of the leaking program."""
    out = tmp_path_factory.mktemp("names")
    report = out / "reports" / "leaks.jsonl"
    report.parent.mkdir()
    env = dict(os.environ, HEAPTRAIL_TEST_SECONDS="10")
    proc = heaptrail("run", "--interval", "0.5", "--report", report, "--", sys.executable,
                     PROGRAM, env=env)
    assert proc.returncode == 0, proc.stderr
    windows = [json.loads(line) for line in report.read_text().splitlines()]
    assert any(w["leaks"] for w in windows), proc.stderr
    return report, proc.stderr, windows


def last_leak(windows):
    window = next(w for w in reversed(windows) if w["leaks"])
    return window, window["leaks"][0]


def test_the_report_names_the_leaking_function(run):
    _, _, windows = run
    window, leak = last_leak(windows)
    line = (str(PROGRAM), leak_line())
    assert (leak["site"]["filename"], leak["site"]["lineno"]) == line
    assert leak["site"]["function"] == FUNCTION, leak["site"]
    assert leak["sites"][0]["function"] == FUNCTION
    row = next(s for s in window["sites"] if (s["filename"], s["lineno"]) == line)
    assert row["function"] == FUNCTION and row["verdict"] == "leak"
    # Every site of the program's own code is named; the field is a plain string.
    for s in window["sites"]:
        if s["filename"].startswith(str(PROGRAMS)):
            assert isinstance(s.get("function"), str) and s["function"], s
    # Written through the schema's owner: read back, the same window.
    assert json.loads(_native._encode_window(window)) == window


def test_the_log_line_and_exit_summary_name_it(run):
    _, stderr, _ = run
    site = f"{PROGRAM}:{leak_line()} in {FUNCTION}"
    assert f"heaptrail: leak at {site}: " in stderr, stderr          # when it became a leak
    assert re.search(rf"heaptrail \[pid \d+\]: LEAK at {re.escape(site)}: ", stderr), stderr


def test_heaptrail_report_names_it(run):
    report, _, _ = run
    text = heaptrail("report", report)
    assert text.returncode == 0, text.stderr
    assert f"#1 {PROGRAM}:{leak_line()} in {FUNCTION}: unbounded-cache\n" in text.stdout, \
        text.stdout
    doc = json.loads(heaptrail("report", "--json", report.parent).stdout)
    assert doc["schema"] == _native.FLEET_SCHEMA
    site = doc["leaks"][0]["site"]
    assert site == {"filename": str(PROGRAM), "lineno": leak_line(), "function": FUNCTION}


def test_the_pages_name_it(run, tmp_path):
    report, _, _ = run
    named = f"<b>{PROGRAM.name}:{leak_line()}</b> <span class=\"fn\">{FUNCTION}</span>"
    page = tmp_path / "report.html"
    out = heaptrail("html", report, "-o", page)
    assert out.returncode == 0, out.stderr
    assert named in page.read_text()
    fleet = tmp_path / "fleet.html"
    out = heaptrail("html", report.parent, "-o", fleet)
    assert out.returncode == 0, out.stderr
    assert "<h2>Leaks</h2>" in fleet.read_text() and named in fleet.read_text()


def test_prometheus_labels_name_it_without_more_series(run):
    _, _, windows = run
    window, _ = last_leak(windows)
    text = render_metrics(window)
    site_series = [line for line in text.splitlines() if line.startswith("heaptrail_site_bytes{")]
    assert len(site_series) == len(window["sites"]), "one series per site, as before"
    line = f'filename="{PROGRAM}",lineno="{leak_line()}",function="{FUNCTION}",verdict="leak"'
    assert any(line in s for s in site_series), site_series
    leak_series = [s for s in text.splitlines() if s.startswith("heaptrail_leak_bytes{")]
    assert len(leak_series) == len(window["leaks"])
    assert f'function="{FUNCTION}"' in leak_series[0]


def test_a_report_written_before_names_loads_and_renders(run, tmp_path):
    """The same run as an older heaptrail wrote it (no `function` anywhere): the writer's type
    accepts it, `heaptrail report` and both pages show the lines alone."""
    _, _, windows = run
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    old = old_dir / "leaks.jsonl"
    lines = [without_names(w) for w in windows]
    assert "function" not in json.dumps(lines)
    for w in lines:
        assert json.loads(_native._encode_window(w)) == w
    old.write_text("".join(json.dumps(w) + "\n" for w in lines))
    text = heaptrail("report", old)
    assert text.returncode == 0 and text.stderr == "", text.stderr
    assert f"#1 {PROGRAM}:{leak_line()} unbounded-cache\n" in text.stdout, text.stdout
    doc = json.loads(heaptrail("report", "--json", old).stdout)
    assert doc["leaks"][0]["site"] == {"filename": str(PROGRAM), "lineno": leak_line()}
    for target in (old, old_dir):
        page = tmp_path / f"{target.name}.html"
        out = heaptrail("html", target, "-o", page)
        assert out.returncode == 0 and "warning" not in out.stderr, out.stderr
        html = page.read_text()
        assert f"<b>{PROGRAM.name}:{leak_line()}</b> <span class=\"dir\">" in html
        assert "class=\"fn\"" not in html
