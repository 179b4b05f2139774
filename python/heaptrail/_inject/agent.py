"""The code `heaptrail attach / detach / snapshot` runs inside the target process.

The CLI does not import this module into the target: it sends this file's source, followed by a
call ``_agent_main(REQUEST)`` where REQUEST is a dict literal of str/int/float/bool/None values,
and the target runs it from a pending call (queued with ptrace) or ``sys.remote_exec`` (3.14+),
always in a fresh namespace. So this file must stand alone: the standard library, plus heaptrail's public API
(``watch``, ``take_snapshot``, ``is_tracing``) once imported in the target, which may have a
heaptrail of its own, of another version.

What the target does is reported back in JSON files in a directory the CLI created for this one
request ("status.json"; "final.json" when an attach with a duration ends). The pending call only
claims the request and starts a thread, so the target's main thread is held for microseconds;
everything slow (importing heaptrail, stopping a watcher, writing a snapshot) runs in that thread.
"""

import json
import os
import sys
import threading
import time

CLAIM = "claim"  # created with O_EXCL by whoever comes first: this agent, or the CLI giving up


def _agent_main(request):
    """Entry point, called in the target's main thread at a safe point."""
    directory = request["dir"]
    try:
        fd = os.open(os.path.join(directory, CLAIM), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
    except OSError:
        return  # the CLI timed out and withdrew this request (or its directory is gone)
    try:
        threading.Thread(target=_work, args=(request,), name="heaptrail-attach",
                         daemon=True).start()
    except BaseException as exc:  # noqa: BLE001 - nothing may escape into the target
        _write(directory, "status.json", _failure("internal", f"cannot start a thread: {exc!r}"))


def _work(request):
    try:
        result = ACTIONS[request["action"]](request)
    except BaseException as exc:  # noqa: BLE001
        result = _failure("internal", f"{type(exc).__name__}: {exc}")
    result.update(pid=os.getpid(), python=sys.version.split()[0], executable=sys.executable)
    _write(request["dir"], "status.json", result)


def _failure(kind, message, **extra):
    return dict(ok=False, error=kind, message=message, **extra)


def _write(directory, name, data):
    """Write JSON atomically (the CLI polls for the file); silently give up if the CLI is gone."""
    path = os.path.join(directory, name)
    temporary = path + ".tmp"
    try:
        fd = os.open(temporary, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out)
        os.replace(temporary, path)
    except OSError:
        pass


def _loaded_heaptrail():
    """heaptrail if this process has already imported it (never the stdlib tracemalloc, which
    heaptrail can stand in for), else None."""
    module = sys.modules.get("heaptrail")
    return module if getattr(module, "_heaptrail_", False) else None


def _import_heaptrail(request):
    """Import heaptrail in the target. If the target's own paths do not have it and it runs the
    CLI's Python version, borrow the CLI's installation: its folder is put on sys.path (after the
    target's own entries) just for the import, then removed; heaptrail's own modules are found
    through the package's __path__ afterwards, and it needs no other package."""
    module = _loaded_heaptrail()
    if module is not None:
        return module, None
    try:
        import heaptrail
        return heaptrail, None
    except ImportError as exc:
        first = f"{type(exc).__name__}: {exc}"
    request["borrowed"] = True
    fallback = request.get("fallback_path")
    same_python = (sys.implementation.name == "cpython"
                   and list(sys.version_info[:2]) == request.get("cli_version"))
    if not fallback or not same_python:
        return None, first
    sys.path.append(fallback)
    try:
        import heaptrail
        return heaptrail, None
    except ImportError as exc:
        return None, f"{first}; from {fallback}: {type(exc).__name__}: {exc}"
    finally:
        try:
            sys.path.remove(fallback)
        except ValueError:
            pass


def _ignore_this_thread(heaptrail):
    # The agent's own short-lived allocations are no part of the program being watched.
    ignore = getattr(getattr(heaptrail, "_native", None), "_ignore_current_thread", None)
    if ignore is not None:
        ignore(True)


def _other_watcher_running():
    return any(t.name == "heaptrail-watcher" and t.is_alive() for t in threading.enumerate())


def _attach(request):
    heaptrail, error = _import_heaptrail(request)
    if heaptrail is None:
        return _failure("not-importable", error, sys_path=list(sys.path))
    # Two attach requests at once must not start two watchers (setdefault is atomic).
    with heaptrail.__dict__.setdefault("_attach_lock", threading.Lock()):
        return _start_watcher(heaptrail, request)


def _run_watcher(heaptrail):
    """`heaptrail run`'s module in this process and its watcher, when that watcher runs."""
    child = sys.modules.get(heaptrail.__name__ + "._child")
    state = getattr(child, "_state", None) or {}
    watcher = state.get("watcher")
    if watcher is None or not getattr(watcher, "running", False) or state.get("pid") != os.getpid():
        return None, None
    return child, watcher


def _restore_run_watcher(child):
    """Restart `heaptrail run`'s watcher with its own settings (its verdict history starts
    afresh; its report file is appended to, as before)."""
    try:
        child._state["watcher"] = child.Watcher(child._state["settings"]).start()
    except Exception as exc:  # noqa: BLE001 - never break the target
        child._state["watcher"] = None
        import logging
        logging.getLogger("heaptrail").warning(
            "heaptrail: could not restart the watcher of `heaptrail run`: %s", exc)


def _start_watcher(heaptrail, request):
    state = getattr(heaptrail, "_attached", None)
    if state is not None and not state["finished"]:
        return _failure("already-attached", "heaptrail attach is already watching this process",
                        since=state["since"], settings=state["settings"])
    replaced = None
    if _other_watcher_running():
        child, running = _run_watcher(heaptrail)
        if not request.get("replace") or running is None:
            return _failure("already-watching", "a heaptrail watcher already runs in this process "
                            "(started by `heaptrail run` or heaptrail.watch())",
                            replaceable=running is not None)
        # `heaptrail run`'s watcher (say, sampled and always on) steps aside for this one (say,
        # exact with deeper frames, for a hunt) and is restarted when this one stops.
        _ignore_this_thread(heaptrail)
        running.stop()
        replaced = child
    _ignore_this_thread(heaptrail)
    settings = request["settings"]
    tracing_before = heaptrail.is_tracing()
    try:
        watcher = heaptrail.watch(**settings)
    except (OSError, ValueError, TypeError) as exc:
        if replaced is not None:
            _restore_run_watcher(replaced)
        return _failure("watch-failed", f"{type(exc).__name__}: {exc}")
    if replaced is not None:
        replaced._state["watcher"] = watcher  # its exit summary reports the watcher running
    state = {"watcher": watcher, "since": time.time(), "settings": settings,
             "duration": request.get("duration"), "lock": threading.Lock(),
             "stop": threading.Event(), "finished": None, "replaced": replaced}
    heaptrail._attached = state
    if state["duration"]:
        threading.Thread(target=_stop_after_duration, args=(heaptrail, state, request["dir"]),
                         name="heaptrail-attach-timer", daemon=True).start()
    return dict(ok=True, heaptrail=os.path.dirname(heaptrail.__file__),
                heaptrail_version=getattr(heaptrail, "__version__", "?"),
                borrowed=bool(request.get("borrowed")),
                tracing_before=tracing_before, replaced=replaced is not None)


def _stop_after_duration(heaptrail, state, directory):
    _ignore_this_thread(heaptrail)
    stopped_early = state["stop"].wait(state["duration"])
    result = _finish(heaptrail, state, "detached" if stopped_early else "duration")
    _write(directory, "final.json", result)


def _finish(heaptrail, state, reason):
    """Stop the attached watcher once; every caller gets the same summary."""
    with state["lock"]:
        if state["finished"] is None:
            watcher = state["watcher"]
            # The last regular window, as at the exit of `heaptrail run`: one taken now would
            # only add a partial window.
            report = watcher.report or watcher.check_now()
            # (`windows` is newer than `history`, which keeps only the last windows.)
            windows = getattr(watcher, "windows", None) or len(watcher.history)
            watcher.stop()
            if state.get("replaced") is not None:
                _restore_run_watcher(state["replaced"])
            state["finished"] = dict(ok=True, reason=reason, windows=windows,
                                     summary=_summary(heaptrail, report, windows),
                                     seconds=round(time.time() - state["since"], 1),
                                     pid=os.getpid(),
                                     restored=state.get("replaced") is not None)
            heaptrail._attached = None
        return state["finished"]


def _summary(heaptrail, report, windows):
    try:
        from heaptrail._child import summary_lines
    except ImportError:  # another heaptrail version: the verdict counts at least
        if report is None:
            return [f"heaptrail [pid {os.getpid()}]: no window was taken"]
        leaks = [f"{s['filename']}:{s['lineno']}" for s in report["sites"]
                 if s["verdict"] == "leak"]
        return [f"heaptrail [pid {os.getpid()}]: {windows} windows; "
                f"leaks: {', '.join(leaks) or 'none'}"]
    return summary_lines(report, windows)


def _detach(request):
    heaptrail = _loaded_heaptrail()
    state = getattr(heaptrail, "_attached", None) if heaptrail else None
    if state is None or state["finished"]:
        return _failure("not-attached", "heaptrail attach is not watching this process",
                        other_watcher=_other_watcher_running())
    _ignore_this_thread(heaptrail)
    state["stop"].set()
    return _finish(heaptrail, state, "detached")


def _snapshot(request):
    heaptrail = _loaded_heaptrail()
    if heaptrail is None or not heaptrail.is_tracing():
        return _failure("not-tracing", "heaptrail is not tracing this process")
    _ignore_this_thread(heaptrail)
    snapshot = heaptrail.take_snapshot()
    path = os.path.join(request["dir"], "snapshot.heaptrail")
    try:
        snapshot.dump(path)
    except OSError as exc:
        return _failure("snapshot-failed", f"cannot write the snapshot: {exc}")
    traced, _peak = heaptrail.get_traced_memory()
    return dict(ok=True, file="snapshot.heaptrail", traces=len(snapshot.traces),
                traced_bytes=traced, traceback_limit=snapshot.traceback_limit)


ACTIONS = {"attach": _attach, "detach": _detach, "snapshot": _snapshot}
