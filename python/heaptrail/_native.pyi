"""Types of `heaptrail._native`, the PyO3 extension (crates/heaptrail-python/src).

Written by hand from the Rust `#[pyfunction]`s, `#[pyclass]`es and `m.add(...)` constants;
tests/test_native_stub.py runs mypy's stubtest against the built module, so a function, class,
method, argument or constant added, removed or renamed on either side fails the tests.

Rust's `Vec<T>` arguments take any sequence except `str` (typed `Sequence[T]` here), `PathBuf`
arguments a `str` or `os.PathLike`, `&[u8]` only `bytes`.
"""

import os
import sys
import types
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal, TypedDict, final, overload

_Path = str | os.PathLike[str]
_Frames = tuple[tuple[str, int], ...]
"""`((filename, lineno), ...)`, most recent first."""
_RawTrace = tuple[int, int, _Frames] | tuple[int, int, _Frames, int | None]
"""stdlib's raw trace: `(domain, size, frames[, total_nframe])`."""
_FilterSpec = (tuple[Literal["frame"], bool, str, int | None, bool, int | None]
               | tuple[Literal["domain"], bool, int])
"""`("frame", inclusive, pattern, lineno, all_frames, domain)` or `("domain", inclusive,
domain)` (what `heaptrail.Filter` / `DomainFilter` turn into)."""


class _SiteRow(TypedDict):
    """One row of TraceTable.sites() (a dict at run time)."""

    key: int
    filename: str
    lineno: int
    size: int
    count: int
    frames: _Frames
    function: str | None


__all__ = [
    "start", "stop", "is_tracing", "get_sample_rate", "DEFAULT_SAMPLE_RATE", "clear_traces",
    "get_traceback_limit", "get_traced_memory", "reset_peak", "get_tracemalloc_memory",
    "get_trace_count", "_get_object_traceback", "_get_traces", "_get_traceback_totals",
    "_ignore_current_thread", "_find_holders", "_analyse_holders", "_last_snapshot_pause",
    "_release_unused_tracebacks", "_release_orphaned_code", "_sniff_file",
    "_set_user_code_rules", "export_snapshot", "export_snapshot_bytes", "heap_profile",
    "write_file_atomically", "EXPORT_FORMATS", "_read_fleet", "FleetSummary", "FLEET_SCHEMA",
    "_render_snapshot_html", "_render_report_html", "_group_leaks", "_is_user_file",
    "SITE_VERDICTS", "LEAK", "SUSPECT", "FIXED", "WARMING_UP", "PLATEAU", "NOT_A_LEAK_PATTERN",
    "PART_OF_LEAK", "ALWAYS_REPORTED", "PROCESS_VERDICTS", "LEAK_PATTERNS", "_encode_window",
    "WATCH_SCHEMA", "_queue_pending_call", "TraceTable", "TrendDetector", "SnapshotFileError",
    "MAX_NFRAME", "__version__", "testing",
]
"""Every name the module defines (PyO3 lists them in `__all__`, private ones too, so stubtest
checks those as well)."""

__version__: Final[str]

# --- tracing (lib.rs, tracer.rs) -------------------------------------------------------------

DEFAULT_SAMPLE_RATE: Final[int]
"""Sampled mode's default mean bytes between two sample points."""
MAX_NFRAME: Final[int]
"""The largest number of frames kept per traceback."""

def start(nframe: int = 1, sample: int = 0) -> None: ...
def stop() -> None: ...
def is_tracing() -> bool: ...
def get_sample_rate() -> int: ...
def clear_traces() -> None: ...
def get_traceback_limit() -> int: ...
def get_traced_memory() -> tuple[int, int]: ...
def reset_peak() -> None: ...
def get_tracemalloc_memory() -> int: ...
def get_trace_count() -> int: ...
def _get_object_traceback(obj: object) -> _Frames | None: ...
def _get_traces() -> TraceTable: ...
def _get_traceback_totals() -> TraceTable: ...
def _ignore_current_thread(ignored: bool = True) -> bool: ...
def _find_holders(filename: str, lineno: int, limit: int = 3) -> list[tuple[Any, int]]: ...
def _analyse_holders(
    candidates: Sequence[tuple[str, int]],
    library: Sequence[str],
    include: Sequence[str],
    exclude: Sequence[str],
    timeout: float = 30.0,
) -> list[dict[str, Any]]: ...
def _last_snapshot_pause() -> float: ...
def _release_unused_tracebacks() -> None: ...
def _release_orphaned_code() -> None: ...
def _sniff_file(prefix: bytes) -> Literal["heaptrail", "pickle", "unknown"]: ...
def _set_user_code_rules(
    library: Sequence[str], include: Sequence[str] = ..., exclude: Sequence[str] = ...
) -> None: ...

class SnapshotFileError(ValueError):
    """A snapshot file is not a valid heaptrail snapshot (wrong type, truncated, corrupt or
    hostile)."""

# --- snapshots (trace_table.rs) --------------------------------------------------------------

