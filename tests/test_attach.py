"""`heaptrail attach / detach / snapshot` on real processes started without heaptrail: the report
must flag the leaking line, and every failure must exit non-zero with a clear message and leave
the target running (never stopped, never killed)."""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools import require

import heaptrail
from heaptrail._cli import remote

HEAPTRAIL = [sys.executable, "-m", "heaptrail"]

# A plain service that leaks one string per request into a module-level dict. Every ~0.1 s it
# rewrites STATE_FILE with what the tests check from outside: that it still runs (tick), its
# sys.path, and whether heaptrail is imported / tracing / watching in it.
TARGET = '''\
import json, os, sys, threading, time

STATE_FILE = sys.argv[1]
cache = {}

def handle(i):
    cache[i] = "response body %d " % i * 8  # LEAK
    scratch = [i] * 50  # churn, freed at once
    return len(scratch)

def publish(tick):
    ht = sys.modules.get("heaptrail")
    try:
        tracing = bool(ht and ht.is_tracing())
    except AttributeError:  # attach imports heaptrail in a thread: the module is still partial
        tracing = False
    state = {"tick": tick, "pid": os.getpid(), "sys_path": sys.path,
             "heaptrail_imported": ht is not None,
             "tracing": tracing,
             "threads": sorted(t.name for t in threading.enumerate())}
    with open(STATE_FILE + ".tmp", "w") as f:
        json.dump(state, f)
    os.replace(STATE_FILE + ".tmp", STATE_FILE)

i = 0
while True:
    handle(i)
    i += 1
    if i % 50 == 0:
        publish(i)
    time.sleep(0.002)
'''
LEAK_LINE = next(n for n, line in enumerate(TARGET.splitlines(), 1) if "# LEAK" in line)


