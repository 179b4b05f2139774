"""The tracing engine under conditions a production service creates: many threads, snapshots
taken concurrently, fork, repeated start/stop, deep stacks, and heaptrail's own work."""

import gc
import os
import sys
import threading
import weakref
from collections import Counter

import pytest

import heaptrail

HERE = __file__


@pytest.fixture(autouse=True)
def stopped():
    heaptrail.stop()
    yield
    heaptrail.stop()


def lines_of_this_file(snapshot):
    return {s.traceback[0].lineno: s for s in snapshot.statistics("lineno")
            if s.traceback[0].filename == HERE}


def allocate_here(n):
    return [bytearray(100) for _ in range(n)]  # ALLOC-LINE


ALLOC_LINE = next(i for i, line in enumerate(open(HERE), 1) if "# ALLOC-LINE" in line)


def test_traces_what_is_live_and_forgets_what_is_freed():
    heaptrail.start()
    data = allocate_here(1000)
    stat = lines_of_this_file(heaptrail.take_snapshot())[ALLOC_LINE]
    assert stat.count >= 1000
    assert stat.size >= 1000 * 100
    del data
    gc.collect()
    assert ALLOC_LINE not in lines_of_this_file(heaptrail.take_snapshot())


def test_traced_memory_tracks_a_big_block():
    heaptrail.start()
    before, _ = heaptrail.get_traced_memory()
    block = bytes(10_000_000)
    during, peak = heaptrail.get_traced_memory()
    assert during - before >= 10_000_000
    del block
    after, peak2 = heaptrail.get_traced_memory()
    assert during - after >= 10_000_000 - 4096
    assert peak2 >= peak >= during


def test_start_stop_is_repeatable():
    for nframe in (1, 5, 25, 1, 100):
        heaptrail.start(nframe)
        assert heaptrail.is_tracing()
        assert heaptrail.get_traceback_limit() == nframe
        data = allocate_here(10)
        tb = heaptrail.get_object_traceback(data[0])
        assert tb is not None and tb[-1].lineno == ALLOC_LINE
        assert len(tb) <= nframe
        heaptrail.stop()
        assert not heaptrail.is_tracing()
        assert heaptrail.get_traced_memory() == (0, 0)
        assert heaptrail.get_object_traceback(data[0]) is None


@pytest.mark.parametrize("nframe", [0, -1, 65536, 2**40])
def test_bad_frame_limits_are_refused(nframe):
    with pytest.raises(ValueError, match=r"the number of frames must be in range \[1; 65535\]"):
        heaptrail.start(nframe)
    assert not heaptrail.is_tracing()


def recurse(depth, n):
    if depth == 0:
        return allocate_here(n)
    return recurse(depth - 1, n)


def test_deep_stacks_and_total_depth():
    heaptrail.start(65535)
    data = recurse(300, 1)
    tb = heaptrail.get_object_traceback(data[0])
    snap = heaptrail.take_snapshot()
    trace = next(t for t in snap.traces if t.traceback[-1].lineno == ALLOC_LINE and t.traceback[-1].filename == HERE)
    assert len(tb) > 300
    assert trace.traceback.total_nframe == len(trace.traceback)
    heaptrail.start(3)  # lowering the limit while tracing keeps tracing
    data = recurse(50, 1)
    snap = heaptrail.take_snapshot()
    trace = next(t for t in snap.traces if t.traceback[-1].lineno == ALLOC_LINE and len(t.traceback) == 3)
    assert trace.traceback.total_nframe > 50


def test_threads_allocating_while_snapshots_are_taken():
    heaptrail.start(5)
    stop = threading.Event()
    kept = []

    def worker():
        local = []
        while not stop.is_set():
            local.append(allocate_here(20))
            if len(local) > 50:
                local.clear()
        kept.append(len(local))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        for _ in range(20):
            snap = heaptrail.take_snapshot()
            stats = snap.statistics("traceback")
            assert sum(s.size for s in stats) == sum(t.size for t in snap.traces)
    finally:
        stop.set()
        for t in threads:
            t.join()
    # Everything the workers dropped is gone from the traces.
    gc.collect()
    held = lines_of_this_file(heaptrail.take_snapshot()).get(ALLOC_LINE)
    assert held is None or held.count <= sum(kept) * 20 + 20


