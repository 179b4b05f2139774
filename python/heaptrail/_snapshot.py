"""``Snapshot``: the live traces at one moment, with tracemalloc's analysis methods.

The traces live in a Rust ``TraceTable``; ``statistics``, ``compare_to`` and ``filter_traces``
run there. Files are written in heaptrail's own binary format (never pickle): see
``Snapshot.dump``.
"""

from collections.abc import Iterable, Sequence
import json

from ._classes import Statistic, StatisticDiff, Trace, Traceback, _format_rate
from contextlib import contextmanager

from ._native import SnapshotFileError, TraceTable, _ignore_current_thread

__all__ = ["Snapshot", "SnapshotFileError"]

# Attributes every Snapshot has; anything else a user set is saved as JSON metadata.
_OWN_ATTRIBUTES = ("traces", "traceback_limit")


class _Traces(Sequence):
    """The traces of a snapshot as a sequence of :class:`Trace` objects (built on access)."""

    def __init__(self, traces):
        self._traces = traces  # a TraceTable: a lazy sequence of raw trace tuples

    def __len__(self):
        return len(self._traces)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return tuple(Trace(t) for t in self._traces[index])
        return Trace(self._traces[index])

    def __contains__(self, trace):
        return trace._trace in self._traces

    def __eq__(self, other):
        if not isinstance(other, _Traces):
            return NotImplemented
        return self._traces == other._traces

    def __repr__(self):
        return f"<Traces len={len(self)}>"


@contextmanager
def _own_work():
    """Objects heaptrail builds for its results are its own work: not traced (as tracemalloc
    does not trace its own tables), which also keeps analysis fast while tracing is on."""
    previous = _ignore_current_thread(True)
    try:
        yield
    finally:
        _ignore_current_thread(previous)


def _table_limit(traceback_limit):
    """The limit as the file format stores it (an unsigned 32-bit int)."""
    if isinstance(traceback_limit, int) and 0 <= traceback_limit < 2**32:
        return traceback_limit
    return 0


