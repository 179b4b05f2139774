"""heaptrail: find memory leaks in long-running Python processes.

This module is a drop-in replacement for the standard library's ``tracemalloc``::

    import heaptrail as tracemalloc

gives the same functions, classes, output and errors, backed by a Rust engine that traces
allocations and analyses snapshots much faster. Snapshot files use heaptrail's own safe
format (never pickle); :func:`load_tracemalloc_dump` and ``Snapshot.from_tracemalloc`` /
``Snapshot.to_tracemalloc`` convert from and to the standard library.
"""

import linecache  # noqa: F401  (tracemalloc exposes it; tests patch tracemalloc.linecache)
import os
import sys

from . import _native
from ._classes import Frame, Statistic, StatisticDiff, Trace, Traceback
from ._classes import _format_size as _format_size  # tracemalloc's private names, which
# code written for tracemalloc (and CPython's own tests) reaches for
from ._filters import BaseFilter, DomainFilter, Filter
from ._filters import _normalize_filename as _normalize_filename
from ._native import (
    _get_object_traceback,
    _get_traces,
    clear_traces,
    get_trace_count,
    get_traceback_limit,
    get_traced_memory,
    get_tracemalloc_memory,
    is_tracing,
    get_sample_rate,
    reset_peak,
    stop,
)
from ._snapshot import Snapshot, SnapshotFileError
from ._snapshot import _Traces as _Traces
from ._settings import sample_bytes
from ._stdlib import load_tracemalloc_dump
from ._watcher import Watcher, watch

__all__ = [
    # the tracemalloc API
    "BaseFilter", "DomainFilter", "Filter", "Frame", "Snapshot", "Statistic", "StatisticDiff",
    "Trace", "Traceback", "clear_traces", "get_object_traceback", "get_traceback_limit",
    "get_traced_memory", "get_tracemalloc_memory", "is_tracing", "reset_peak", "start", "stop",
    "take_snapshot",
    # heaptrail's additions
    "DEFAULT_SAMPLE_RATE", "SnapshotFileError", "Watcher", "get_sample_rate", "get_trace_count",
    "load_tracemalloc_dump", "watch",
]

DEFAULT_SAMPLE_RATE = _native.DEFAULT_SAMPLE_RATE


def start(nframe=1, *, sample=None):
    """Start tracing Python memory allocations, keeping up to ``nframe`` frames per
    traceback (as tracemalloc.start).

    ``sample``: None (default) traces every allocation, exactly as tracemalloc does. A number
    of bytes R (or True for DEFAULT_SAMPLE_RATE, 512 KiB) samples by bytes: a sample point
    every R bytes allocated on average, each allocation that holds one is traced and stands
    for the blocks and bytes it represents, so sizes and counts (get_traced_memory,
    snapshots, statistics, the watcher) are unbiased estimates at a fraction of the cost.
    The mode cannot change while tracing: stop() first (RuntimeError otherwise)."""
    _native.start(nframe, sample_bytes(sample) or 0)

__version__ = _native.__version__  # Cargo.toml's, the wheel's
_heaptrail_ = True  # lets heaptrail tell itself apart from the stdlib module it can stand in for
_Frame = Frame  # name used by CPython's own tracemalloc tests


def take_snapshot():
    """Take a snapshot of the traces of the memory blocks allocated by Python."""
    # Looked up as module globals on purpose: code (and CPython's tests) may patch them.
    if not is_tracing():
        raise RuntimeError("the tracemalloc module must be tracing memory "
                           "allocations to take a snapshot")
    traces = _get_traces()
    traceback_limit = get_traceback_limit()
    return Snapshot(traces, traceback_limit)


def get_object_traceback(obj):
    """The Traceback where ``obj`` was allocated, or None if it was not traced."""
    frames = _get_object_traceback(obj)
    return None if frames is None else Traceback(frames)


def _take_over_startup_tracing():
    """Honour ``PYTHONTRACEMALLOC`` / ``-X tracemalloc`` the way tracemalloc does: the
    interpreter started its own tracer before heaptrail could load, so hand tracing over to
    heaptrail (same frame limit) instead of paying for two tracers."""
    requested = "tracemalloc" in sys._xoptions or (
        not sys.flags.ignore_environment and os.environ.get("PYTHONTRACEMALLOC", "0") not in ("", "0"))
    if not requested:
        return
    import _tracemalloc

    if _tracemalloc.is_tracing() and not is_tracing():
        nframe = _tracemalloc.get_traceback_limit()
        _tracemalloc.stop()
        start(nframe)


def _stop_at_exit():
    # Stop before the interpreter tears down the objects the tracer holds (code objects).
    if is_tracing():
        stop()


import atexit as _atexit  # noqa: E402

_atexit.register(_stop_at_exit)
_take_over_startup_tracing()