def heaptrail_cli(*args, timeout=120, env=None):
    return subprocess.run([*HEAPTRAIL, *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


class Target:
    """A running target process; stopped (SIGKILL) at the end of the test."""

    def __init__(self, tmp_path, python=sys.executable, options=(), program=TARGET, argv=None):
        self.script = tmp_path / "service.py"
        self.script.write_text(program)
        self.state_file = tmp_path / "state.json"
        # Own programs get STATE_FILE first; another program gets `argv` alone.
        own = program in (TARGET, BLOCKED, BUSY, MANY_SITES, STEADY)
        argv = [str(self.state_file), *(argv or ())] if own else argv
        self.process = subprocess.Popen([python, *options, str(self.script), *argv],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.pid = self.process.pid
        if program in (TARGET, BUSY, MANY_SITES, STEADY):
            self.wait_for_state()

    def state(self):
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    def wait_for_state(self, newer_than=-1, seconds=10):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            state = self.state()
            if state is not None and state["tick"] > newer_than:
                return state
            assert self.process.poll() is None, self.process.stderr.read().decode()
            time.sleep(0.05)
        raise AssertionError("the target stopped making progress")

    def explain(self, out):
        """Why a CLI call against this target failed: its stderr, and the target's own
        stderr if the target is gone (a crash must show as one, not as a CLI error)."""
        code = self.process.poll()
        if code is None:
            return out.stderr
        return f"{out.stderr}\nthe target exited with {code}:\n{self.process.stderr.read().decode()}"

    def assert_running(self):
        """Alive, not left stopped by a tracer, and still making progress."""
        assert self.process.poll() is None, "the target died"
        with open(f"/proc/{self.pid}/status") as f:
            state = next(line for line in f if line.startswith("State:"))
        assert "T" not in state.split()[1], state
        state = self.state()
        if state is not None and "tick" in state:
            self.wait_for_state(newer_than=state["tick"])

    def stop(self):
        self.process.kill()
        self.process.wait()
        self.process.stderr.close()


def require_attach():
    if not hasattr(heaptrail._native, "_queue_pending_call"):
        pytest.skip("heaptrail attach reaches Python 3.11-3.13 on x86-64 Linux only")


@pytest.fixture
def target(tmp_path):
    require_attach()
    started = []

    def start(**kwargs):
        t = Target(tmp_path, **kwargs)
        started.append(t)
        return t

    yield start
    for t in started:
        t.stop()


def other_pyenv_python():
    """A CPython of another minor version than ours (pyenv's), with no heaptrail for it."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for version in ("3.12", "3.11", "3.13"):
        if version == mine:
            continue
        found = sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"))
        if found:
            return found[-1]
    pytest.skip("needs a pyenv CPython of another minor version")


def base_python():
    """The interpreter our virtualenv was made from: same version, no heaptrail of its own."""
    base = getattr(sys, "_base_executable", None)
    return base if base and os.path.exists(base) else sys.executable


# ---- the check of issue 4: attach to a plain leaking process ------------------------------------

def test_attach_with_duration_flags_the_leaking_line(target, tmp_path):
    t = target()
    report = tmp_path / "leaks.jsonl"
    out = heaptrail_cli("attach", str(t.pid), "--interval", "0.5", "--report", str(report),
                        "--duration", "8")
    assert out.returncode == 0, t.explain(out)
    assert f"watching process {t.pid}" in out.stdout
    # The summary printed at the end names the leaking line, its growth and its holder.
    assert f"LEAK at {t.script}:{LEAK_LINE} in handle: " in out.stdout, out.stdout
    assert "held by __main__.cache" in out.stdout
    windows = [json.loads(line) for line in report.read_text().splitlines()]
    assert 8 <= len(windows) <= 17, len(windows)
    assert all(w["pid"] == t.pid and w["schema"] == "heaptrail.watch/2" for w in windows)
    leaks = {(s["filename"], s["lineno"]) for s in windows[-1]["sites"] if s["verdict"] == "leak"}
    assert (str(t.script), LEAK_LINE) in leaks, leaks
    assert (str(t.script), LEAK_LINE + 1) not in leaks  # the churn next to it
    # The watcher stopped by itself and the service carries on, no longer traced.
    t.assert_running()
    state = t.wait_for_state(newer_than=t.state()["tick"])
    assert not state["tracing"] and "heaptrail-watcher" not in state["threads"], state


# ---- attach / snapshot / detach, borrowing this heaptrail ------------------------------------

def test_attach_snapshot_detach_in_a_process_without_heaptrail(target, tmp_path):
    python = base_python()
    # -S: no site-packages at all, so heaptrail can only come from this CLI's installation.
    t = target(python=python, options=["-S"])
    before = t.state()
    assert not before["heaptrail_imported"]

    out = heaptrail_cli("attach", str(t.pid), "--interval", "0.5")
    assert out.returncode == 0, t.explain(out)
    assert "(borrowed from this heaptrail's installation)" in out.stdout, out.stdout
    assert f"heaptrail detach {t.pid}" in out.stdout
    state = t.wait_for_state(newer_than=t.state()["tick"])
    assert state["tracing"] and "heaptrail-watcher" in state["threads"], state
    assert state["sys_path"] == before["sys_path"]  # the borrowed path was removed again

    again = heaptrail_cli("attach", str(t.pid))
    assert again.returncode == 1
    assert f"heaptrail attach: heaptrail attach is already watching process {t.pid}" in again.stderr
    assert f"heaptrail detach {t.pid}" in again.stderr

    time.sleep(4)
    snap = tmp_path / "live.heaptrail"
    out = heaptrail_cli("snapshot", str(t.pid), "-o", str(snap))
    assert out.returncode == 0, t.explain(out)
    assert f"wrote {snap} from process {t.pid}" in out.stdout
    stats = heaptrail.Snapshot.load(str(snap)).statistics("lineno")
    top = [(s.traceback[0].filename, s.traceback[0].lineno) for s in stats[:3]]
    assert (str(t.script), LEAK_LINE) in top, stats[:5]

    out = heaptrail_cli("detach", str(t.pid))
    assert out.returncode == 0, t.explain(out)
    assert f"stopped watching process {t.pid}" in out.stdout
    assert f"heaptrail [pid {t.pid}]: " in out.stdout  # the verdicts of the last window
    assert f"{t.script}:{LEAK_LINE}" in out.stdout, out.stdout
    t.assert_running()
    state = t.wait_for_state(newer_than=t.state()["tick"])
    assert not state["tracing"] and "heaptrail-watcher" not in state["threads"], state

    out = heaptrail_cli("detach", str(t.pid))
    assert out.returncode == 1
    assert f"heaptrail detach: heaptrail attach is not watching process {t.pid}" in out.stderr
    out = heaptrail_cli("snapshot", str(t.pid), "-o", str(tmp_path / "none.heaptrail"))
    assert out.returncode == 1
    assert f"heaptrail is not tracing process {t.pid}" in out.stderr
    assert not (tmp_path / "none.heaptrail").exists()

    # Attaching again after a detach starts a fresh watcher.
    out = heaptrail_cli("attach", str(t.pid), "--interval", "0.5", "--duration", "1")
    assert out.returncode == 0, t.explain(out)
    t.assert_running()


def test_threaded_http_service(target, tmp_path):
    """The bundled example service: a thread per request (threads start and end while heaptrail
    attaches), its main thread in serve_forever()."""
    service = Path(__file__).resolve().parent.parent / "examples" / "leaky_service.py"
    t = target(program=service.read_text(), argv=["--seconds", "120"])
    time.sleep(1)
    report = tmp_path / "report.jsonl"
    out = heaptrail_cli("attach", str(t.pid), "--interval", "0.5", "--report", str(report))
    assert out.returncode == 0, t.explain(out)
    for i in range(3):
        time.sleep(1.5)
        snap = tmp_path / f"s{i}.heaptrail"
        out = heaptrail_cli("snapshot", str(t.pid), "-o", str(snap))
        assert out.returncode == 0, t.explain(out)
    stats = heaptrail.Snapshot.load(str(snap)).statistics("lineno")
    assert (str(t.script), 37) in [(s.traceback[0].filename, s.traceback[0].lineno)
                                   for s in stats[:3]], stats[:5]
    # The verdict comes when the windows show enough growth: on a loaded machine the service
    # serves fewer requests per window, and ten windows were once not enough evidence for
    # "leak" (it said "suspect"). Wait for it, not for a number of windows.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        # Whole lines only: the watcher may be appending the next one.
        lines = report.read_text().split("\n")[:-1] if report.exists() else []
        last = json.loads(lines[-1]) if lines else {"sites": []}
        if any((s["filename"], s["lineno"], s["verdict"]) == (str(t.script), 37, "leak")
               for s in last["sites"]):
            break
        time.sleep(0.5)
    out = heaptrail_cli("detach", str(t.pid))
    assert out.returncode == 0, t.explain(out)
    assert f"LEAK at {t.script}:37 in render_order: " in out.stdout, out.stdout
    assert "held by __main__._rendered_orders" in out.stdout
    t.assert_running()


# A busy multi-threaded service: workers allocate and free in tight loops, one blocks in
# I/O waits, threads start and end all the time, and the main thread reports progress.
BUSY = TARGET.replace("""i = 0
while True:""", """import queue, socket
jobs = queue.Queue()

def worker(n):
    while True:
        batch = [{"id": j, "name": f"item-{j}", "tags": [n, j]} for j in range(200)]
        jobs.put(len(batch))
        del batch

def waiter():
    left, right = socket.socketpair()
    while True:
        left.settimeout(0.01)
        try:
            left.recv(1)
        except OSError:
            pass

def short_lived():
    while True:
        t = threading.Thread(target=lambda: [bytes(64) for _ in range(100)])
        t.start()
        t.join()
        while not jobs.empty():
            jobs.get_nowait()

for n in range(3):
    threading.Thread(target=worker, args=(n,), daemon=True).start()
threading.Thread(target=waiter, daemon=True).start()
threading.Thread(target=short_lived, daemon=True).start()
i = 0
while True:""")


def test_repeated_attach_snapshot_detach_never_harms_a_busy_threaded_target(target, tmp_path):
    """attach -> snapshot -> detach, over and over, against a target whose threads allocate
    without pause: it must stay alive, never stopped, and keep making progress each round."""
    t = target(program=BUSY)
    for round_ in range(4):
        out = heaptrail_cli("attach", str(t.pid), "--interval", "0.3")
        assert out.returncode == 0, t.explain(out)
        t.assert_running()
        time.sleep(0.5)
        snap = tmp_path / f"r{round_}.heaptrail"
        out = heaptrail_cli("snapshot", str(t.pid), "-o", str(snap))
        assert out.returncode == 0, t.explain(out)
        assert heaptrail.Snapshot.load(str(snap)).traces, "the snapshot has traces"
        out = heaptrail_cli("detach", str(t.pid))
        assert out.returncode == 0, t.explain(out)
        t.assert_running()
    state = t.wait_for_state(newer_than=t.state()["tick"])
    assert not state["tracing"], state


# Computes the same float sums and digests over and over, in its main thread (between sleeps
# of 1 ms: stopped inside a system call most of the time) and in a worker, and exits 3 if one
# ever differs: registers the interrupted code was using (SSE/AVX included) must come back
# exactly, and an interrupted sleep must be restarted, never fail.
STEADY = TARGET.replace("""i = 0
while True:""", """import hashlib, math, zlib
DATA = bytes(range(256)) * 512
XS = [k * 0.1 for k in range(500)]
EXPECTED = (hashlib.sha256(DATA).hexdigest(), zlib.crc32(DATA), sum(XS), math.fsum(XS))

def check():
    if (hashlib.sha256(DATA).hexdigest(), zlib.crc32(DATA), sum(XS), math.fsum(XS)) != EXPECTED:
        print("registers corrupted", file=sys.stderr, flush=True)
        os._exit(3)

def worker():
    while True:
        check()

threading.Thread(target=worker, daemon=True).start()
i = 0
while True:
    check()""")


def test_queueing_pending_calls_never_disturbs_the_target(target):
    """The step attach takes inside the target (stop its main thread, call into it, give it
    back), hundreds of times: the target's computations and its sleeps must never notice.
    (gdb 13, used before, could not write the register state back on CPUs with AMX: an
    interrupted time.sleep() then failed with OSError errno 514 and the service died.)"""
    t = target(program=STEADY)
    queued = 0
    for _ in range(300):
        answer = heaptrail._native._queue_pending_call(t.pid, b"pass", 10.0)
        assert answer.get("error") is None, answer
        assert answer["version"] >> 16 == sys.version_info[0] << 8 | sys.version_info[1]
        queued += answer["queued"]
        assert t.process.poll() is None, t.process.stderr.read().decode()
        time.sleep(0.002)
    assert queued >= 250, "the target runs its pending calls and the queue has room again"
    t.assert_running()


# A service whose windows take a while (thousands of live sites to classify) and that writes
# its own numbered output lines: detach must land in the middle of windows without changing that
# output or cutting a report line.
MANY_SITES = TARGET.replace("""i = 0
while True:""", """OUT = open(sys.argv[2], "w", buffering=1)
kept = []
for n in range(3000):  # 3000 distinct live sites: each window has work to do
    exec(compile("def make():\\n    return ['x%d' * 4 for _ in range(3)]\\n" % n,
                 f"<site-{n}>", "exec"), globals())
    kept.append(make())
i = 0
while True:
    if i % 10 == 0:
        OUT.write(f"line {i // 10}\\n")""")


def test_detach_in_the_middle_of_windows_keeps_the_report_and_the_output_whole(target, tmp_path):
    output, report = tmp_path / "service.out", tmp_path / "report.jsonl"
    t = target(program=MANY_SITES, argv=[str(output)])
    for round_ in range(3):
        out = heaptrail_cli("attach", str(t.pid), "--interval", "0.02", "--report", str(report))
        assert out.returncode == 0, t.explain(out)
        time.sleep(0.3 + 0.2 * round_)
        out = heaptrail_cli("detach", str(t.pid))
        assert out.returncode == 0, t.explain(out)
        t.assert_running()
    data = report.read_text()
    assert data.endswith("\n"), "the last window is whole"
    windows = [json.loads(line) for line in data.splitlines()]  # every line is a whole window
    assert len(windows) >= 3 and {w["schema"] for w in windows} == {"heaptrail.watch/2"}
    t.wait_for_state(newer_than=t.state()["tick"])
    lines = output.read_text().splitlines()
    assert lines == [f"line {n}" for n in range(len(lines))], "the service's output is its own"
    assert t.process.poll() is None
    t.process.kill()
    t.process.wait()
    noise = [line for line in t.process.stderr.read().decode().splitlines()
             if not line.startswith("heaptrail: ")]
    assert noise == [], "nothing but the heaptrail logger's lines reaches the service's stderr"


def test_snapshot_and_detach_in_a_process_under_heaptrail_run(target, tmp_path):
    t = target(python=HEAPTRAIL[0], options=["-m", "heaptrail", "run", "--interval", "0.5",
                                               "--", sys.executable])
    pid = _python_child(t.pid)
    try:
        _under_heaptrail_run(t, pid, tmp_path)
    finally:
        os.kill(pid, signal.SIGKILL)  # killing `heaptrail run` does not end its child


def _under_heaptrail_run(t, pid, tmp_path):
    out = heaptrail_cli("attach", str(pid))
    assert out.returncode == 1
    assert "a heaptrail watcher already runs in this process" in out.stderr
    assert "add --replace" in out.stderr
    out = heaptrail_cli("snapshot", str(pid), "-o", str(tmp_path / "run.heaptrail"))
    assert out.returncode == 0, out.stderr
    assert heaptrail.Snapshot.load(str(tmp_path / "run.heaptrail")).traces
    out = heaptrail_cli("detach", str(pid))
    assert out.returncode == 1
    assert "started by `heaptrail run` or heaptrail.watch()" in out.stderr
    t.assert_running()


def _python_child(pid):
    """The service process `heaptrail run` started (its only child)."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        children = f.read().split()
    assert len(children) == 1, children
    return int(children[0])


# ---- failures: clear message, non-zero exit, the target keeps running -------------------------

def test_process_that_does_not_exist():
    require_attach()
    out = heaptrail_cli("attach", "4194304")  # above the largest possible PID
    assert out.returncode == 1
    assert out.stderr == "heaptrail attach: no process with PID 4194304\n"
    for bad in ("abc", "0", "-5"):
        out = heaptrail_cli("snapshot", "-o", "x", "--", bad)
        assert out.returncode == 2, bad
        assert "PID must be a positive process id" in out.stderr


def test_not_a_python_process():
    require_attach()
    sleeper = subprocess.Popen(["sleep", "100"])
    try:
        out = heaptrail_cli("attach", str(sleeper.pid))
        assert out.returncode == 1
        sleep = os.path.realpath(shutil.which("sleep"))
        assert f"process {sleeper.pid} ({sleep}) is not a Python process" \
            in out.stderr, out.stderr
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_python_version_without_heaptrail(target):
    python = other_pyenv_python()
    t = target(python=python, options=["-I", "-S"])
    out = heaptrail_cli("attach", str(t.pid))
    assert out.returncode == 1
    message = out.stderr
    assert message.startswith(f"heaptrail attach: heaptrail is not importable in process {t.pid} ")
    assert "No module named 'heaptrail'" in message
    mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert f"This heaptrail runs on Python {mine} and cannot be loaded" in message
    assert f"{python} -m pip install heaptrail" in message
    t.assert_running()
    assert not t.state()["heaptrail_imported"]


def test_unsupported_python_version(target):
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found = sorted(glob.glob(f"{root}/versions/3.10.*/bin/python3.10"))
    if not found:
        pytest.skip("needs a pyenv CPython 3.10")
    t = target(python=found[-1])
    out = heaptrail_cli("attach", str(t.pid))
    assert out.returncode == 1
    assert "runs Python 3.10; heaptrail attach supports 3.11 to 3.13" in out.stderr, out.stderr
    t.assert_running()


def test_detach_when_not_attached(target):
    t = target()
    out = heaptrail_cli("detach", str(t.pid))
    assert out.returncode == 1
    assert out.stderr == (f"heaptrail detach: heaptrail attach is not watching process "
                          f"{t.pid}\n")
    t.assert_running()
    assert not t.state()["heaptrail_imported"]  # detach never imports heaptrail


BLOCKED = '''\
import json, sys, threading, time
cache = []

def worker():
    while True:
        cache.append(bytearray(100))  # LEAK
        time.sleep(0.002)

if sys.argv[3] == "worker":
    threading.Thread(target=worker, daemon=True).start()
# The main thread is blocked in C. (Not in a lock's acquire(): a wait there that ends with EINTR,
# as one may after a ptrace stop, runs pending calls at once.)
time.sleep(float(sys.argv[2]))
time.sleep(1)  # now it runs Python code: a pending call would run here
with open(sys.argv[1], "w") as f:
    json.dump({"heaptrail_imported": "heaptrail" in sys.modules,
               "threads": [t.name for t in threading.enumerate()]}, f)
time.sleep(100)
'''
BLOCKED_LEAK_LINE = next(n for n, line in enumerate(BLOCKED.splitlines(), 1) if "# LEAK" in line)


def test_request_is_withdrawn_when_no_thread_runs_python_code(target):
    t = target(program=BLOCKED, argv=["4", "alone"])
    time.sleep(0.5)
    started = time.monotonic()
    out = heaptrail_cli("attach", str(t.pid), "--timeout", "1.5")
    assert out.returncode == 1
    assert f"{remote.Target(t.pid).describe()} has not run Python code in its main thread " \
        f"for 1.5 s" in out.stderr, out.stderr
    assert "The request was withdrawn" in out.stderr
    assert time.monotonic() - started < 10
    # When the main thread runs Python code again, the withdrawn request does nothing.
    deadline = time.monotonic() + 15
    while t.state() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert t.state() == {"heaptrail_imported": False, "threads": ["MainThread"]}
    t.assert_running()


def test_main_thread_blocked_while_a_worker_leaks(target):
    """3.12+ also queue the request for any thread; 3.11 runs pending calls only in the main
    thread, so there the request is withdrawn."""
    t = target(program=BLOCKED, argv=["100", "worker"])
    time.sleep(0.5)
    out = heaptrail_cli("attach", str(t.pid), "--timeout", "3", "--interval", "0.5",
                        "--duration", "7")
    if sys.version_info < (3, 12):
        assert out.returncode == 1
        assert "The request was withdrawn" in out.stderr
    else:
        assert out.returncode == 0, t.explain(out)
        assert f"LEAK at {t.script}:{BLOCKED_LEAK_LINE} in worker: " in out.stdout, out.stdout
    t.assert_running()


def test_process_already_traced_by_a_debugger(target):
    require("gdb")
    t = target()
    holder = subprocess.Popen(["gdb", "-p", str(t.pid), "-batch", "-nx", "-q",
                               "-ex", "shell sleep 4"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while remote.Target(t.pid).tracer == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        out = heaptrail_cli("attach", str(t.pid))
        assert out.returncode == 1
        assert f"not permitted to trace process {t.pid}" in out.stderr
        assert f"process {holder.pid} is already tracing it" in out.stderr, out.stderr
    finally:
        holder.wait(timeout=30)
    t.assert_running()


def test_process_of_another_user(target):
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run heaptrail as another user")
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if subprocess.run([*nobody, sys.executable, "-c", "import heaptrail"],
                      capture_output=True).returncode != 0:
        pytest.skip("user nobody cannot run this virtualenv's python")
    t = target()
    out = subprocess.run([*nobody, *HEAPTRAIL, "attach", str(t.pid)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1
    assert f"not permitted to trace process {t.pid}" in out.stderr
    assert "it belongs to uid 0; run heaptrail as that user or as root (sudo)" in out.stderr
    t.assert_running()


def test_attach_needs_no_debugger(target, tmp_path):
    t = target()
    bin_dir = tmp_path / "bin"  # a PATH with no gdb, no lldb, nothing
    bin_dir.mkdir()
    env = dict(os.environ, PATH=str(bin_dir))
    out = heaptrail_cli("attach", str(t.pid), "--interval", "0.3", "--duration", "1", env=env)
    assert out.returncode == 0, t.explain(out)
    t.assert_running()


@pytest.mark.parametrize("args, message", [
    (["attach", "1", "--interval", "0"], "interval must be > 0 seconds"),
    (["attach", "1", "--duration", "-1"], "--duration must be a positive number of seconds"),
    (["attach", "1", "--timeout", "nan"], "--timeout must be a positive number of seconds"),
    (["snapshot", "1", "-o", "/nonexistent-dir/x.heaptrail"], "no such directory"),
])
def test_bad_options(args, message):
    out = heaptrail_cli(*args)
    assert out.returncode == 2
    assert message in out.stderr, out.stderr


def test_help_explains_the_safe_point():
    for command in ("attach", "detach", "snapshot"):
        out = heaptrail_cli(command, "--help")
        assert out.returncode == 0
        text = " ".join(out.stdout.split())
        assert "pending call" in text and "ptrace_scope" in text, command


# ---- the agent and its code, in this process ------------------------------------------------

def test_agent_code_binds_nothing_in_main_and_answers(tmp_path):
    """The code sent to a target, run here as a pending call would run it in __main__."""
    directory = tmp_path / "request"
    directory.mkdir()
    code = remote.build_code({"action": "snapshot", "dir": str(directory),
                              "cli_version": list(sys.version_info[:2])})
    assert code.isascii()
    main = {"__name__": "__main__", "__builtins__": __builtins__}
    exec(compile(code, "<string>", "exec"), main)
    assert set(main) == {"__name__", "__builtins__"}
    deadline = time.monotonic() + 10
    while not (directory / "status.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    status = json.loads((directory / "status.json").read_text())
    assert status["ok"] is False and status["error"] == "not-tracing"
    assert status["pid"] == os.getpid()
    # A request taken back by the CLI is not run.
    withdrawn = tmp_path / "withdrawn"
    withdrawn.mkdir()
    (withdrawn / "claim").touch()
    exec(compile(remote.build_code({"action": "snapshot", "dir": str(withdrawn)}), "<s>", "exec"),
         {"__builtins__": __builtins__})
    time.sleep(0.5)
    assert sorted(os.listdir(withdrawn)) == ["claim"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), object(), b"bytes", {1: "x"}])
def test_only_literal_values_reach_the_target(value):
    with pytest.raises(TypeError):
        remote.build_code({"action": "attach", "dir": "/tmp", "x": value})


def test_python_version_hint_from_the_process_maps():
    assert remote.python_version_from_maps(remote.Target(os.getpid())) == sys.version_info[:2]
    with pytest.raises(Exception, match="no process"):
        remote.Target(4194304)
    assert remote.version_text(0x030B07F0) == "3.11.7"


def test_replace_switches_a_heaptrail_run_service_to_exact_and_back(target, tmp_path):
    # Production: the service runs under `heaptrail run --sample` (always on). A hunt: attach
    # --replace with exact tracing for a while; when it ends, the sampled watcher is back.
    run_report, hunt_report = tmp_path / "run.jsonl", tmp_path / "hunt.jsonl"
    t = target(python=HEAPTRAIL[0], options=["-m", "heaptrail", "run", "--interval", "0.5",
                                               "--sample", "64K", "--report", str(run_report),
                                               "--", sys.executable])
    pid = _python_child(t.pid)
    try:
        deadline = time.monotonic() + 30
        while not run_report.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        out = heaptrail_cli("attach", str(pid), "--replace", "--interval", "0.5", "--nframe",
                            "10", "--report", str(hunt_report), "--duration", "8")
        assert out.returncode == 0, out.stderr
        assert "the watcher of `heaptrail run` in process" in out.stdout, out.stdout
        assert "is watching again, with its own settings" in out.stdout, out.stdout
        assert f"LEAK at {t.script}:{LEAK_LINE} in handle: " in out.stdout, out.stdout
        hunt = [json.loads(line) for line in hunt_report.read_text().splitlines()]
        assert hunt and all(w.get("sample_rate") in (None, 0) for w in hunt), hunt[-1]
        ended = time.time()
        time.sleep(3)
        after = [w for w in map(json.loads, run_report.read_text().splitlines())
                 if w["pid"] == pid and w["time"] > ended]
        assert after and all(w["sample_rate"] == 64 * 1024 for w in after), after[-1:]
        t.assert_running()
    finally:
        os.kill(pid, signal.SIGKILL)  # killing `heaptrail run` does not end its child
