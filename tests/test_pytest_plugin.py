"""heaptrail's pytest plugin (heaptrail/pytest_plugin.py), run the way users run it: a real
`python -m pytest` in a fresh directory holding the code under test (app.py) and its tests,
with the plugin loaded through its pytest11 entry point.

Each leak pattern comes twice: leaking (the inner test must fail, naming app.py's line) and
fixed (it must pass). Negative controls (a cache the warm-up fills, churn, cyclic garbage,
batches that grow and are dropped, logging with fixed names, code compiled afresh each
iteration) must pass."""

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET

import pytest

APP = '''
import asyncio
import functools
import logging
import threading

_seen = {}
_listeners = []
_errors = []
_local = threading.local()
_tasks = set()
_warm = {}


class Payload:
    def __init__(self, key):
        self.key = key
        self.data = bytearray(200)


def remember(key):
    _seen[key] = Payload(key)  # LEAK-MODULE-CACHE


def remember_latest(key):
    _seen["latest"] = Payload(key)


def subscribe(owner):
    _listeners.append(lambda event: owner)  # LEAK-LISTENER


def subscribe_once(owner):
    _listeners[:] = [lambda event: owner]


def record_failure(n):
    try:
        raise ValueError("bad request %d" % n)  # LEAK-EXCEPTION
    except ValueError as exc:
        _errors.append(exc)


def per_thread(n):
    items = getattr(_local, "items", None)
    if items is None:
        items = _local.items = []
    items.append(Payload(n))  # LEAK-THREAD-LOCAL


class Repository:
    @functools.lru_cache(maxsize=None)
    def load(self, key):
        return Payload(key)  # LEAK-LRU-METHOD


def request_logger(n):
    return logging.getLogger("requests.%d" % n)  # LEAK-LOGGER


def fire_and_forget(n):
    async def job():
        await asyncio.sleep(0)
        return Payload(n)

    async def main():
        task = asyncio.ensure_future(job())  # LEAK-TASKS
        _tasks.add(task)
        await task

    asyncio.run(main())


async def remember_later(key):
    await asyncio.sleep(0)
    _seen[key] = Payload(key)  # LEAK-ASYNC


def warm_lookup(key):
    # Bounded: a fixed set of keys, all seen during the warm-up.
    if key not in _warm:
        _warm[key] = Payload(key)
    return _warm[key]
'''

TESTS = {
    "module_cache": ("LEAK-MODULE-CACHE",
                     "app.remember(f'req-{next(COUNTER)}')",
                     "app.remember_latest(f'req-{next(COUNTER)}')"),
    "listener": ("LEAK-LISTENER",
                 "app.subscribe(object())",
                 "app.subscribe_once(object())"),
    "stored_exception": ("LEAK-EXCEPTION",
                         "app.record_failure(next(COUNTER))",
                         "app.record_failure(next(COUNTER)); app._errors.clear()"),
    "thread_local": ("LEAK-THREAD-LOCAL",
                     "app.per_thread(next(COUNTER))",
                     "app.per_thread(next(COUNTER)); app._local.items.clear()"),
    "lru_cache_on_method": ("LEAK-LRU-METHOD",
                            "app.Repository().load(1)",
                            "REPO.load(1)"),
    "logger_per_call": ("LEAK-LOGGER",
                        "app.request_logger(next(COUNTER)).debug('x')",
                        "app.request_logger(7).debug('x')"),
    "task_set": ("LEAK-TASKS",
                 "app.fire_and_forget(next(COUNTER))",
                 "app.fire_and_forget(next(COUNTER)); app._tasks.clear()"),
}

HEADER = '''
import itertools
import gc
import pytest
import app

COUNTER = itertools.count()
REPO = app.Repository()
'''


def line_of(text, marker):
    return next(i for i, line in enumerate(text.splitlines(), 1) if f"# {marker}" in line)


