"""The watch report on disk (heaptrail/_report_file.py): whole lines from many processes,
rotation past a size cap, logrotate's two styles, and faults (directory gone, disk full)
survived with one warning and the earlier content intact."""

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap

from heaptrail._report_file import ReportFile


def line(n, pad=60):
    return (json.dumps({"n": n, "pid": os.getpid(), "pad": "x" * pad}) + "\n").encode()


def whole_lines(path):
    """The lines of `path`, each checked to be one whole JSON object."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"{path} ends in a partial line"
    return [json.loads(text) for text in data.decode().splitlines()]


def test_rotation_keeps_the_newest_files_under_the_cap(tmp_path):
    path = tmp_path / "r.jsonl"
    report = ReportFile(path, max_bytes=1000, keep=2)
    for n in range(100):
        report.append(line(n))
    report.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["r.jsonl", "r.jsonl.1", "r.jsonl.2"]
    assert all(p.stat().st_size <= 1000 for p in tmp_path.iterdir())
    kept = whole_lines(tmp_path / "r.jsonl.2") + whole_lines(tmp_path / "r.jsonl.1") \
        + whole_lines(path)
    numbers = [x["n"] for x in kept]
    assert numbers == list(range(numbers[0], 100)), "the newest windows, in order, none lost"


def test_keep_zero_empties_the_file_instead(tmp_path):
    path = tmp_path / "r.jsonl"
    report = ReportFile(path, max_bytes=500, keep=0)
    for n in range(50):
        report.append(line(n))
    assert [p.name for p in tmp_path.iterdir()] == ["r.jsonl"]
    assert path.stat().st_size <= 500
    assert whole_lines(path)[-1]["n"] == 49


def test_logrotate_create_and_copytruncate(tmp_path):
    path = tmp_path / "r.jsonl"
    report = ReportFile(path)
    report.append(line(1))
    os.rename(path, tmp_path / "r.jsonl.old")        # logrotate `create`: moved away
    report.append(line(2))
    assert [x["n"] for x in whole_lines(tmp_path / "r.jsonl.old")] == [1]
    assert [x["n"] for x in whole_lines(path)] == [2]
    shutil.copy(path, tmp_path / "r.jsonl.copy")      # logrotate `copytruncate`
    os.truncate(path, 0)
    report.append(line(3))
    assert [x["n"] for x in whole_lines(path)] == [3]


def test_a_directory_that_disappears_is_one_warning_then_writing_resumes(tmp_path, caplog):
    directory = tmp_path / "reports"
    directory.mkdir()
    path = directory / "r.jsonl"
    report = ReportFile(path)
    report.append(line(1))
    shutil.rmtree(directory)
    with caplog.at_level(logging.INFO, logger="heaptrail"):
        for n in range(2, 6):
            report.append(line(n))        # never raises
        directory.mkdir()
        report.append(line(6))
    messages = [r.getMessage() for r in caplog.records if r.name == "heaptrail"]
    assert len([m for m in messages if "cannot write the report" in m]) == 1, messages
    assert any("writing the report" in m and "again" in m for m in messages), messages
    assert [x["n"] for x in whole_lines(path)] == [6]


def test_a_full_disk_never_leaves_half_a_line(tmp_path):
    """RLIMIT_FSIZE makes writes past the limit stop short, as a full disk does: the cut line
    is taken back, earlier lines stay, and heaptrail says so once."""
    path = tmp_path / "r.jsonl"
    program = textwrap.dedent(f"""
        import json, logging, resource, signal, sys
        sys.path[:0] = {sys.path!r}
        from heaptrail._report_file import ReportFile
        logging.basicConfig(stream=sys.stdout, format="%(levelname)s %(message)s")
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
        report = ReportFile({str(path)!r})
        for n in range(40):
            report.append((json.dumps({{"n": n, "pad": "x" * 70}}) + "\\n").encode())
        print("done")
    """)
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "done" in out.stdout, out.stdout + out.stderr
    assert out.stdout.count("cannot write the report") == 1, out.stdout
    kept = whole_lines(path)
    assert [x["n"] for x in kept] == list(range(len(kept))) and 5 <= len(kept) < 40


def test_a_window_cut_short_by_a_dying_process_does_not_swallow_the_next(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(line(1) + line(2)[:30])  # a process died in the middle of its write
    report = ReportFile(path)
    report.append(line(3))
    lines = path.read_bytes().decode().splitlines()
    assert json.loads(lines[0])["n"] == 1 and json.loads(lines[2])["n"] == 3
    assert lines[1] == line(2)[:30].decode()


def test_processes_sharing_one_report_rotate_it_once_and_never_interleave(tmp_path):
    path = tmp_path / "r.jsonl"
    program = textwrap.dedent(f"""
        import json, os, sys
        sys.path[:0] = {sys.path!r}
        from heaptrail._report_file import ReportFile
        report = ReportFile({str(path)!r}, max_bytes=20000, keep=3)
        for n in range(300):
            report.append((json.dumps({{"n": n, "pid": os.getpid(), "pad": "y" * 200}})
                           + "\\n").encode())
    """)
    writers = [subprocess.Popen([sys.executable, "-c", program]) for _ in range(4)]
    assert all(w.wait(timeout=120) == 0 for w in writers)
    files = sorted(tmp_path.iterdir())
    assert {p.name for p in files} <= {"r.jsonl", "r.jsonl.1", "r.jsonl.2", "r.jsonl.3"}
    assert len(files) == 4, "rotated, the oldest dropped"
    for p in files:
        lines = whole_lines(p)   # every line one whole window: no interleaving
        assert p.stat().st_size <= 20000 + 4 * 300  # each writer may add one line late
        per_pid = {}
        for x in lines:
            per_pid.setdefault(x["pid"], []).append(x["n"])
        for numbers in per_pid.values():
            assert numbers == sorted(numbers)