def test_threads_starting_and_ending_while_tracing():
    heaptrail.start(2)
    for _ in range(5):
        threads = [threading.Thread(target=allocate_here, args=(50,)) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert heaptrail.take_snapshot().traces  # and nothing crashed


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_fork_child_keeps_tracing_and_parent_is_unaffected():
    heaptrail.start(3)
    stop = threading.Event()
    busy = threading.Thread(target=lambda: [allocate_here(5) for _ in iter(stop.is_set, True)])
    busy.start()  # a thread that is likely inside the hooks when we fork
    try:
        for _ in range(5):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    data = allocate_here(10)
                    tb = heaptrail.get_object_traceback(data[0])
                    snap = heaptrail.take_snapshot()
                    code = 0 if (tb is not None and tb[-1].lineno == ALLOC_LINE and snap.traces) else 2
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
    finally:
        stop.set()
        busy.join()
    assert heaptrail.take_snapshot().traces


def test_own_work_is_not_traced():
    heaptrail.start(25)
    snaps = [heaptrail.take_snapshot() for _ in range(3)]
    stats = snaps[-1].statistics("filename")
    native_files = [s for s in stats if "heaptrail" in s.traceback[0].filename
                    and "site-packages" in s.traceback[0].filename]
    # Objects the user holds (the snapshots) are theirs; heaptrail's internal tables never
    # appear because they live outside Python's allocators.
    assert all(s.size < 64 * 1024 for s in native_files), native_files
    assert heaptrail.get_tracemalloc_memory() > 0


def test_clear_traces_keeps_tracing():
    heaptrail.start()
    data = allocate_here(10)
    heaptrail.clear_traces()
    assert heaptrail.get_object_traceback(data[0]) is None
    assert heaptrail.get_traced_memory() == (0, 0)
    more = allocate_here(10)
    assert heaptrail.get_object_traceback(more[0]) is not None


def test_take_snapshot_requires_tracing():
    with pytest.raises(RuntimeError, match="must be tracing"):
        heaptrail.take_snapshot()


def test_coexists_with_stdlib_tracemalloc_started_later():
    import tracemalloc as std
    heaptrail.start()
    std.start()
    data = allocate_here(100)
    assert std.get_object_traceback(data[0]) is not None
    assert heaptrail.get_object_traceback(data[0]) is not None
    heaptrail.stop()  # stdlib is on top: heaptrail stays in its chain, silent
    more = allocate_here(100)
    assert std.get_object_traceback(more[0]) is not None
    std.stop()
    heaptrail.start()
    again = allocate_here(10)
    assert heaptrail.get_object_traceback(again[0])[-1].lineno == ALLOC_LINE


def allocate_with_depth():
    depth = heaptrail._native.testing._stack_depths()[0]
    block = bytearray(64)  # DEPTH-LINE
    return block, depth


DEPTH_LINE = next(i for i, line in enumerate(open(HERE), 1) if "# DEPTH-LINE" in line)


def at_depth(d):
    return at_depth(d - 1) if d else allocate_with_depth()


def test_block_headers_outlive_stop_and_clear():
    """MEM/OBJ blocks carry their trace in a header in front of the block: blocks allocated
    while tracing must still be freed correctly (header and all) after clear_traces() and
    after stop(), whatever is traced meanwhile, and the counters must stay exact."""
    heaptrail.start()
    in_use, _, _ = heaptrail._native.testing._block_headers()
    assert in_use
    data = allocate_here(2000)
    _, marked, counted = heaptrail._native.testing._block_headers()
    assert marked >= 2000 and counted == marked
    heaptrail.clear_traces()
    del data  # headered blocks of a cleared generation: freed, not counted
    gc.collect()
    assert heaptrail.get_traced_memory()[0] < 50_000
    more = allocate_here(1000)
    traced = heaptrail.get_traced_memory()[0]
    assert traced >= 1000 * 100
    heaptrail.stop()
    # The hooks stay (silent) while headered blocks are allocated: only they can free them.
    _, marked, counted = heaptrail._native.testing._block_headers()
    assert marked >= 1000 and counted == marked
    grown = [bytearray(100) for _ in range(10)]
    del more
    gc.collect()
    for b in grown:
        b.extend(bytes(5000))  # realloc of blocks allocated while stopped: no header
    heaptrail.start()
    again = allocate_here(10)
    for b in grown:
        b.extend(bytes(50))
    assert heaptrail.get_object_traceback(again[0])[-1].lineno == ALLOC_LINE
    del grown, again
    gc.collect()
    assert heaptrail.get_traced_memory()[0] < 50_000
    _, marked, counted = heaptrail._native.testing._block_headers()
    assert counted == marked


def test_a_zero_size_headered_block_does_not_alias_the_next_block():
    """A headered block of 0 bytes (PyMem_Malloc(0); an emptied list shrinks its item array
    to 0) must be handed out inside its own block: at its end pymalloc starts the next block,
    which, allocated without a header after stop(), would look headered and be freed as one."""
    import ctypes
    api = ctypes.pythonapi
    api.PyMem_Malloc.restype = ctypes.c_void_p
    api.PyMem_Malloc.argtypes = [ctypes.c_size_t]
    api.PyMem_Free.argtypes = [ctypes.c_void_p]
    heaptrail.start()
    zero = [api.PyMem_Malloc(0) for _ in range(200)]
    heaptrail.stop()  # the hooks stay: the zero-size blocks carry headers
    plain = [api.PyMem_Malloc(8) for _ in range(2000)]
    aliased = set(zero) & set(plain)
    if not aliased:  # freeing an aliased pair would corrupt the heap: leak them instead
        for p in plain + zero:
            api.PyMem_Free(p)
    assert not aliased


def test_survives_churn_while_tracing_is_cleared_stopped_and_restarted():
    """Threads allocate, reallocate and free (blocks with and without headers) while another
    keeps snapshotting, clearing, stopping and restarting heaptrail and starting stdlib
    tracemalloc on top of it: the process must neither crash nor raise."""
    import subprocess
    script = os.path.join(os.path.dirname(HERE), "workloads", "engine_stress.py")
    out = subprocess.run([sys.executable, script, "5"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    assert out.stdout.strip().endswith("ok")


def _exec_generated_snippets(first, count, keep_refs_every=100):
    """What template engines, rule engines and dataclass factories do: compile a snippet with
    a fresh pseudo-filename and run it; nothing it allocates stays alive."""
    refs = []
    source = "rows = [str(n) * 3 for n in range(8)]\nindex = {r: len(r) for r in rows}\n"
    for i in range(first, first + count):
        code = compile(source, f"<generated-{i}>", "exec")
        exec(code, {})
        if i % keep_refs_every == 0:
            refs.append(weakref.ref(code))
        del code
    return refs


def test_code_compiled_on_the_fly_is_let_go_once_its_allocations_are_gone():
    """heaptrail keeps a code object alive only while a live block's traceback names it: a
    service that compiles code at run time must not see heaptrail's memory grow per snippet."""
    heaptrail.start(1)
    try:
        refs = _exec_generated_snippets(0, 8000)
        sum(range(1000))  # a few bytecodes: the pending call that drops references runs
        alive = sum(ref() is not None for ref in refs)
        # Only the snippets since the last compaction can still be held (a few hundred).
        assert alive <= len(refs) // 4, f"{alive} of {len(refs)} sampled code objects kept"
        own_after_first = heaptrail.get_tracemalloc_memory()
        _exec_generated_snippets(8000, 16000)
        sum(range(1000))
        grown = heaptrail.get_tracemalloc_memory() - own_after_first
        assert grown < 512 * 1024, f"heaptrail's own memory grew by {grown} bytes"
        # Tracing still attributes new allocations correctly after compactions.
        kept = [bytearray(1000) for _ in range(10)]  # kept line
        line = sys._getframe().f_lineno - 1
        tb = heaptrail.get_object_traceback(kept[0])
        assert (tb[0].filename, tb[0].lineno) == (__file__, line)
    finally:
        heaptrail.stop()


def test_code_objects_only_heaptrail_holds_are_let_go_with_what_they_own():
    """A code object can own a traced block whose traceback names that same code: on 3.12+
    a function's code caches the co_varnames tuple that inspect.signature builds, here while
    the snippet's module code runs. Were heaptrail to hold the snippet's code for that
    tuple's traceback, code, function code and tuple would keep each other alive for good:
    every snippet compiled and thrown away would stay (doctest.testmod compiles every example
    afresh on every run)."""
    source = "def f(a, b):\n    return a\n\nimport inspect\nsignature = inspect.signature(f)\n"
    refs = []
    heaptrail.start(25)
    try:
        for i in range(50):
            code = compile(source, f"<snippet-{i}>", "exec")
            refs.append(weakref.ref(code))
            exec(code, {})
            del code
        gc.collect()
        heaptrail._native._release_unused_tracebacks()
        alive = sum(ref() is not None for ref in refs)
        assert alive == 0, f"{alive} of {len(refs)} snippets' code objects still alive"
        # Tracing goes on as before, attributing new allocations to their line.
        kept = [bytearray(1000) for _ in range(10)]  # kept line
        line = sys._getframe().f_lineno - 1
        tb = heaptrail.get_object_traceback(kept[0])  # oldest frame first
        assert (tb[-1].filename, tb[-1].lineno) == (__file__, line)
    finally:
        heaptrail.stop()


def test_realloc_of_headered_blocks_is_traced_at_the_new_size():
    heaptrail.start()
    blocks = [bytearray(10) for _ in range(200)]  # REALLOC-LINE
    for b in blocks:
        b.extend(bytes(990))  # PyObject_Realloc: the header moves with the block
    stat = lines_of_this_file(heaptrail.take_snapshot())[REALLOC_LINE]
    assert stat.count >= 200
    stats = lines_of_this_file(heaptrail.take_snapshot())
    grown = sum(s.size for line, s in stats.items() if line != REALLOC_LINE)
    assert grown >= 200 * 1000  # the grown buffers, blamed on the extend line
    before = heaptrail.get_traced_memory()[0]
    del blocks
    gc.collect()
    assert before - heaptrail.get_traced_memory()[0] >= 200 * 1000


REALLOC_LINE = next(i for i, line in enumerate(open(HERE), 1) if "# REALLOC-LINE" in line)


def test_live_totals_per_traceback_match_a_full_snapshot():
    """The watcher reads the live bytes and blocks per traceback that the tracer keeps on every
    allocation and free (a short pause) instead of copying every trace: the sites it gets
    must be those of a full snapshot of the same moment, through allocations, frees, reallocs
    and clear_traces()."""
    heaptrail.start(5)
    data = allocate_here(3000)
    heaptrail.clear_traces()
    more = allocate_here(2000)
    grown = [bytearray(10) for _ in range(500)]
    for b in grown:
        b.extend(bytes(300))
    del data, more[::2]
    gc.collect()
    args = ([], [], [])
    from_totals = heaptrail._native._get_traceback_totals().sites(*args)
    from_traces = heaptrail._native._get_traces().sites(*args)
    assert len(from_totals) > 3
    assert [(s["key"], s["size"], s["count"]) for s in from_totals] == \
        [(s["key"], s["size"], s["count"]) for s in from_traces]
    assert any(s["filename"] == HERE and s["lineno"] == ALLOC_LINE and s["count"] >= 1000
               for s in from_totals)


def test_total_nframe_is_the_real_stack_depth():
    """total_nframe is not walked frame by frame on every allocation (3.12+ reads the
    interpreter's frame counter, 3.11 memoises the depth below the captured frames): check
    it against a full walk, at many depths, twice each so memoised answers are checked too."""
    heaptrail.start(3)
    kept = [at_depth(d) for d in (0, 1, 5, 40, 5, 0, 40, 200)]
    kept += [at_depth(d) for d in (0, 1, 5, 40, 5, 0, 40, 200)]
    expected = {depth for _, depth in kept}
    traces = [t for t in heaptrail.take_snapshot().traces
              if t.traceback[-1].filename == HERE and t.traceback[-1].lineno == DEPTH_LINE]
    assert {t.traceback.total_nframe for t in traces} == expected
    # The bytearray object and its buffer, each; on 3.13 also a temporary the call took from a
    # free list and parked there again (a parked object keeps its trace, as with stdlib).
    counts = Counter(t.traceback.total_nframe for t in traces)
    assert all(counts[depth] >= 2 * n for depth, n in Counter(d for _, d in kept).items())
    assert len(traces) - 2 * len(kept) <= 2


@pytest.mark.skipif(sys.version_info < (3, 12), reason="3.11 has no Python frame counter")
def test_interpreter_frame_counter_matches_a_walk():
    import asyncio
    depths = heaptrail._native.testing._stack_depths

    def gen():
        yield depths()
        yield from (x for x in [depths()])

    async def coro():
        await asyncio.sleep(0)
        return depths()

    def thrown():
        try:
            yield 1
        except ValueError:
            yield depths()

    g = thrown()
    next(g)
    samples = [depths(), *gen(), asyncio.run(coro()), g.throw(ValueError),
               sorted([2, 1], key=lambda x: depths())[0] if False else depths()]
    for walked, reported in samples:
        assert walked == reported