def run_pytest(tmp_path, test_source, *args):
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "test_inner.py").write_text(HEADER + textwrap.dedent(test_source))
    junit = tmp_path / "junit.xml"
    env = dict(os.environ, PYTHONPATH=str(tmp_path), PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTEST_ADDOPTS", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA",
         f"--junitxml={junit}", *args, "test_inner.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    return done, ET.parse(junit).getroot() if junit.exists() else None


def outcomes(junit):
    """{test name: "passed" | "failed" | "error" | "skipped"} from the JUnit XML."""
    tags = {"failure": "failed", "error": "error", "skipped": "skipped"}
    result = {}
    for case in junit.iter("testcase"):
        result[case.get("name")] = next(
            (tags[child.tag] for child in case if child.tag in tags), "passed")
    return result


# The function that runs each `# LEAK-...` line of APP, as the failure names it.
FUNCTIONS = {"LEAK-MODULE-CACHE": "remember", "LEAK-LISTENER": "subscribe",
             "LEAK-EXCEPTION": "record_failure", "LEAK-THREAD-LOCAL": "per_thread",
             "LEAK-LRU-METHOD": "Repository.load", "LEAK-LOGGER": "request_logger",
             "LEAK-TASKS": "fire_and_forget.<locals>.main", "LEAK-ASYNC": "remember_later"}


def leak_at(tmp_path, marker):
    """How the failure names the leak at `marker`: its file, line and function."""
    return f"LEAK at {tmp_path / 'app.py'}:{line_of(APP, marker)} in {FUNCTIONS[marker]}: "


@pytest.mark.parametrize("pattern", sorted(TESTS))
def test_a_leaking_test_fails_at_the_leaking_line_and_its_fix_passes(tmp_path, pattern):
    marker, leaking, fixed = TESTS[pattern]
    source = f'''
    @pytest.mark.no_leaks
    def test_leaks():
        {leaking}

    @pytest.mark.no_leaks
    def test_fixed():
        {fixed}
    '''
    done, junit = run_pytest(tmp_path, source)
    assert junit is not None, done.stdout + done.stderr
    assert outcomes(junit) == {"test_leaks": "failed", "test_fixed": "passed"}, done.stdout
    assert leak_at(tmp_path, marker) in done.stdout, done.stdout
    assert "per iteration" in done.stdout
    assert "allocated at (most recent call first):" in done.stdout


def test_the_failure_names_the_holder_and_the_pattern(tmp_path):
    source = '''
    @pytest.mark.no_leaks
    def test_leaks():
        app.remember(f"req-{next(COUNTER)}")
    '''
    done, junit = run_pytest(tmp_path, source)
    assert "held by app._seen" in done.stdout, done.stdout
    assert "pattern unbounded-cache" in done.stdout, done.stdout
    props = {p.get("name"): p.get("value") for p in junit.iter("property")}
    assert props.get("heaptrail_leaks") == "1", props
    assert f"app.py:{line_of(APP, 'LEAK-MODULE-CACHE')}" in props.get("heaptrail_leak", "")


NEGATIVE_CONTROLS = '''
class Node:
    def __init__(self):
        self.other = None

def test_warm_up_fills_a_bounded_cache():
    for key in range(50):
        app.warm_lookup(key)

def test_churn():
    rows = [{"id": i, "name": str(i) * 10} for i in range(2000)]
    assert len({r["name"] for r in rows}) == 2000

def test_cyclic_garbage():
    for _ in range(200):
        a, b = Node(), Node()
        a.other, b.other = b, a

def test_growing_batches_that_are_dropped():
    size = next(COUNTER) * 500
    batch = [bytearray(64) for _ in range(size)]
    assert len(batch) == size

def test_logging_with_fixed_names():
    app.request_logger(1).info("hello %s", "world")

def test_exec_of_fresh_source():
    # (Fresh source, same names: on 3.12+ every new *name* is interned for good, a real leak.)
    n = next(COUNTER)
    namespace = {}
    exec(compile(f"def f(a, b={n}):\\n    return a + b\\n", f"<gen-{n}>", "exec"), namespace)
    assert namespace["f"](1) == n + 1

def test_regex_and_formatting_caches():
    import re
    assert re.match(r"(\\d+)-(\\w+)", "12-ab").group(2) == "ab"
    assert "{:>10}".format("x").strip() == "x"
'''


def test_negative_controls_pass_under_heaptrail_leaks(tmp_path):
    done, junit = run_pytest(tmp_path, NEGATIVE_CONTROLS, "--heaptrail-leaks")
    assert junit is not None, done.stdout + done.stderr
    result = outcomes(junit)
    assert set(result.values()) == {"passed"}, done.stdout
    assert len(result) == 7


def test_inactive_unless_asked(tmp_path):
    source = '''
    def test_leaks():
        app.remember(f"req-{next(COUNTER)}")
        assert len(app._seen) == 1   # run once: the body is not repeated
    '''
    done, junit = run_pytest(tmp_path, source)
    assert outcomes(junit) == {"test_leaks": "passed"}, done.stdout
    assert "heaptrail" not in done.stdout


def test_limit_memory(tmp_path):
    source = '''
    @pytest.mark.limit_memory("1 MB")
    def test_over():
        big = [bytearray(1000) for _ in range(3000)]
        del big

    @pytest.mark.limit_memory("1 MB")
    def test_under():
        small = [bytearray(1000) for _ in range(100)]
    '''
    done, junit = run_pytest(tmp_path, source)
    assert outcomes(junit) == {"test_over": "failed", "test_under": "passed"}, done.stdout
    assert "at its peak, over its limit of 1024 KiB" in done.stdout, done.stdout


UNITTEST_SOURCE = '''
import unittest

RUNS = itertools.count(1)


@pytest.mark.no_leaks
class Requests(unittest.TestCase):
    def setUp(self):
        self.key = f"req-{next(COUNTER)}"
        self.scratch = [bytearray(100) for _ in range(50)]  # setUp's own allocations

    def tearDown(self):
        del self.scratch

    def test_leaks(self):
        app.remember(self.key)

    def test_fixed(self):
        app.remember_latest(self.key)

    def test_fails_on_its_fourth_run(self):
        self.assertLess(next(RUNS), 4)

    @unittest.skip("not today")
    def test_skipped(self):
        app.remember(self.key)
'''


def test_unittest_test_cases_are_repeated_with_setup_and_teardown(tmp_path):
    done, junit = run_pytest(tmp_path, UNITTEST_SOURCE)
    assert junit is not None, done.stdout + done.stderr
    assert outcomes(junit) == {"test_leaks": "failed", "test_fixed": "passed",
                               "test_fails_on_its_fourth_run": "failed",
                               "test_skipped": "skipped"}, done.stdout
    assert leak_at(tmp_path, "LEAK-MODULE-CACHE") in done.stdout, done.stdout
    # The fourth run's own failure is what pytest reports, and heaptrail says which run it was.
    assert "AssertionError: 4 not less than 4" in done.stdout, done.stdout
    assert "the test failed on run 4, while checked for leaks" in done.stdout, done.stdout


ASYNC_SOURCE = '''
@pytest.mark.no_leaks
@pytest.mark.asyncio
async def test_leaks():
    await app.remember_later(f"req-{next(COUNTER)}")

@pytest.mark.no_leaks
@pytest.mark.asyncio
async def test_fixed():
    await app.remember_later("latest")
'''


def test_async_tests_are_repeated_through_pytest_asyncio(tmp_path):
    done, junit = run_pytest(tmp_path, ASYNC_SOURCE)
    assert junit is not None, done.stdout + done.stderr
    assert outcomes(junit) == {"test_leaks": "failed", "test_fixed": "passed"}, done.stdout
    assert leak_at(tmp_path, "LEAK-ASYNC") in done.stdout, done.stdout


def test_a_test_that_stops_tracing_itself_is_reported_unchecked(tmp_path):
    source = '''
    import heaptrail

    @pytest.mark.no_leaks
    def test_stops_tracing():
        app.remember(f"req-{next(COUNTER)}")
        heaptrail.stop()
    '''
    done, junit = run_pytest(tmp_path, source)
    assert outcomes(junit) == {"test_stops_tracing": "passed"}, done.stdout
    assert "not checked for leaks: the test stops heaptrail's tracing itself" in done.stdout
    props = {p.get("name"): p.get("value") for p in junit.iter("property")}
    assert props.get("heaptrail_leaks") == "not checked", props


def test_doctests_run_once_unchecked(tmp_path):
    (tmp_path / "counted.py").write_text(textwrap.dedent('''
        CALLS = []

        def count():
            """
            >>> count()
            1
            """
            CALLS.append(object())
            return len(CALLS)
        '''))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--doctest-modules",
         "--heaptrail-leaks", "counted.py"],
        cwd=tmp_path, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"), capture_output=True,
        text=True, timeout=300)
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout


@pytest.mark.parametrize("args, message", [
    (["--heaptrail-leaks", "--heaptrail-iterations", "3"], "iterations must be an integer >= 8"),
    (["--heaptrail-leaks", "--heaptrail-warmup", "0"], "warmup must be an integer >= 1"),
])
def test_bad_options_are_usage_errors(tmp_path, args, message):
    done, _ = run_pytest(tmp_path, "def test_x():\n    pass\n", *args)
    assert done.returncode != 0
    assert message in done.stdout + done.stderr


def test_a_bad_limit_is_a_usage_error(tmp_path):
    source = '''
    @pytest.mark.limit_memory("lots")
    def test_x():
        pass
    '''
    done, _ = run_pytest(tmp_path, source)
    assert done.returncode != 0
    assert "limit_memory: not a size: 'lots'" in done.stdout + done.stderr
