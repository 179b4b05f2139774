"""`heaptrail report` and `heaptrail diff` on snapshots of a real program: the lines are
tracemalloc's own format (checked against the stdlib's Statistic/StatisticDiff on the same
snapshot), filters and keys behave as documented, and bad input gives a one-line error with
exit code 2."""

import json
import os
import subprocess
import sys
import textwrap
import tracemalloc

import pytest

import heaptrail

PROGRAM = textwrap.dedent("""\
    import sys
    import heaptrail
    heaptrail.start(10)
    keep = []
    def big():
        keep.append([bytearray(1000) for _ in range(500)])  # BIG
    def small():
        keep.append([str(i) * 10 for i in range(2000)])  # SMALL
    big()
    heaptrail.take_snapshot().dump(sys.argv[1])
    small()
    big()
    heaptrail.take_snapshot().dump(sys.argv[2])
""")


def line_of(marker):
    return next(i for i, line in enumerate(PROGRAM.splitlines(), 1) if f"# {marker}" in line)


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    program = d / "prog.py"
    program.write_text(PROGRAM)
    old, new = d / "old.heaptrail", d / "new.heaptrail"
    subprocess.run([sys.executable, str(program), str(old), str(new)], check=True)
    return str(program), str(old), str(new)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "heaptrail", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def assert_clean_failure(result, *words):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("heaptrail "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_report_lines_are_tracemallocs_format(snapshots):
    program, _, new = snapshots
    out = cli("report", "--limit", "3", new)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    # The same snapshot through the standard library prints the same lines.
    stdlib = heaptrail.Snapshot.load(new).to_tracemalloc()
    expected = [str(s) for s in stdlib.statistics("lineno")[:3]]
    assert lines[:3] == expected
    assert lines[0].startswith(f"{program}:{line_of('BIG')}: size=")
    assert lines[1].startswith(f"{program}:{line_of('SMALL')}: size=")
    assert lines[-1].startswith("Total: ")


def test_report_json_filters_and_keys(snapshots):
    program, _, new = snapshots
    out = cli("report", "--json", "--limit", "0", "--include", program, new)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["schema"] == "heaptrail.report/1" and doc["key_type"] == "lineno"
    assert {tuple(s["traceback"][0]) for s in doc["stats"]} >= {
        (program, line_of("BIG")), (program, line_of("SMALL"))}
    assert all(s["traceback"][0][0] == program for s in doc["stats"])
    assert doc["stats"][0]["size"] >= 1000 * 1000 and doc["stats"][0]["count"] >= 1000
    snap = heaptrail.Snapshot.load(new).filter_traces([heaptrail.Filter(True, program)])
    assert doc["total_size"] == sum(t.size for t in snap.traces)

    excluded = json.loads(cli("report", "--json", "--exclude", program, new).stdout)
    assert all(s["traceback"][0][0] != program for s in excluded["stats"])

    by_tb = cli("report", "--key", "traceback", "--limit", "1", new)
    assert by_tb.returncode == 0, by_tb.stderr
    first, frames = by_tb.stdout.splitlines()[0], by_tb.stdout.splitlines()[1:4]
    assert first.startswith("#1 size=") and ", count=" in first
    assert frames[0].strip() == f"{program}:{line_of('BIG')}"  # innermost first

    by_file = json.loads(cli("report", "--json", "--key", "filename", "--cumulative", new).stdout)
    assert by_file["stats"][0]["traceback"] == [[program, 0]]


def test_diff_biggest_growers_first(snapshots):
    program, old, new = snapshots
    out = cli("diff", old, new, "--include", program)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    stdlib_new = heaptrail.Snapshot.load(new).to_tracemalloc()
    stdlib_old = heaptrail.Snapshot.load(old).to_tracemalloc()
    expected = {str(d) for d in stdlib_new.compare_to(stdlib_old, "lineno")
                if d.traceback[0].filename == program and d.size_diff}
    assert set(lines[:-1]) == expected
    # Both sites grew by about 500 KB / 180 KB: BIG first.
    assert lines[0].startswith(f"{program}:{line_of('BIG')}: size=")
    assert "(+" in lines[0]
    doc = json.loads(cli("diff", "--json", old, new).stdout)
    assert doc["schema"] == "heaptrail.diff/1"
    diffs = [s["size_diff"] for s in doc["stats"]]
    assert diffs == sorted(diffs, reverse=True)
    assert doc["new_total_size"] > doc["old_total_size"]


def test_tracemalloc_dumps_need_trust_pickle(tmp_path):
    tracemalloc.start()
    keep = [bytearray(5000) for _ in range(100)]  # noqa: F841  (live while snapshotting)
    dump = tmp_path / "stdlib.pickle"
    tracemalloc.take_snapshot().dump(str(dump))
    tracemalloc.stop()
    assert_clean_failure(cli("report", dump), "pickle", "--trust-pickle")
    out = cli("report", "--trust-pickle", "--limit", "1", dump)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"{__file__}:")


def test_bad_input_is_a_clean_error(tmp_path, snapshots):
    _, old, new = snapshots
    data = open(new, "rb").read()
    truncated = tmp_path / "truncated.heaptrail"
    truncated.write_bytes(data[: len(data) // 2])
    corrupt = tmp_path / "corrupt.heaptrail"
    corrupt.write_bytes(data[:60] + bytes(b ^ 0x5A for b in data[60:120]) + data[120:])
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    report = tmp_path / "watch.jsonl"
    report.write_text('{"schema": "heaptrail.watch/1", "window": 1}\n')
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert_clean_failure(cli("report", truncated), str(truncated))
    assert_clean_failure(cli("report", corrupt), str(corrupt))
    assert_clean_failure(cli("report", text), "not a heaptrail snapshot")
    assert_clean_failure(cli("report", empty), "not a heaptrail snapshot")
    # A watcher report is read as one (the fleet summary, tests/test_fleet.py): this one is
    # broken. A directory is read as watcher reports: each bad file is a warning, then one
    # error, since nothing could be read.
    assert_clean_failure(cli("report", report), "not a heaptrail watcher report")
    assert_clean_failure(cli("report", tmp_path / "missing"), "cannot read")
    directory = cli("report", tmp_path)
    assert directory.returncode == 2 and "Traceback" not in directory.stderr
    assert directory.stderr.splitlines()[-1].startswith(
        "heaptrail report: no window could be read from "), directory.stderr
    assert_clean_failure(cli("diff", old, truncated), str(truncated))
    assert_clean_failure(cli("report", "--limit", "-1", new), "--limit")
    assert_clean_failure(cli("report", "--key", "traceback", "--cumulative", new), "--cumulative")
    usage = cli("report", "--key", "function", new)
    assert usage.returncode == 2 and "invalid choice" in usage.stderr


def test_help_explains_every_command():
    out = cli("--help")
    assert out.returncode == 0
    for command in ("run", "report", "diff"):
        assert command in out.stdout
    for command in ("report", "diff"):
        text = cli(command, "--help").stdout
        for option in ("--key", "--cumulative", "--limit", "--include", "--exclude", "--json",
                       "--trust-pickle"):
            assert option in text, (command, option)
    assert os.EX_OK == 0
