"""Who holds a leak: `_native._analyse_holders`, the forked copy-on-write walk from the roots.

Each pattern is a real program run in its own interpreter: it starts heaptrail, builds its leak
with some churn around it, then asks for the holder of the line marked `# LEAK` and prints the
result as JSON. The assertions are on the path from a root a user would follow to find the
holder in their code.
"""

import json
import subprocess
import sys
import textwrap


PRELUDE = '''
import heaptrail
heaptrail.start(16)

def _churn(i):
    # Garbage around the leak: short-lived containers of every kind.
    tmp = [{"i": i, "s": str(i)} for _ in range(3)]
    return len(tmp) + len({i, i + 1}) + len((i, str(i)))

def report(marker="# LEAK", timeout=60.0):
    import json
    from heaptrail import _native
    lines = [n for n, text in enumerate(open(__file__), 1) if text.rstrip().endswith(marker)]
    result = _native._analyse_holders([(__file__, n) for n in lines], [], [], [], timeout)
    print("RESULT " + json.dumps(result), flush=True)
'''


def analyse(tmp_path, body, timeout=120):
    program = tmp_path / "app.py"
    program.write_text(PRELUDE + textwrap.dedent(body))
    out = subprocess.run(
        [sys.executable, str(program)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if l.startswith("RESULT "))
    results = json.loads(line[len("RESULT "):])
    for r in results:
        assert r["error"] is None, r
    return results


def steps(result):
    return [(s["kind"], s["name"]) for s in result["holder"]["path"]]


def test_module_cache(tmp_path):
    (r,) = analyse(tmp_path, '''
        _SESSIONS = {}

        class Session:
            def __init__(self, user):
                self.user = user
                self.cart = []

        def login(i):
            session = Session(f"user{i}")  # LEAK
            _SESSIONS[f"sid-{i}"] = session
            return session

        for i in range(5000):
            login(i)
            _churn(i)
        report()
    ''')
    assert r["blocks"] >= 5000 and r["reached"] >= 0.9 * r["blocks"], r
    h = r["holder"]
    assert steps(r) == [("module", "__main__"), ("attr", "_SESSIONS")], h["path"]
    assert h["type"] == "builtins.dict" and h["len"] == 5000 and h["share"] > 0.9
    assert h["role"] == "element"
    assert h["element_types"] == {"__main__.Session": 200}
    assert h["key_types"] == {"builtins.str": 200}


def test_event_bus_listeners(tmp_path):
    (r,) = analyse(tmp_path, '''
        class EventBus:
            def __init__(self):
                self.listeners = []

            def subscribe(self, callback):
                self.listeners.append(callback)

        _bus = EventBus()

        class Widget:
            def __init__(self, i):
                self.i = i
                self.buffer = bytearray(64)

            def on_event(self, event):
                pass

        for i in range(5000):
            _bus.subscribe(Widget(i).on_event)  # LEAK
            _churn(i)
        report()
    ''')
    h = r["holder"]
    assert steps(r) == [("module", "__main__"), ("attr", "_bus"), ("attr", "listeners")], h
    assert h["path"][1]["type"] == "__main__.EventBus"
    assert h["type"] == "builtins.list" and h["len"] == 5000
    assert h["role"] == "element"
    assert h["element_types"] == {"builtins.method": 200}


def test_lru_cache_on_a_method(tmp_path):
    (r,) = analyse(tmp_path, '''
        import functools

        class Service:
            @functools.lru_cache(maxsize=None)
            def lookup(self, key):
                # (A str: dicts and tuples come from free lists, which 3.11/3.12 do not
                # re-stamp, so the churn's freed dicts would hide these.)
                return f"{key}: " + "x" * 100  # LEAK

        service = Service()
        for i in range(5000):
            service.lookup(f"k{i}")
            _churn(i)
        report()
    ''')
    h = r["holder"]
    path = h["path"]
    assert path[-1]["kind"] == "lru_cache", path
    assert path[-1]["of"] == "Service.lookup"
    assert path[-2]["type"] == "functools._lru_cache_wrapper" and path[-2]["name"] == "lookup"
    assert ("attr", "Service") in steps(r) or ("attr", "service") in steps(r)
    assert h["type"] == "builtins.dict" and h["len"] == 5000


def test_logging_logger_registry(tmp_path):
    (r,) = analyse(tmp_path, '''
        import logging

        def handle(i):
            log = logging.getLogger(f"req.{i}")  # LEAK
            log.debug("handled %d", i)

        for i in range(5000):
            handle(i)
            _churn(i)
        report()
    ''')
    h = r["holder"]
    # The registry is reached from logging, or from the first module that keeps a logger:
    # never through heaptrail's own logger (its modules are walked last).
    assert not steps(r)[0][1].startswith("heaptrail"), h["path"]
    assert steps(r)[-2:] == [("attr", "manager"), ("attr", "loggerDict")], h["path"]
    assert h["path"][-2]["type"] == "logging.Manager"
    assert h["type"] == "builtins.dict" and h["len"] >= 5000
    assert h["element_types"].get("logging.Logger", 0) >= 190


def test_thread_local_attribute(tmp_path):
    (r,) = analyse(tmp_path, '''
        import threading

        _state = threading.local()
        ready, done = threading.Event(), threading.Event()

        def worker():
            _state.seen = []
            for i in range(5000):
                _state.seen.append({"request": i, "tags": ["a", str(i)]})  # LEAK
                _churn(i)
            ready.set()
            done.wait()

        t = threading.Thread(target=worker)
        t.start()
        ready.wait()
        report()
        done.set()
        t.join()
    ''')
    h = r["holder"]
    assert steps(r)[:2] == [("module", "__main__"), ("attr", "_state")], h["path"]
    assert h["path"][1]["type"] == "_thread._local"
    assert h["path"][2]["kind"] == "thread_local"
    assert steps(r)[-1] == ("attr", "seen")
    assert h["type"] == "builtins.list" and h["len"] == 5000


def test_closure_variable(tmp_path):
    (r,) = analyse(tmp_path, '''
        _HANDLERS = []

        def make_handler(name):
            history = []

            def handler(event):
                history.append({"event": event, "name": name})  # LEAK

            return handler

        _HANDLERS.append(make_handler("audit"))
        for i in range(5000):
            _HANDLERS[0](i)
            _churn(i)
        report()
    ''')
    h = r["holder"]
    last = h["path"][-1]
    assert steps(r)[:3] == [("module", "__main__"), ("attr", "_HANDLERS"), ("index", "0")]
    assert (last["kind"], last["name"], last["of"]) == (
        "closure", "history", "make_handler.<locals>.handler"), h["path"]
    assert h["type"] == "builtins.list" and h["len"] == 5000


def test_stored_exceptions(tmp_path):
    (r,) = analyse(tmp_path, '''
        _ERRORS = []

        def process(i):
            payload = bytearray(2000)  # LEAK
            raise ValueError(f"bad request {i}")

        for i in range(2000):
            try:
                process(i)
            except ValueError as e:
                _ERRORS.append(e)
            _churn(i)
        report()
    ''')
    h = r["holder"]
    assert r["reached"] == r["blocks"], r  # the bytearrays and their buffers
    assert steps(r) == [("module", "__main__"), ("attr", "_ERRORS")], h["path"]
    assert h["type"] == "builtins.list" and h["role"] == "content"
    assert h["element_types"] == {"builtins.ValueError": 200}


def test_exception_traceback_frame_local(tmp_path):
    # One stored exception whose frame keeps a big local alive: the path goes through the
    # traceback and its frame, and ends at the local variable.
    (r,) = analyse(tmp_path, '''
        _LAST_ERROR = None

        def process():
            rows = []
            for i in range(3000):
                rows.append({"row": i})  # LEAK
            raise KeyError("boom")

        try:
            process()
        except KeyError as e:
            _LAST_ERROR = e
        report()
    ''')
    h = r["holder"]
    kinds = steps(r)
    assert kinds[:3] == [("module", "__main__"), ("attr", "_LAST_ERROR"), ("attr", "__traceback__")]
    assert ("attr", "tb_frame") in kinds
    last = h["path"][-1]
    assert (last["kind"], last["name"]) == ("local", "rows"), h["path"]
    assert last["of"].startswith("process (")
    assert h["type"] == "builtins.list" and h["len"] == 3000


def test_set_of_asyncio_tasks(tmp_path):
    (r,) = analyse(tmp_path, '''
        import asyncio

        _TASKS = set()

        async def wait_forever(i):
            buffer = bytearray(100)
            await asyncio.Event().wait()

        async def main():
            loop = asyncio.get_running_loop()
            for i in range(2000):
                _TASKS.add(loop.create_task(wait_forever(i)))  # LEAK
                _churn(i)
            await asyncio.sleep(0.05)
            report()
            for t in _TASKS:
                t.cancel()

        asyncio.run(main())
    ''')
    h = r["holder"]
    assert steps(r) == [("module", "__main__"), ("attr", "_TASKS")], h["path"]
    assert h["type"] == "builtins.set" and h["len"] == 2000
    assert h["element_types"] == {"_asyncio.Task": 200}


def test_local_variable_of_a_running_frame(tmp_path):
    (r,) = analyse(tmp_path, '''
        def main():
            cache = {}
            for i in range(5000):
                cache[i] = bytearray(64)  # LEAK
                _churn(i)
            report()

        main()
    ''')
    h = r["holder"]
    path = h["path"]
    assert path[0]["kind"] == "thread" and path[0]["of"] == "<module>"
    assert (path[1]["kind"], path[1]["name"]) == ("local", "cache"), path
    assert path[1]["of"].startswith("main (") and "app.py:" in path[1]["of"]
    assert h["type"] == "builtins.dict" and h["len"] == 5000 and h["role"] == "element"


def test_a_module_holder_wins_over_the_running_call_that_uses_it(tmp_path):
    # The heap is copied while the main thread runs a method of the leaking registry (as a
    # signal's `send` runs with `self` bound to the module's signal): the holder is the module
    # attribute, which outlives the call, not the call's `self`.
    (r,) = analyse(tmp_path, '''
        class Registry:
            def __init__(self):
                self.entries = []

            def add(self, i):
                self.entries.append(bytearray(64))  # LEAK

            def notify(self):
                for entry in self.entries:
                    pass
                report()

        _registry = Registry()
        for i in range(5000):
            _registry.add(i)
            _churn(i)
        _registry.notify()
    ''')
    assert steps(r) == [("module", "__main__"), ("attr", "_registry"), ("attr", "entries")], r


def test_storage_role_for_the_line_that_inserts(tmp_path):
    # Keys and values come from elsewhere: the only blocks of the line are the index's table.
    (r,) = analyse(tmp_path, '''
        _KEYS = [f"key-{i}" for i in range(20000)]
        _OBJS = [object() for _ in range(20000)]
        _INDEX = {}
        for i, (k, o) in enumerate(zip(_KEYS, _OBJS)):
            _INDEX[k] = o  # LEAK
            if i % 10 == 0:
                _churn(i)
        report()
    ''')
    h = r["holder"]
    assert r["reached"] >= 1
    assert steps(r) == [("module", "__main__"), ("attr", "_INDEX")], h["path"]
    assert h["role"] == "storage" and h["share"] == 1.0


def test_deque_blocks_are_its_storage(tmp_path):
    # The jobs are made elsewhere; the only blocks of the `append` line are the deque's blocks
    # of 64 items: they are reached as the deque's storage, not "held by C-level state".
    (r,) = analyse(tmp_path, '''
        import collections

        class Queue(collections.deque):
            pass

        _pending = Queue()
        _jobs = [{"job": i} for i in range(6400)]
        for i, job in enumerate(_jobs):
            _pending.append(job)  # LEAK
            if i % 10 == 0:
                _churn(i)
        report()
    ''')
    assert r["blocks"] >= 95 and r["reached"] >= r["blocks"] - 2, r
    h = r["holder"]
    assert steps(r) == [("module", "__main__"), ("attr", "_pending")], h["path"]
    assert h["role"] == "storage" and h["share"] == 1.0, h


def test_internal_storage_of_dicts_allocated_elsewhere(tmp_path):
    (r,) = analyse(tmp_path, '''
        _A, _B = "alpha", "beta"
        _RECORDS = [dict() for _ in range(3000)]  # OWNER
        for d in _RECORDS:
            d[_A] = 1; d[_B] = 2  # LEAK
        report()
    ''')
    assert r["reached"] >= 2900
    assert r["internal"] >= r["reached"] / 2, r
    owner_line = next(n for n, t in enumerate(open(tmp_path / "app.py"), 1)
                      if t.rstrip().endswith("# OWNER"))
    assert r["owner_sites"][0][1] == owner_line and r["owner_sites"][0][2] >= 2500, r
    h = r["holder"]
    assert steps(r) == [("module", "__main__"), ("attr", "_RECORDS")], h["path"]
    assert h["role"] == "element"


def test_values_stored_in_another_lines_objects_say_so(tmp_path):
    # The ids are values of the span dicts (one line) and attributes of the Span objects
    # (another): `inside` names the line whose objects hold them, for dicts and instances.
    spans, ids = analyse(tmp_path, '''
        import threading
        _local = threading.local()

        class Span:
            def __init__(self, ident):
                self.ident = ident

        def record(i, ident):
            spans = getattr(_local, "spans", None)
            if spans is None:
                spans = _local.spans = []
            spans.append({"request": ident, "name": "/orders"} if i % 2 else Span(ident))  # LEAK

        for i in range(6000):
            ident = 10**9 + i  # LEAK
            record(i, ident)
            _churn(i)
        report()
    ''')
    assert spans["inside"] == [], spans
    assert ids["reached"] >= 5900, ids
    (where, lineno, n), = ids["inside"]
    assert where.endswith("app.py") and lineno == spans["lineno"], ids["inside"]
    assert n >= 0.95 * ids["reached"], ids


def test_a_cache_objects_declared_bound(tmp_path):
    # A third-party style cache: entries in one attribute, links in another, the bound in a
    # class-private attribute. Within the bound it is the holder's bound; a container that
    # outgrew the number it declares is not bounded by it.
    bounded, outgrown = analyse(tmp_path, '''
        import collections

        class Cache:
            def __init__(self, maxsize):
                self.__data = {}
                self.__order = collections.OrderedDict()
                self.__maxsize = maxsize

            def __setitem__(self, key, value):
                self.__data[key] = value
                self.__order[key] = None

        class History:
            MAX_ITEMS = 100  # declared, never enforced

            def __init__(self):
                self.items = []

        _cache = Cache(maxsize=50_000)
        _history = History()
        for i in range(4000):
            _cache[i] = {"order": i, "lines": [i, i + 1]}  # LEAK
            _history.items.append({"event": i})  # LEAK
            _churn(i)
        report()
    ''')
    assert bounded["holder"]["bound"] == 50_000, bounded["holder"]
    assert "_Cache__data" in [s["name"] for s in bounded["holder"]["path"]]
    assert outgrown["holder"]["len"] == 4000 and outgrown["holder"]["bound"] is None, outgrown


def test_growth_spread_over_the_listeners_of_several_buses(tmp_path):
    # Five buses made at start-up, each with its own listeners list: no list holds half of
    # the callbacks. The holder is the buses' `listeners` (every bus: `*`), not the dict of
    # buses, and the callbacks are its elements.
    (r,) = analyse(tmp_path, '''
        class EventBus:
            def __init__(self, name):
                self.name = name
                self.listeners = []

        _buses = {name: EventBus(name) for name in ("a", "b", "c", "d", "e")}

        def subscribe_all():
            for i in range(5000):
                bus = _buses["abcde"[i % 5]]
                bus.listeners.append(lambda event, i=i: (event, i))  # LEAK
                _churn(i)

        subscribe_all()
        report()
    ''')
    h = r["holder"]
    assert steps(r) == [("module", "__main__"), ("attr", "_buses"), ("key", "*"),
                        ("attr", "listeners")], h["path"]
    assert h["siblings"] == 5 and h["role"] == "element" and h["share"] > 0.9, h
    assert h["len"] == 1000 and h["element_types"] == {"builtins.function": 200}, h


def test_accumulating_owners_stay_the_holder(tmp_path):
    # Each new session holds its cart: the sessions are what accumulates (made at a growing
    # line), so the holder is the sessions dict, not "every session's cart". Three caches of one
    # object are three holders, never `*`.
    carts, entries, sessions = analyse(tmp_path, '''
        class Session:
            def __init__(self):
                self.cart = []  # LEAK

        class Service:
            def __init__(self):
                self.by_id = {}
                self.by_name = {}
                self.by_email = {}

        _sessions = {}
        _service = Service()

        def remember(i):
            (_service.by_id, _service.by_name, _service.by_email)[i % 3][i] = [f"entry {i}"]  # LEAK

        for i in range(3000):
            s = _sessions[i] = Session()  # LEAK
            s.cart.extend([i * 7.5, i * 2.5])
            remember(i)
            _churn(i)
        report()
    ''')
    for r in (carts, sessions, entries):
        assert r["holder"]["siblings"] is None, r["holder"]
    assert steps(carts) == [("module", "__main__"), ("attr", "_sessions")], carts["holder"]
    assert steps(sessions) == [("module", "__main__"), ("attr", "_sessions")]
    assert steps(entries) == [("module", "__main__"), ("attr", "_service")], entries["holder"]


def test_timeout_kills_the_child_and_the_parent_carries_on(tmp_path):
    program = tmp_path / "app.py"
    program.write_text(PRELUDE + textwrap.dedent('''
        import json, os, time
        from heaptrail import _native
        _BIG = [(i, str(i)) for i in range(1_000_000)]  # LEAK
        line = [n for n, t in enumerate(open(__file__), 1) if t.rstrip().endswith("# LEAK")][0]
        t0 = time.monotonic()
        (r,) = _native._analyse_holders([(__file__, line)], [], [], [], 0.001)
        took = time.monotonic() - t0
        # The child is gone (reaped): no zombie, and the process still works.
        children = os.popen(f"ps --ppid {os.getpid()} -o pid=").read().split()
        again = [x * 2 for x in range(1000)]
        print("RESULT " + json.dumps({"r": r, "took": took, "children": children,
                                      "ok": len(again)}))
    '''))
    out = subprocess.run([sys.executable, str(program)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if l.startswith("RESULT "))
    res = json.loads(line[len("RESULT "):])
    assert res["r"]["error"] == "timeout after 0.001 s", res
    assert res["r"]["holder"] is None
    assert res["took"] < 2.0
    assert len(res["children"]) <= 1  # at most the ps itself
    assert res["ok"] == 1000


def test_no_deadlock_while_threads_allocate(tmp_path):
    (r,) = analyse(tmp_path, '''
        import threading, time
        from heaptrail import _native

        stop = threading.Event()

        def churner(n):
            while not stop.is_set():
                junk = [{"n": n, "i": i, "s": str(i)} for i in range(200)]
                del junk

        threads = [threading.Thread(target=churner, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        _KEEP = []
        for i in range(3000):
            _KEEP.append([i, str(i)])  # LEAK
        line = [n for n, t in enumerate(open(__file__), 1) if t.rstrip().endswith("# LEAK")][0]
        errors, holders, t0 = [], [], time.monotonic()
        for _ in range(20):
            (res,) = _native._analyse_holders([(__file__, line)], [], [], [], 30.0)
            errors.append(res["error"])
            holders.append(res["holder"] and res["holder"]["path"][-1]["name"])
        stop.set()
        for t in threads:
            t.join()
        assert errors == [None] * 20, errors
        assert holders == ["_KEEP"] * 20, holders
        report()
    ''', timeout=300)
    assert steps(r) == [("module", "__main__"), ("attr", "_KEEP")]
