"""`heaptrail export` on a real traced program: pprof read back by `go tool pprof`, folded
stacks, JSON (heaptrail.snapshot/1), stdlib tracemalloc dumps, and every kind of bad input."""

import json
import os
import pty
import re
import subprocess
import sys
import textwrap

import pytest

import heaptrail
from tools import require

HEAPTRAIL = [sys.executable, "-m", "heaptrail"]

# Known amounts at known lines: 20 x 100,000-byte bytearrays in a function, 10 x 50,000-byte
# bytes objects in a method. Each block costs its payload plus a small object header.
PROGRAM = textwrap.dedent("""\
    import sys
    import heaptrail

    heaptrail.start(25)


    def make_blobs():
        return [bytearray(100_000) for _ in range(20)]  # BLOBS


    class Store:
        def fill(self):
            self.items = [bytes(50_000) for _ in range(10)]  # ITEMS


    keep = make_blobs()  # CALL_BLOBS
    store = Store()
    store.fill()  # CALL_FILL
    heaptrail.take_snapshot().dump(sys.argv[1])
    """)


def line_of(marker):
    return next(i for i, line in enumerate(PROGRAM.splitlines(), 1) if f"# {marker}" in line)


BLOBS, ITEMS = line_of("BLOBS"), line_of("ITEMS")
CALL_BLOBS, CALL_FILL = line_of("CALL_BLOBS"), line_of("CALL_FILL")
# The functions that allocate, as the snapshot records them: on 3.11 a list comprehension is a
# function of its own (`make_blobs.<locals>.<listcomp>`), since 3.12 it is part of its function.
IN_LISTCOMP = ".<locals>.<listcomp>" if sys.version_info < (3, 12) else ""
BLOBS_FN, FILL_FN = "make_blobs" + IN_LISTCOMP, "Store.fill" + IN_LISTCOMP


def run(*args, timeout=120, **kwargs):
    return subprocess.run([*HEAPTRAIL, *map(str, args)], capture_output=True, timeout=timeout,
                          **kwargs)


def one_line_error(out):
    """The command failed with exactly one line on stderr, from heaptrail export, no traceback."""
    err = out.stderr.decode()
    assert out.returncode != 0, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("heaptrail export: "), err
    return lines[0]


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """(program path, snapshot path, loaded snapshot, {line: (size, count)} of the program)."""
    d = tmp_path_factory.mktemp("program")
    prog = d / "prog.py"
    prog.write_text(PROGRAM)
    snap = d / "prog.ht"
    subprocess.run([sys.executable, str(prog), str(snap)], check=True, timeout=120)
    snapshot = heaptrail.Snapshot.load(str(snap))
    by_line = {}
    for stat in snapshot.statistics("lineno"):
        frame = stat.traceback[0]
        if frame.filename == str(prog):
            by_line[frame.lineno] = (stat.size, stat.count)
    # The program did allocate what it says, where it says.
    assert 20 * 100_000 <= by_line[BLOBS][0] < 20 * 100_000 + 20 * 200 + 1000, by_line
    assert 10 * 50_000 <= by_line[ITEMS][0] < 10 * 50_000 + 10 * 200 + 1000, by_line
    return prog, snap, snapshot, by_line


@pytest.fixture
def go_env(tmp_path):
    go = require("go", package="golang-go")
    env = dict(os.environ, HOME=str(tmp_path / "home"), GOCACHE=str(tmp_path / "gocache"),
               GOFLAGS="", GOPATH=str(tmp_path / "gopath"))
    return go, env


