"""Function names recorded in the process: a snapshot keeps each frame's `co_qualname` (and
`co_firstlineno`) as the code object said it when the snapshot was taken, so exports, the live
pprof endpoint and `heaptrail html` name functions right after the source file was deleted or
changed. Snapshot files of format version 2 (tests/data/snapshot_v2.ht, written before names
were recorded) still load, their frames named from the source as before."""

import gzip
import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

import heaptrail
from tools import require

HEAPTRAIL = [sys.executable, "-m", "heaptrail"]
DATA = Path(__file__).resolve().parent / "data"

# Big, distinct amounts from a nested function, a lambda and a generator expression each on
# the line of the method that calls it (one line, two functions), and a list comprehension
# (its own `<listcomp>` frame on 3.11, part of its function since 3.12).
PROGRAM = textwrap.dedent("""\
    import sys
    import heaptrail

    heaptrail.start(10)
    keep = []


    class Outer:
        def method(self):
            def inner():
                return [bytearray(1000) for _ in range(500)]  # INNER

            keep.append(inner())  # CALL_INNER
            keep.append((lambda: bytearray(700_000))())  # LAMBDA
            keep.append(tuple(bytearray(900) for _ in range(400)))  # GENEXPR


    Outer().method()  # CALL_METHOD
    heaptrail.take_snapshot().dump(sys.argv[1])
    """)

# The same file after a change: every function moved down, other code where they were.
CHANGED = "class Moved:\n    def elsewhere(self):\n" + "        pass\n" * 30 + PROGRAM


def line_of(marker, text=PROGRAM):
    return next(i for i, line in enumerate(text.splitlines(), 1) if f"# {marker}" in line)


INNER, CALL_INNER, LAMBDA, GENEXPR = (line_of(m) for m in
                                      ("INNER", "CALL_INNER", "LAMBDA", "GENEXPR"))
# What runs the list comprehension of `inner`.
COMPREHENSION = ("Outer.method.<locals>.inner.<locals>.<listcomp>" if sys.version_info < (3, 12)
                 else "Outer.method.<locals>.inner")


def heaptrail_cmd(*args, **kw):
    return subprocess.run([*HEAPTRAIL, *map(str, args)], capture_output=True, text=True,
                          timeout=120, **kw)


def collapsed(snap, *options, **kw):
    out = heaptrail_cmd("export", snap, "--format", "collapsed", *options, **kw)
    assert out.returncode == 0, out.stderr
    return {stack: int(value) for stack, _, value in
            (line.rpartition(" ") for line in out.stdout.splitlines())}


def leaf_of(stacks, label):
    """Bytes of the stacks whose innermost frame is `label`."""
    return sum(v for stack, v in stacks.items() if stack.split(";")[-1] == label)


@pytest.fixture
def traced(tmp_path):
    """(snapshot file, program path): the program ran, dumped its snapshot, and is deleted."""
    prog = tmp_path / "prog.py"
    prog.write_text(PROGRAM)
    snap = tmp_path / "prog.ht"
    subprocess.run([sys.executable, str(prog), str(snap)], check=True, timeout=120)
    prog.unlink()
    return snap, prog


def test_collapsed_and_json_name_functions_of_a_deleted_source(traced):
    snap, prog = traced
    stacks = collapsed(snap)
    assert leaf_of(stacks, f"{COMPREHENSION} (prog.py:{INNER})") >= 500 * 1000, stacks
    assert leaf_of(stacks, f"Outer.method.<locals>.<lambda> (prog.py:{LAMBDA})") >= 700_000
    assert leaf_of(stacks, f"Outer.method.<locals>.<genexpr> (prog.py:{GENEXPR})") >= 400 * 900
    # The lambda runs on its caller's line: one line, two functions, each named.
    lam = next(s for s in stacks if s.endswith(f"<lambda> (prog.py:{LAMBDA})"))
    assert lam.split(";")[-2:] == [f"Outer.method (prog.py:{LAMBDA})",
                                   f"Outer.method.<locals>.<lambda> (prog.py:{LAMBDA})"], lam
    assert lam.startswith(f"<module> (prog.py:{line_of('CALL_METHOD')})"), lam
    # --no-source changes nothing: the names need no source.
    assert collapsed(snap, "--no-source") == stacks

    out = heaptrail_cmd("export", snap, "--format", "json")
    doc = json.loads(out.stdout)
    top = doc["stacks"][0]
    assert [(f["lineno"], f["function"]) for f in top["frames"][:2]] == [
        (LAMBDA, "Outer.method.<locals>.<lambda>"), (LAMBDA, "Outer.method")]


