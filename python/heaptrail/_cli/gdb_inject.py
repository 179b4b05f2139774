"""Run by gdb's own Python (``gdb -p PID -batch -x gdb_inject.py``), never imported by heaptrail.

With every thread of the target stopped, it reads the target's Python version and, if asked to,
queues a pending call: ``Py_AddPendingCall(PyRun_SimpleString, code)``. The interpreter runs
pending calls in its main thread, between two bytecodes, holding the GIL: a point where running
Python code is safe. Here, in the stopped process, only two functions are called, neither of
which allocates: ``mmap`` (a system call) for a page to hold the code, which gdb then writes
there, and ``Py_AddPendingCall`` (a short lock and a store into a fixed array). malloc is never
called from here: a thread may be stopped inside it, holding its lock.

Input: environment variables HEAPTRAIL_GDB_PAYLOAD (hex of the code; empty: only report the
version). Output: one line ``HEAPTRAIL-GDB {json}`` on stdout. gdb detaches when this script
ends (or when gdb dies), and the target carries on.
"""

import json
import os
import platform

import gdb

MARK = "HEAPTRAIL-GDB "
PROT_READ = 0x1
MAP_PRIVATE, MAP_ANONYMOUS = 0x02, 0x20
FUTEX = {"x86_64": (202,), "aarch64": (98,)}  # futex's system call number per machine


def emit(**result):
    print(MARK + json.dumps(result), flush=True)


def value(expression):
    return int(gdb.parse_and_eval(expression))


def has_symbol(name):
    try:
        value(f"(long)&{name}")
        return True
    except gdb.error as exc:
        if "No symbol" not in str(exc):
            raise
        return False


def main():
    inferior = gdb.selected_inferior()
    if inferior is None or inferior.pid == 0:
        emit(error="not-attached")
        return
    # Work from the main thread (a thread id equal to the process id): it lives as long as the
    # process, while gdb may have picked a thread that is exiting; and pending calls run there.
    for thread in inferior.threads():
        if thread.ptid[1] == inferior.pid:
            thread.switch()
    # Py_Version (PY_VERSION_HEX) is exported from 3.11 on; older or non-Python processes lack it.
    try:
        version = value("*(unsigned long *)&Py_Version") & 0xFFFFFFFF
    except gdb.error as exc:
        if "No symbol" not in str(exc):
            raise
        emit(error="old-python" if has_symbol("Py_Initialize") else "not-python")
        return
    payload = bytes.fromhex(os.environ.get("HEAPTRAIL_GDB_PAYLOAD", ""))
    if not payload:
        emit(version=version)
        return
    if not 0x030B0000 <= version < 0x030E0000:
        emit(version=version, error="unsupported")
        return
    if value("((int (*)(void))Py_IsInitialized)()") == 0:
        emit(version=version, error="not-initialized")
        return
    size = (len(payload) + 1 + 4095) // 4096 * 4096
    address = value(f"((void *(*)(void *, unsigned long, int, int, int, long))mmap)"
                    f"(0, {size}, {PROT_READ}, {MAP_PRIVATE | MAP_ANONYMOUS}, -1, 0)")
    if address in (0, (1 << 64) - 1, -1):
        emit(version=version, error="mmap-failed")
        return
    # The page is read-only for the target; gdb writes through ptrace.
    inferior.write_memory(address, payload + b"\0")
    run = value("(long)&PyRun_SimpleString")
    queued = value(f"((int (*)(void *, void *))Py_AddPendingCall)({run}, {address})")
    # Py_AddPendingCall's calls wait for the main thread. If it is blocked in a system call (a
    # long sleep, joining workers), 3.12+ can also queue the same call for whichever thread
    # runs bytecode first (flag 0: any thread), through the internal but exported
    # _PyEval_AddPendingCall. The code runs once: the first to run claims the request, the
    # other finds it claimed and does nothing. Only from a main thread blocked in a system call:
    # then it holds no lock the call takes. 3.13's version also takes the GIL's internal mutex,
    # which a thread holds while it wakes another through a futex: not from a futex call there
    # (a hang seen in testing; gdb would unwind it after the CLI's timeout, but slowly).
    any_thread = False
    call = system_call(inferior.pid)
    if queued == 0 and version >= 0x030C0000 and call is not None \
            and (version < 0x030D0000 or call not in FUTEX.get(platform.machine(), (call,))) \
            and has_symbol("_PyEval_AddPendingCall"):
        interp = value("((void *(*)(void))PyInterpreterState_Main)()")
        any_thread = value(f"((int (*)(void *, void *, void *, int))_PyEval_AddPendingCall)"
                           f"({interp}, {run}, {address}, 0)") == 0
    emit(version=version, queued=queued == 0, any_thread=any_thread, address=address, size=size)


def system_call(pid):
    """The number of the system call the (stopped) main thread is in, or None."""
    try:
        with open(f"/proc/{pid}/task/{pid}/syscall") as f:
            first = f.read().split()[:1]
    except OSError:
        return None
    return int(first[0]) if first and first[0].isdigit() else None


try:
    # Expressions below are C; otherwise gdb parses them in the language of the stopped frame,
    # e.g. Rust when a thread is in heaptrail's own extension.
    gdb.execute("set language c")
    gdb.execute("set confirm off")
    gdb.execute("set pagination off")
    # If anything goes wrong inside a called function (a signal, or the CLI interrupting a call
    # that hangs), gdb restores the thread's state instead of leaving it in the called frame.
    gdb.execute("set unwindonsignal on")
    main()
except gdb.error as exc:
    emit(error="gdb", message=str(exc))
except Exception as exc:  # noqa: BLE001 - report, then let gdb detach
    emit(error="gdb", message=f"{type(exc).__name__}: {exc}")