def pprof(go_env, profile, *options):
    go, env = go_env
    out = subprocess.run([go, "tool", "pprof", "-unit=B", "-nodefraction=0", "-nodecount=10000",
                          *options, str(profile)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def flat_rows(text):
    """`name -> flat bytes` from `go tool pprof -top` output."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"\s*(\d+)B\s+[\d.]+%\s+[\d.]+%\s+(\d+)B\s+[\d.]+%\s+(.+)$", line)
        if m:
            rows[m.group(3).strip()] = int(m.group(1))
    return rows


# ---- pprof --------------------------------------------------------------------------------


def test_pprof_read_by_go_tool_pprof(traced, go_env, tmp_path):
    prog, snap, snapshot, by_line = traced
    out = tmp_path / "heap.pb.gz"
    result = run("export", snap, "--format", "pprof", "-o", out)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:2] == b"\x1f\x8b"

    # Functions: named as the snapshot recorded them, with the exact live bytes of their lines.
    top = pprof(go_env, out, "-top", "-sample_index=inuse_space")
    assert "Type: inuse_space" in top
    assert f"of {snapshot._table.total_size}B total" in top, top
    rows = flat_rows(top)
    assert rows[f"prog.{BLOBS_FN}"] == by_line[BLOBS][0], top
    assert rows[f"prog.{FILL_FN}"] == by_line[ITEMS][0], top

    # Lines: file:line of each allocation site.
    lines = flat_rows(pprof(go_env, out, "-top", "-lines", "-sample_index=inuse_space"))
    assert lines[f"prog.{BLOBS_FN} {prog}:{BLOBS}"] == by_line[BLOBS][0], lines
    assert lines[f"prog.{FILL_FN} {prog}:{ITEMS}"] == by_line[ITEMS][0], lines

    # Object counts, and alloc_* equal to inuse_* (a snapshot holds live blocks only).
    objects = flat_rows(pprof(go_env, out, "-top", "-lines", "-sample_index=inuse_objects"))
    objects = {k: int(v) for k, v in objects.items()}
    assert objects[f"prog.{BLOBS_FN} {prog}:{BLOBS}"] == by_line[BLOBS][1]
    alloc = flat_rows(pprof(go_env, out, "-top", "-lines", "-sample_index=alloc_space"))
    assert alloc == lines

    # The call stack: make_blobs is called from the module's line CALL_BLOBS.
    traces = pprof(go_env, out, "-traces", "-lines")
    block = next(b for b in traces.split("-----------+") if f"prog.py:{BLOBS}" in b)
    assert f"prog.<module> {prog}:{CALL_BLOBS}" in block, block


def test_pprof_without_source_names_unrecorded_frames_by_file_and_line(traced, go_env, tmp_path):
    _, snap, snapshot, by_line = traced
    # The names the snapshot recorded need no source.
    out = tmp_path / "heap.pb.gz"
    assert run("export", snap, "-o", out, "--no-source").returncode == 0
    rows = flat_rows(pprof(go_env, out, "-top"))
    assert rows[f"prog.{BLOBS_FN}"] == by_line[BLOBS][0], rows
    # A snapshot without names (one that went through the stdlib's format) gets `file:line`.
    bare = tmp_path / "bare.ht"
    heaptrail.Snapshot.from_tracemalloc(snapshot.to_tracemalloc()).dump(str(bare))
    assert run("export", bare, "-o", out, "--no-source").returncode == 0
    rows = flat_rows(pprof(go_env, out, "-top"))
    assert rows[f"prog.py:{BLOBS}"] == by_line[BLOBS][0], rows
    assert not any(name.startswith("prog.") and ":" not in name for name in rows), rows


def test_pprof_refuses_a_terminal_but_goes_to_a_pipe(traced):
    _, snap, _, _ = traced
    main, secondary = pty.openpty()
    try:
        out = subprocess.run([*HEAPTRAIL, "export", str(snap), "-f", "pprof"],
                             stdout=secondary, stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(secondary)
        os.close(main)
    assert out.returncode == 2
    assert "binary" in one_line_error(out)
    piped = run("export", snap, "-f", "pprof", "-o", "-")
    assert piped.returncode == 0 and piped.stdout[:2] == b"\x1f\x8b"


# ---- collapsed ----------------------------------------------------------------------------


def parse_folded(text):
    rows = []
    for line in text.splitlines():
        stack, _, value = line.rpartition(" ")
        rows.append((stack.split(";"), int(value)))
    return rows


def test_collapsed_totals_and_known_stack(traced):
    prog, snap, snapshot, by_line = traced
    out = run("export", snap, "--format", "collapsed")
    assert out.returncode == 0, out.stderr
    rows = parse_folded(out.stdout.decode())
    assert sum(v for _, v in rows) == snapshot._table.total_size
    assert [v for _, v in rows] == sorted((v for _, v in rows), reverse=True)
    # Root first: the module's call line, then make_blobs' allocating line (3.11 adds the
    # list comprehension's own frame at the same line, named as such).
    blobs = [(s, v) for s, v in rows if s[-1] == f"{BLOBS_FN} (prog.py:{BLOBS})"]
    assert len(blobs) == 1, blobs
    stack, value = blobs[0]
    assert value == by_line[BLOBS][0]
    assert f"<module> (prog.py:{CALL_BLOBS})" in stack
    assert stack.index(f"<module> (prog.py:{CALL_BLOBS})") < stack.index(stack[-1])
    fill = [s for s, _ in rows if s[-1] == f"{FILL_FN} (prog.py:{ITEMS})"]
    assert fill and f"<module> (prog.py:{CALL_FILL})" in fill[0]

    blocks = parse_folded(run("export", snap, "-f", "collapsed", "--value", "blocks")
                          .stdout.decode())
    assert sum(v for _, v in blocks) == len(snapshot.traces)
    assert dict((";".join(s), v) for s, v in blocks)[";".join(stack)] == by_line[BLOBS][1]


# ---- json ---------------------------------------------------------------------------------

DOCUMENTED_TOP = {"schema", "generator", "traceback_limit", "sample_rate", "total_size",
                  "total_count", "stacks"}
DOCUMENTED_STACK = {"size", "count", "total_nframe", "frames"}
DOCUMENTED_FRAME = {"filename", "lineno", "function"}


def test_json_has_the_documented_schema(traced, tmp_path):
    prog, snap, snapshot, by_line = traced
    out = tmp_path / "snap.json"
    result = run("export", snap, "--format", "json", "-o", out)
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text())
    assert set(doc) == DOCUMENTED_TOP
    assert doc["schema"] == "heaptrail.snapshot/1"
    assert doc["generator"].startswith("heaptrail ")
    assert doc["traceback_limit"] == 25
    assert doc["sample_rate"] is None, "an exact snapshot"
    assert doc["total_size"] == snapshot._table.total_size
    assert doc["total_count"] == len(snapshot.traces)
    sizes = [s["size"] for s in doc["stacks"]]
    assert sizes == sorted(sizes, reverse=True)
    assert sum(sizes) == doc["total_size"]
    assert sum(s["count"] for s in doc["stacks"]) == doc["total_count"]
    for stack in doc["stacks"]:
        assert set(stack) == DOCUMENTED_STACK
        assert isinstance(stack["size"], int) and isinstance(stack["count"], int)
        assert stack["total_nframe"] is None or stack["total_nframe"] >= len(stack["frames"])
        assert len(stack["frames"]) <= doc["traceback_limit"]
        for frame in stack["frames"]:
            assert set(frame) == DOCUMENTED_FRAME
            assert isinstance(frame["filename"], str) and isinstance(frame["lineno"], int)
            assert frame["function"] is None or isinstance(frame["function"], str)
    # Most recent call first, with the function around each line.
    blobs = next(s for s in doc["stacks"]
                 if s["frames"] and s["frames"][0]["lineno"] == BLOBS
                 and s["frames"][0]["filename"] == str(prog))
    assert blobs["size"] == by_line[BLOBS][0] and blobs["count"] == by_line[BLOBS][1]
    assert blobs["frames"][0]["function"] == BLOBS_FN
    calls = [(f["lineno"], f["function"]) for f in blobs["frames"] if f["filename"] == str(prog)]
    assert calls[-1] == (CALL_BLOBS, "<module>")
    fill = next(s for s in doc["stacks"] if s["frames"] and s["frames"][0]["lineno"] == ITEMS)
    assert fill["frames"][0]["function"] == FILL_FN

    # `-o -` is the same document on stdout.
    assert json.loads(run("export", snap, "-f", "json", "-o", "-").stdout) == doc


# ---- stdlib tracemalloc dumps -------------------------------------------------------------


def test_tracemalloc_pickle_needs_trust_pickle(tmp_path):
    dump = tmp_path / "stdlib.pickle"
    code = ("import tracemalloc, sys\n"
            "tracemalloc.start(5)\n"
            "keep = [bytearray(30_000) for _ in range(7)]\n"
            "tracemalloc.take_snapshot().dump(sys.argv[1])\n")
    subprocess.run([sys.executable, "-c", code, str(dump)], check=True, timeout=60)

    refused = run("export", dump, "-f", "collapsed")
    assert refused.returncode == 2
    assert "--trust-pickle" in one_line_error(refused)

    out = run("export", dump, "-f", "collapsed", "--trust-pickle")
    assert out.returncode == 0, out.stderr
    import tracemalloc
    expected = sum(t.size for t in tracemalloc.Snapshot.load(str(dump)).traces)
    assert sum(v for _, v in parse_folded(out.stdout.decode())) == expected
    assert any(s[-1] == "<string>:3" for s, _ in parse_folded(out.stdout.decode()))


# ---- bad input and output -----------------------------------------------------------------


def test_corrupt_truncated_and_wrong_type_inputs(traced, tmp_path):
    _, snap, _, _ = traced
    data = snap.read_bytes()
    corrupt = tmp_path / "corrupt.ht"
    corrupt.write_bytes(data[:60] + bytes([data[60] ^ 0xFF]) + data[61:])
    truncated = tmp_path / "truncated.ht"
    truncated.write_bytes(data[: len(data) // 2])
    text = tmp_path / "notes.txt"
    text.write_text("not a snapshot\n")
    report = tmp_path / "report.jsonl"
    report.write_text('{"schema": "heaptrail.watch/1"}\n')
    empty = tmp_path / "empty.ht"
    empty.write_bytes(b"")
    cases = {
        corrupt: "corrupt",
        truncated: "truncated",
        text: "not a heaptrail snapshot",
        report: "watcher report",
        empty: "not a heaptrail snapshot",
        tmp_path: "is a directory",
        tmp_path / "missing.ht": "No such file",
    }
    for path, words in cases.items():
        out = tmp_path / "out.pb.gz"
        result = run("export", path, "-o", out)
        assert result.returncode == 2, (path, result.stderr)
        assert words in one_line_error(result), (path, result.stderr)
        assert not out.exists()


def test_bad_options_and_unwritable_outputs(traced, tmp_path):
    _, snap, _, _ = traced
    bad_format = run("export", snap, "--format", "svg", "-o", tmp_path / "x")
    assert bad_format.returncode == 2
    assert "pprof, collapsed or json" in one_line_error(bad_format)
    bad_value = run("export", snap, "-f", "collapsed", "--value", "lines")
    assert bad_value.returncode == 2 and "bytes or blocks" in one_line_error(bad_value)

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for target, words in [(tmp_path / "no" / "such" / "dir" / "out", "No such file"),
                          (blocker / "out", "Not a directory"),
                          (tmp_path, "is a directory")]:
        result = run("export", snap, "-f", "json", "-o", target)
        assert result.returncode != 0, target
        assert words in one_line_error(result), (target, result.stderr)

    # Writing over the input would destroy it.
    before = snap.read_bytes()
    same = run("export", snap, "-o", snap)
    assert same.returncode == 2 and "input" in one_line_error(same)
    assert snap.read_bytes() == before


def test_replaces_an_existing_output_atomically(traced, tmp_path):
    _, snap, _, _ = traced
    out = tmp_path / "stacks.txt"
    out.write_text("old\n")
    result = run("export", snap, "-f", "collapsed", "-o", out)
    assert result.returncode == 0 and result.stderr == b""
    assert out.read_text() != "old\n" and out.read_text().endswith("\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stacks.txt"]


def test_help_explains_formats_and_options():
    out = run("export", "--help")
    assert out.returncode == 0
    text = out.stdout.decode()
    for words in ("pprof", "collapsed", "json", "heaptrail.snapshot/1", "inuse_space",
                  "--trust-pickle", "--no-source", "--value", "-o OUT"):
        assert words in text, words


# ---- Python API ---------------------------------------------------------------------------


def test_native_export_functions(traced, tmp_path):
    from heaptrail._native import export_snapshot, export_snapshot_bytes

    _, _, snapshot, _ = traced
    path = tmp_path / "s.json"
    written = export_snapshot(snapshot._table, "json", str(path), read_sources=False)
    assert written == path.stat().st_size
    data = export_snapshot_bytes(snapshot._table, "json", read_sources=False)
    assert data == path.read_bytes()
    with pytest.raises(ValueError, match="unknown export format"):
        export_snapshot_bytes(snapshot._table, "svg")
    with pytest.raises(FileNotFoundError):
        export_snapshot(snapshot._table, "json", str(tmp_path / "missing" / "x.json"))


def test_snapshot_export_method(tmp_path):
    keep = [bytearray(4096) for _ in range(64)]  # noqa: F841  (live while snapshotting)
    heaptrail.start(5)
    try:
        more = [bytearray(8192) for _ in range(32)]  # noqa: F841
        snapshot = heaptrail.take_snapshot()
    finally:
        heaptrail.stop()
    out = tmp_path / "s.json"
    written = snapshot.export(str(out), "json", read_sources=False)
    assert written == out.stat().st_size
    doc = json.loads(out.read_text())
    assert doc["total_size"] == sum(t.size for t in snapshot.traces)
    with pytest.raises(ValueError):
        snapshot.export(str(tmp_path / "x"), "svg")
