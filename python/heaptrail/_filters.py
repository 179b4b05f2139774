"""Trace filters: ``Filter`` (by filename pattern, line, domain) and ``DomainFilter``.

The per-frame methods (``_match_frame``, ``_match_traceback``, ``_match``) keep the standard
library's semantics for code that calls them directly; ``Snapshot.filter_traces`` hands these
filters to the Rust core, which applies the same rules to a whole snapshot at once.
"""

import fnmatch
import os.path

__all__ = ["BaseFilter", "Filter", "DomainFilter"]


def _normalize_filename(filename):
    filename = os.path.normcase(filename)
    if filename.endswith(".pyc"):
        filename = filename[:-1]
    return filename


class BaseFilter:
    """Base class of trace filters; ``inclusive`` says whether matching traces are kept."""

    def __init__(self, inclusive):
        self.inclusive = inclusive

    def _match(self, trace):
        raise NotImplementedError

    def _native_spec(self):
        """This filter as the tuple the Rust core takes, or None if it has no such form."""
        return None


class Filter(BaseFilter):
    """Keeps (``inclusive=True``) or drops traces whose frame matches ``filename_pattern``
    (fnmatch syntax), optionally only at ``lineno`` and in ``domain``. With ``all_frames`` any
    frame of the traceback may match, otherwise only the most recent one."""

    def __init__(self, inclusive, filename_pattern, lineno=None, all_frames=False, domain=None):
        super().__init__(inclusive)
        self._filename_pattern = _normalize_filename(filename_pattern)
        self.lineno = lineno
        self.all_frames = all_frames
        self.domain = domain

    @property
    def filename_pattern(self):
        return self._filename_pattern

    def _match_frame_impl(self, filename, lineno):
        if not fnmatch.fnmatch(_normalize_filename(filename), self._filename_pattern):
            return False
        return self.lineno is None or lineno == self.lineno

    def _match_frame(self, filename, lineno):
        return self._match_frame_impl(filename, lineno) ^ (not self.inclusive)

    def _match_traceback(self, traceback):
        if self.all_frames:
            hit = any(self._match_frame_impl(name, lineno) for name, lineno in traceback)
            return hit if self.inclusive else not hit
        filename, lineno = traceback[0]
        return self._match_frame(filename, lineno)

    def _match(self, trace):
        domain, _size, traceback, _total = trace
        res = self._match_traceback(traceback)
        if self.domain is None:
            return res
        if self.inclusive:
            return res and domain == self.domain
        return res or domain != self.domain

    def _native_spec(self):
        if type(self) is not Filter or not _is_native_int(self.lineno, signed=True):
            return None
        if not _is_native_int(self.domain, signed=False):
            return None
        return ("frame", bool(self.inclusive), self._filename_pattern, self.lineno,
                bool(self.all_frames), self.domain)


class DomainFilter(BaseFilter):
    """Keeps (``inclusive=True``) or drops the traces of one address-space ``domain``."""

    def __init__(self, inclusive, domain):
        super().__init__(inclusive)
        self._domain = domain

    @property
    def domain(self):
        return self._domain

    def _match(self, trace):
        domain, _size, _traceback, _total = trace
        return (domain == self.domain) ^ (not self.inclusive)

    def _native_spec(self):
        if type(self) is not DomainFilter or not _is_native_int(self._domain, signed=False):
            return None
        return ("domain", bool(self.inclusive), self._domain)


def _is_native_int(value, signed):
    """None, or an int the Rust core can represent (i64 when signed, else u64)."""
    if value is None:
        return True
    if type(value) is not int:
        return False
    return -(2**63) <= value < 2**63 if signed else 0 <= value < 2**64