@final
class TraceTable:
    """A core snapshot; behaves like stdlib's list of raw trace tuples. Immutable."""

    @staticmethod
    def from_raw(
        traces: Iterable[_RawTrace], traceback_limit: int = 1, sample_rate: int = 0
    ) -> TraceTable: ...
    @staticmethod
    def load(path: _Path) -> tuple[TraceTable, str]: ...
    def dump(self, path: _Path, traceback_limit: int, metadata: str) -> None: ...
    @property
    def traceback_limit(self) -> int: ...
    @property
    def sample_rate(self) -> int: ...
    @property
    def total_size(self) -> int: ...
    def __len__(self) -> int: ...
    @overload
    def __getitem__(self, key: int, /) -> tuple[int, int, _Frames, int | None]: ...
    @overload
    def __getitem__(self, key: slice, /) -> list[tuple[int, int, _Frames, int | None]]: ...
    def __contains__(self, key: object, /) -> bool: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    __hash__: None  # type: ignore[assignment]
    def copy(self) -> TraceTable: ...
    def statistics(
        self, key_type: str, cumulative: bool = False
    ) -> list[tuple[_Frames, int, int]]: ...
    def compare_to(
        self, old: TraceTable, key_type: str, cumulative: bool = False
    ) -> list[tuple[_Frames, int, int, int, int]]: ...
    def sites(
        self,
        library: Sequence[str] = ...,
        include: Sequence[str] = ...,
        exclude: Sequence[str] = ...,
        limit: int | None = None,
    ) -> list[_SiteRow]: ...
    def filter(self, filters: Iterable[_FilterSpec]) -> TraceTable: ...

# --- leak verdicts (trend_detector.rs, leak_entries.rs, watch_report.rs) ---------------------

@final
class TrendDetector:
    def __new__(
        cls,
        history: int | None = None,
        min_windows: int | None = None,
        leak_p: float | None = None,
        suspect_p: float | None = None,
        min_growth_bytes: float | None = None,
        min_rate: float | None = None,
        fixed_after: int | None = None,
        warm_skip: int | None = None,
    ) -> TrendDetector: ...
    def observe(
        self,
        time: float,
        rss_bytes: int,
        traced_bytes: int,
        traced_peak_bytes: int,
        sites: Sequence[tuple[int, int, int]],
        sample_rate: int = 0,
    ) -> dict[str, Any]: ...
    def site_history(self, key: int) -> list[tuple[float, int]] | None: ...

SITE_VERDICTS: Final[list[str]]
LEAK: Final[str]
SUSPECT: Final[str]
FIXED: Final[str]
WARMING_UP: Final[str]
PLATEAU: Final[str]
NOT_A_LEAK_PATTERN: Final[str]
PART_OF_LEAK: Final[str]
ALWAYS_REPORTED: Final[frozenset[str]]
PROCESS_VERDICTS: Final[list[str]]
LEAK_PATTERNS: Final[dict[str, str]]
"""Pattern name -> its one-line fix."""
WATCH_SCHEMA: Final[str]

def _group_leaks(candidates: str) -> str: ...
def _is_user_file(
    filename: str, library: Sequence[str], include: Sequence[str], exclude: Sequence[str]
) -> bool: ...
def _encode_window(report: Mapping[str, Any]) -> str: ...

# --- export (export.rs) ----------------------------------------------------------------------

EXPORT_FORMATS: Final[list[str]]

def export_snapshot(
    table: TraceTable,
    format: str,
    path: _Path,
    *,
    value: str = "bytes",
    read_sources: bool = True,
    time_nanos: int | None = None,
) -> int: ...
def export_snapshot_bytes(
    table: TraceTable,
    format: str,
    *,
    value: str = "bytes",
    read_sources: bool = True,
    time_nanos: int | None = None,
) -> bytes: ...
def heap_profile(
    table: TraceTable,
    *,
    base: TraceTable | None = None,
    seconds: float = 0.0,
    labels: Sequence[tuple[str, int, Sequence[tuple[str, str]]]] = ...,
    library: Sequence[str] = ...,
    include: Sequence[str] = ...,
    exclude: Sequence[str] = ...,
    read_sources: bool = True,
    time_nanos: int | None = None,
) -> bytes: ...
def write_file_atomically(path: _Path, data: bytes) -> int: ...

# --- pages and the fleet summary (html.rs, fleet.rs) ----------------------------------------

def _render_snapshot_html(table: TraceTable, title: str, subtitle: str, limit: int) -> str: ...
def _render_report_html(
    path: _Path, title: str, subtitle: str, limit: int, pid: int | None = None
) -> tuple[str, list[str]]: ...

FLEET_SCHEMA: Final[str]

@final
class FleetSummary:
    """Many processes' watch reports, read and summed up (`_read_fleet`)."""

    @property
    def windows(self) -> int: ...
    @property
    def processes(self) -> int: ...
    @property
    def skipped_files(self) -> list[tuple[str, str]]: ...
    @property
    def warnings(self) -> list[str]: ...
    def text(self, limit: int) -> str: ...
    def json(self, limit: int) -> str: ...
    def html(self, title: str, subtitle: str, limit: int) -> str: ...

def _read_fleet(paths: Sequence[_Path]) -> FleetSummary: ...

# --- attach (remote_call/, x86-64 Linux only) ------------------------------------------------

if sys.platform == "linux":
    def _queue_pending_call(pid: int, code: bytes | None, timeout: float) -> dict[str, Any]: ...

# --- heaptrail._native.testing (testing_hooks.rs): what only tests and benchmarks call -------

class _Testing(types.ModuleType):
    """The submodule `testing` (an attribute of this module; not importable by name)."""

    @staticmethod
    def _stack_depths() -> tuple[int, int]: ...
    @staticmethod
    def _block_headers() -> tuple[bool, int, int]: ...
    @staticmethod
    def _last_analysis_stats() -> str | None: ...

testing: _Testing
