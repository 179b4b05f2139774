"""What heaptrail does inside a process started by `heaptrail run`: trace from start-up, take
a baseline snapshot once warm-up is over, and at exit report the lines whose live memory grew
since the baseline, with the traceback of the biggest grower."""

import atexit
import os
import sys
import threading
import time

from . import _native, is_tracing, start, take_snapshot
from ._classes import _format_size
from ._settings import Settings

_state = {}


def start_from_environment():
    settings = Settings.from_environment()
    start(settings.nframe)
    _state.update(settings=settings, started=time.monotonic(), pid=os.getpid(),
                  first_pid=os.getpid())
    threading.Thread(target=_take_baseline, name="heaptrail-baseline", daemon=True).start()
    atexit.register(_report_at_exit)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_restart_in_child)


def _restart_in_child():
    # A forked worker inherits the traces but not the baseline thread: start over.
    _state.update(started=time.monotonic(), pid=os.getpid(), baseline=None)
    threading.Thread(target=_take_baseline, name="heaptrail-baseline", daemon=True).start()


def _take_baseline():
    _native._ignore_current_thread(True)  # heaptrail's own thread: its objects are not traced
    time.sleep(_state["settings"].warmup)
    if is_tracing():
        _state["baseline"] = (time.monotonic(), take_snapshot())


def _report_at_exit():
    if not is_tracing() or os.getpid() != _state.get("pid"):
        return
    settings = _state["settings"]
    lines = _growth_report(settings)
    text = "\n".join(lines) + "\n"
    if settings.report:
        # Forked workers write next to the parent's report, suffixed with their pid.
        path = settings.report if os.getpid() == _state["first_pid"] else f"{settings.report}.{os.getpid()}"
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stderr.write(text)


def _growth_report(settings):
    pid = os.getpid()
    baseline = _state.get("baseline")
    now = time.monotonic()
    final = take_snapshot()
    traced, peak = _native.get_traced_memory()
    head = (f"heaptrail [pid {pid}]: traced {_format_size(traced, False)} live "
            f"(peak {_format_size(peak, False)}) in {_native.get_trace_count()} blocks")
    if baseline is None:
        return [head, f"heaptrail [pid {pid}]: exited before the {settings.warmup:g} s warm-up "
                      f"ended; no growth to report"]
    since, base = baseline
    seconds = max(now - since, 1e-9)
    growers = [d for d in final.compare_to(base, "lineno") if d.size_diff > 0][: settings.top]
    lines = [head, f"heaptrail [pid {pid}]: top {len(growers)} growing lines over the last "
                   f"{seconds:.1f} s (after {settings.warmup:g} s warm-up):"]
    for rank, d in enumerate(growers, 1):
        lines.append(f"  #{rank} {d}  [{_format_size(d.size_diff / seconds, True)}/s]")
    if growers:
        biggest = growers[0].traceback[0]
        full = [t for t in final.traces if t.traceback[-1] == biggest]
        if full:
            lines.append("  traceback of #1 (most recent call last):")
            lines.extend("  " + line for line in full[0].traceback.format())
    return lines