def test_go_tool_pprof_names_functions_of_a_deleted_source(traced, tmp_path):
    go = require("go", package="golang-go")
    snap, _ = traced
    profile = tmp_path / "heap.pb.gz"
    assert heaptrail_cmd("export", snap, "-o", profile).returncode == 0
    env = dict(os.environ, HOME=str(tmp_path), GOCACHE=str(tmp_path / "gocache"),
               PPROF_TMPDIR=str(tmp_path))
    top = subprocess.run([go, "tool", "pprof", "-top", "-unit=B", "-nodefraction=0", str(profile)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert top.returncode == 0, top.stderr
    flat = {}
    for line in top.stdout.splitlines():
        parts = line.split()
        if len(parts) == 6 and parts[0].endswith("B"):
            flat[parts[5]] = int(parts[0][:-1])
    assert flat["prog.Outer.method.<locals>.<lambda>"] >= 700_000, top.stdout
    assert flat[f"prog.{COMPREHENSION}"] >= 500 * 1000, top.stdout
    assert flat["prog.Outer.method.<locals>.<genexpr>"] >= 400 * 900, top.stdout
    # Each function's start line is its `def` line, as the code object said.
    raw = subprocess.run([go, "tool", "pprof", "-raw", str(profile)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert f"prog.Outer.method.<locals>.inner {tmp_path / 'prog.py'}:{INNER} s={INNER - 1}" \
        in raw.stdout, raw.stdout
    assert f"prog.Outer.method {tmp_path / 'prog.py'}:{LAMBDA} s={LAMBDA - 5}" in raw.stdout, \
        raw.stdout


def test_names_stay_right_after_the_source_changed(traced):
    snap, prog = traced
    prog.write_text(CHANGED)  # the old lines are now inside Moved.elsewhere
    stacks = collapsed(snap)
    assert leaf_of(stacks, f"Outer.method.<locals>.<lambda> (prog.py:{LAMBDA})") >= 700_000
    assert not any("Moved" in s for s in stacks), stacks
    # What the source scan alone says (a snapshot without recorded names): the wrong function.
    bare = snap.with_name("bare.ht")
    heaptrail.Snapshot.from_tracemalloc(heaptrail.Snapshot.load(str(snap)).to_tracemalloc()) \
        .dump(str(bare))
    assert leaf_of(collapsed(bare), f"Moved.elsewhere (prog.py:{LAMBDA})") >= 700_000


def test_html_names_functions_of_a_deleted_source(traced, tmp_path):
    snap, _ = traced
    page = tmp_path / "snap.html"
    out = heaptrail_cmd("html", snap, "-o", page)
    assert out.returncode == 0, out.stderr
    text = page.read_text()
    lam = "Outer.method.&lt;locals&gt;.&lt;lambda&gt;"
    # The top line, in the headline and the table, with its function (escaped).
    assert f"most memory is <code>{snap.parent / 'prog.py'}:{LAMBDA}</code> (in <code>{lam}" \
        in text, text[:3000]
    assert f"<b>prog.py:{LAMBDA}</b> <span class=\"fn\">{lam}</span>" in text
    # The flame graph's boxes (SVG text, escaped once more inside the frame's srcdoc).
    assert f"Outer.method.&amp;lt;locals&amp;gt;.&amp;lt;lambda&amp;gt; (prog.py:{LAMBDA}) in " \
        in text


def test_tracemalloc_api_is_unchanged(traced):
    snap, _ = traced
    snapshot = heaptrail.Snapshot.load(str(snap))
    # Frames are (filename, lineno) only: the lambda's frame and its caller's are equal.
    tb = max(snapshot.statistics("traceback"), key=lambda s: s.size).traceback
    assert tb[-1] == tb[-2] and tb[-1].lineno == LAMBDA
    assert not hasattr(tb[-1], "function")
    stats = snapshot.statistics("traceback")
    assert len({s.traceback for s in stats}) == len(stats), "no traceback split by function"
    assert sum(s.size for s in snapshot.statistics("lineno")) == sum(s.size for s in stats)


def test_a_version_2_file_loads_and_is_named_from_the_source(tmp_path):
    old = DATA / "snapshot_v2.ht"
    assert old.read_bytes()[8:10] == (2).to_bytes(2, "little")
    src = (DATA / "names_v2_app.py").read_text()
    make, call_make = line_of("MAKE", src), line_of("CALL_MAKE", src)
    snapshot = heaptrail.Snapshot.load(str(old))
    top = snapshot.statistics("lineno")[0]
    assert (top.traceback[0].filename, top.traceback[0].lineno) == ("names_v2_app.py", make)
    assert top.size >= 200 * 1000
    # Its frames name the file relatively: found from the data directory.
    stacks = collapsed(old, cwd=DATA)
    leaf = f"Registry.register.<locals>.make (names_v2_app.py:{make})"
    assert leaf_of(stacks, leaf) == top.size, stacks
    assert any(s.endswith(f"Registry.register (names_v2_app.py:{call_make});{leaf}")
               for s in stacks), stacks
    assert leaf_of(collapsed(old, "--no-source", cwd=DATA), f"names_v2_app.py:{make}") == top.size
    # Written again it is a version 3 file, still without names: same fallback.
    again = tmp_path / "again.ht"
    snapshot.dump(str(again))
    assert again.read_bytes()[8:10] == (3).to_bytes(2, "little")
    assert collapsed(again, cwd=DATA) == stacks
    page = tmp_path / "old.html"
    assert heaptrail_cmd("html", old, "-o", page, cwd=DATA).returncode == 0
    assert "Registry.register.&lt;locals&gt;.make" in page.read_text()


LIVE = textwrap.dedent("""\
    import sys, time
    import heaptrail

    keep = []


    class Service:
        def handle(self):
            keep.append([bytearray(2000) for _ in range(300)])  # HANDLE


    w = heaptrail.watch(interval=3600, prometheus="127.0.0.1:0")
    Service().handle()
    w.check_now()
    print("%s:%d" % w._prometheus.address, flush=True)
    time.sleep(120)
    """)


def test_live_pprof_endpoint_names_functions_of_a_deleted_source(tmp_path):
    go = require("go", package="golang-go")
    prog = tmp_path / "svc.py"
    prog.write_text(LIVE)
    proc = subprocess.Popen([sys.executable, str(prog)], stdout=subprocess.PIPE, text=True)
    try:
        address = proc.stdout.readline().strip()
        assert address, "the service did not start"
        prog.unlink()  # deployed without sources, or replaced since: the names still hold
        body = None
        deadline = time.monotonic() + 30
        while body is None:
            try:
                with urllib.request.urlopen(f"http://{address}/debug/pprof/heap", timeout=30) as r:
                    body = r.read()
            except OSError:
                assert time.monotonic() < deadline, "no profile"
                time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait()
    assert gzip.decompress(body)
    profile = tmp_path / "live.pb.gz"
    profile.write_bytes(body)
    env = dict(os.environ, HOME=str(tmp_path), PPROF_TMPDIR=str(tmp_path))
    top = subprocess.run([go, "tool", "pprof", "-top", "-lines", str(profile)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert top.returncode == 0, top.stderr
    want = (f"svc.Service.handle.<locals>.<listcomp> {prog}:{line_of('HANDLE', LIVE)}"
            if sys.version_info < (3, 12) else f"svc.Service.handle {prog}:{line_of('HANDLE', LIVE)}")
    assert want in top.stdout, top.stdout