class Snapshot:
    """Traces of the memory blocks allocated by Python at one moment."""

    def __init__(self, traces, traceback_limit):
        if not isinstance(traces, TraceTable):
            traces = TraceTable.from_raw(traces, _table_limit(traceback_limit))
        self.traces = _Traces(traces)
        self.traceback_limit = traceback_limit

    @property
    def _table(self):
        return self.traces._traces

    @property
    def sample_rate(self):
        """None for an exact snapshot (every block traced). For one taken in sampled mode
        (``start(sample=R)``), the mean bytes between sample points: its traces are samples,
        and the sizes and counts of ``statistics``, ``compare_to`` and the exports are
        unbiased estimates."""
        return self._table.sample_rate or None

    def __repr__(self):
        kind = ("exact" if self.sample_rate is None else
                f"sampled every {_format_rate(self.sample_rate)} on average: sizes and counts "
                "are estimates")
        return (f"<heaptrail.Snapshot {len(self.traces)} traces, traceback_limit="
                f"{self.traceback_limit}, {kind}>")

    # ---- files ---------------------------------------------------------------------------

    def dump(self, filename):
        """Write the snapshot to ``filename`` in heaptrail's snapshot format.

        Extra attributes set on the snapshot are stored too, as JSON; values JSON cannot
        represent raise TypeError (heaptrail files never contain pickled objects).
        """
        extra = {k: v for k, v in vars(self).items() if k not in _OWN_ATTRIBUTES}
        try:
            metadata = json.dumps({"attributes": extra, "traceback_limit": self.traceback_limit})
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"cannot store the snapshot's extra attributes {sorted(extra)}: heaptrail "
                f"snapshot files keep them as JSON ({exc})") from None
        self._table.dump(filename, _table_limit(self.traceback_limit), metadata)

    @staticmethod
    def load(filename):
        """Read a snapshot written by :meth:`dump`.

        Raises SnapshotFileError (a ValueError) for anything that is not an intact heaptrail
        snapshot file, including stdlib tracemalloc's pickle dumps (see
        :func:`heaptrail.load_tracemalloc_dump`), and OSError if the file cannot be read.
        """
        table, metadata = TraceTable.load(filename)
        try:
            meta = json.loads(metadata) if metadata else {}
            attributes = meta.get("attributes", {})
            limit = meta.get("traceback_limit", table.traceback_limit)
            if not isinstance(attributes, dict):
                raise ValueError("attributes is not an object")
        except (ValueError, AttributeError) as exc:
            raise SnapshotFileError(f"corrupt snapshot metadata in {filename}: {exc}") from None
        snapshot = Snapshot(table, limit)
        for name, value in attributes.items():
            if name not in _OWN_ATTRIBUTES:
                setattr(snapshot, name, value)
        return snapshot

    def export(self, filename, format="pprof", *, value="bytes", read_sources=True):
        """Write the snapshot's live memory per call stack to ``filename`` for other tools:
        ``format`` is ``"pprof"`` (gzipped profile.proto heap profile), ``"collapsed"``
        (folded stacks; ``value="blocks"`` counts blocks instead of bytes) or ``"json"``
        (schema ``heaptrail.snapshot/1``). Functions are named as the snapshot recorded them;
        for snapshots without names (older files, stdlib dumps) they are read from the source
        files unless ``read_sources=False``. Returns the number of bytes written; the file is
        replaced atomically. See ``heaptrail export --help``."""
        from ._native import export_snapshot

        with _own_work():
            return export_snapshot(self._table, format, filename, value=value,
                                   read_sources=read_sources)

    # ---- analysis (in Rust) ----------------------------------------------------------------

    def filter_traces(self, filters):
        """A new Snapshot with only the traces that pass ``filters`` (Filter/DomainFilter).

        Include filters: a trace is kept if any of them matches. Exclude filters: a trace is
        dropped if any of them matches. An empty list copies the snapshot.
        """
        if not isinstance(filters, Iterable):
            raise TypeError(f"filters must be a list of filters, not {type(filters).__name__}")
        filters = list(filters)
        specs = [f._native_spec() for f in filters]
        if None in specs:
            return Snapshot(TraceTable.from_raw(self._filter_in_python(filters),
                                                _table_limit(self.traceback_limit),
                                                self._table.sample_rate),
                            self.traceback_limit)
        return Snapshot(self._table.filter(specs), self.traceback_limit)

    def _filter_in_python(self, filters):
        """Slow path for filter objects the Rust core does not know (custom subclasses)."""
        include = [f for f in filters if f.inclusive]
        exclude = [f for f in filters if not f.inclusive]
        return [trace for trace in self._table
                if (not include or any(f._match(trace) for f in include))
                and all(f._match(trace) for f in exclude)]

    def statistics(self, key_type, cumulative=False):
        """Statistics grouped by ``key_type`` ('filename', 'lineno' or 'traceback'), biggest
        first, as a list of Statistic. ``cumulative`` counts every frame of each traceback."""
        with _own_work():
            return [Statistic(Traceback(frames), size, count)
                    for frames, size, count in self._table.statistics(key_type, bool(cumulative))]

    def compare_to(self, old_snapshot, key_type, cumulative=False):
        """Differences from ``old_snapshot``, biggest change first, as StatisticDiff."""
        with _own_work():
            return [StatisticDiff(Traceback(frames), size, size_diff, count, count_diff)
                    for frames, size, size_diff, count, count_diff
                    in self._table.compare_to(old_snapshot._table, key_type,
                                                bool(cumulative))]

    # ---- stdlib interop --------------------------------------------------------------------

    @classmethod
    def from_tracemalloc(cls, snapshot):
        """Convert a stdlib ``tracemalloc.Snapshot`` (e.g. one you unpickled yourself)."""
        return cls(TraceTable.from_raw(snapshot.traces._traces, _table_limit(snapshot.traceback_limit)),
                   snapshot.traceback_limit)

    def to_tracemalloc(self):
        """This snapshot as a stdlib ``tracemalloc.Snapshot`` (exact snapshots only)."""
        from ._stdlib import stdlib_tracemalloc

        if self.sample_rate is not None:
            raise ValueError("this snapshot was taken in sampled mode: its traces are samples, "
                             "which the standard library's Snapshot would count as whole "
                             "blocks; use heaptrail's statistics() or export() instead")

        return stdlib_tracemalloc().Snapshot(list(self._table), self.traceback_limit)
