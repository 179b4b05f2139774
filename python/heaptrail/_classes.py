"""The value classes of the tracemalloc API: Frame, Traceback, Trace, Statistic, StatisticDiff.

They behave exactly like the standard library's (same constructors, attributes, ``str``,
``repr``, equality, hashing and ordering), so code written for ``tracemalloc`` works unchanged.
Raw forms follow ``_tracemalloc``: a frame is ``(filename, lineno)``; a raw traceback is a
tuple of frames *most recent first*, while a :class:`Traceback` lists them oldest first.
"""

from collections.abc import Sequence
from functools import total_ordering
import linecache

__all__ = ["Frame", "Traceback", "Trace", "Statistic", "StatisticDiff"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def _format_size(size, sign):
    """Human-readable size with 3 or 4 significant digits, as tracemalloc prints it."""
    for unit in _UNITS:
        small = abs(size) < 100 and unit != "B"
        if small or abs(size) < 10 * 1024 or unit == "TiB":
            number = ("%+.1f" if sign else "%.1f") if small else ("%+.0f" if sign else "%.0f")
            return f"{number % size} {unit}"
        size /= 1024


def _format_rate(rate):
    """A sample rate as people write it: "512 KiB", "4 KiB", "1 MiB" (else as a size)."""
    for unit, factor in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if rate >= factor and rate % factor == 0:
            return f"{rate // factor} {unit}"
    return _format_size(rate, False)


@total_ordering
class Frame:
    """One frame of a traceback: ``filename`` and ``lineno``."""

    __slots__ = ("_frame",)

    def __init__(self, frame):
        self._frame = frame  # (filename, lineno)

    @property
    def filename(self):
        return self._frame[0]

    @property
    def lineno(self):
        return self._frame[1]

    def __eq__(self, other):
        if not isinstance(other, Frame):
            return NotImplemented
        return self._frame == other._frame

    def __lt__(self, other):
        if not isinstance(other, Frame):
            return NotImplemented
        return self._frame < other._frame

    def __hash__(self):
        return hash(self._frame)

    def __str__(self):
        return f"{self.filename}:{self.lineno}"

    def __repr__(self):
        return f"<Frame filename={self.filename!r} lineno={self.lineno!r}>"


@total_ordering
class Traceback(Sequence):
    """Frames where a memory block was allocated, from the oldest to the most recent."""

    __slots__ = ("_frames", "_total_nframe")

    def __init__(self, frames, total_nframe=None):
        # `frames` comes most recent first (raw order); the sequence shows oldest first.
        self._frames = tuple(reversed(frames))
        self._total_nframe = total_nframe

    @property
    def total_nframe(self):
        """Depth of the stack when the block was allocated (None if unknown)."""
        return self._total_nframe

    def __len__(self):
        return len(self._frames)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return tuple(Frame(f) for f in self._frames[index])
        return Frame(self._frames[index])

    def __contains__(self, frame):
        return frame._frame in self._frames

    def __hash__(self):
        return hash(self._frames)

    def __eq__(self, other):
        if not isinstance(other, Traceback):
            return NotImplemented
        return self._frames == other._frames

    def __lt__(self, other):
        if not isinstance(other, Traceback):
            return NotImplemented
        return self._frames < other._frames

    def __str__(self):
        return str(self[0])

    def __repr__(self):
        total = "" if self._total_nframe is None else f" total_nframe={self._total_nframe}"
        return f"<Traceback {tuple(self)}{total}>"

    def format(self, limit=None, most_recent_first=False):
        """Lines like Python's traceback: '  File "x.py", line 3' then the source line."""
        frames = self
        if limit is not None:
            frames = self[-limit:] if limit > 0 else self[:limit]
        if most_recent_first:
            frames = reversed(frames)
        lines = []
        for frame in frames:
            lines.append(f'  File "{frame.filename}", line {frame.lineno}')
            source = linecache.getline(frame.filename, frame.lineno).strip()
            if source:
                lines.append(f"    {source}")
        return lines


class Trace:
    """One live memory block: ``domain``, ``size`` and ``traceback``."""

    __slots__ = ("_trace",)

    def __init__(self, trace):
        self._trace = trace  # (domain, size, raw frames, total_nframe)

    @property
    def domain(self):
        return self._trace[0]

    @property
    def size(self):
        return self._trace[1]

    @property
    def traceback(self):
        return Traceback(*self._trace[2:])

    def __eq__(self, other):
        if not isinstance(other, Trace):
            return NotImplemented
        return self._trace == other._trace

    def __hash__(self):
        return hash(self._trace)

    def __str__(self):
        return f"{self.traceback}: {_format_size(self.size, False)}"

    def __repr__(self):
        return (f"<Trace domain={self.domain} size={_format_size(self.size, False)}, "
                f"traceback={self.traceback!r}>")


class Statistic:
    """Memory allocated at one key (line, file or traceback): ``size`` and ``count``."""

    __slots__ = ("traceback", "size", "count")

    def __init__(self, traceback, size, count):
        self.traceback = traceback
        self.size = size
        self.count = count

    def __hash__(self):
        return hash((self.traceback, self.size, self.count))

    def __eq__(self, other):
        if not isinstance(other, Statistic):
            return NotImplemented
        return (self.traceback, self.size, self.count) == (other.traceback, other.size, other.count)

    def __str__(self):
        text = "%s: size=%s, count=%i" % (self.traceback, _format_size(self.size, False), self.count)
        if self.count:
            text += f", average={_format_size(self.size / self.count, False)}"
        return text

    def __repr__(self):
        return "<Statistic traceback=%r size=%i count=%i>" % (self.traceback, self.size, self.count)

    def _sort_key(self):
        return (self.size, self.count, self.traceback)


class StatisticDiff:
    """Difference at one key between an old and a new snapshot."""

    __slots__ = ("traceback", "size", "size_diff", "count", "count_diff")

    def __init__(self, traceback, size, size_diff, count, count_diff):
        self.traceback = traceback
        self.size = size
        self.size_diff = size_diff
        self.count = count
        self.count_diff = count_diff

    def _values(self):
        return (self.traceback, self.size, self.size_diff, self.count, self.count_diff)

    def __hash__(self):
        return hash(self._values())

    def __eq__(self, other):
        if not isinstance(other, StatisticDiff):
            return NotImplemented
        return self._values() == other._values()

    def __str__(self):
        text = "%s: size=%s (%s), count=%i (%+i)" % (
            self.traceback, _format_size(self.size, False), _format_size(self.size_diff, True),
            self.count, self.count_diff)
        if self.count:
            text += f", average={_format_size(self.size / self.count, False)}"
        return text

    def __repr__(self):
        return "<StatisticDiff traceback=%r size=%i (%+i) count=%i (%+i)>" % (
            self.traceback, self.size, self.size_diff, self.count, self.count_diff)

    def _sort_key(self):
        return (abs(self.size_diff), self.size, abs(self.count_diff), self.count, self.traceback)
