"""From growing sites to leak entries: who holds them, the line to fix, the pattern.

The trend detector says which sites grow. For those, the heap is analysed in a forked copy of
the process (`_native._analyse_holders`: the holder of each site's blocks and its path from a
root, without stalling the application), and the Rust core groups the sites by holder
(`_native._group_leaks`, rules in crates/heaptrail-core/src/leak/entries.rs). This module only
decides *when* to analyse, resolves the holder's element types against the live classes
(exceptions, callables, asyncio tasks: the pattern needs to know), and writes the results
into the window's rows.
"""

import json
import logging
import sys

from . import _native

log = logging.getLogger("heaptrail")

# A site's analysis is reused for this many windows; a new leak candidate triggers a new one.
REFRESH_WINDOWS = 10
LEAK = _native.LEAK
PART_OF_LEAK = _native.PART_OF_LEAK
FIXED = _native.FIXED
WARMING_UP = _native.WARMING_UP
PLATEAU = _native.PLATEAU
BOUNDED = _native.NOT_A_LEAK_PATTERN
# Sites found held by a bounded cache, remembered (at most this many) so that the trend
# detector's later `fixed` (the cache is full) is reported as the plateau it is.
MAX_BOUNDED_SITES = 1000
PATTERN_HINTS = _native.LEAK_PATTERNS

_CALLABLE_TYPES = {"builtins.function", "builtins.method", "builtins.builtin_function_or_method",
                   "functools.partial", "builtins.method-wrapper", "weakref.WeakMethod"}


def _resolve_type(name):
    """The class named `module.qualname`, if that module is loaded and names it."""
    module_name, _, qualname = name.rpartition(".")
    while module_name:
        module = sys.modules.get(module_name)
        if module is not None:
            obj = module
            for part in qualname.split("."):
                obj = getattr(obj, part, None)
                if obj is None:
                    return None
            return obj if isinstance(obj, type) else None
        # `pkg.mod.Class.Inner`: move one more part into the qualname.
        module_name, _, head = module_name.rpartition(".")
        qualname = f"{head}.{qualname}"
    return None


def element_kinds(element_types):
    """How many sampled elements are exceptions, callables, asyncio tasks."""
    kinds = {"total": 0, "exceptions": 0, "callables": 0, "tasks": 0}
    future = getattr(sys.modules.get("asyncio"), "Future", None)
    for name, n in (element_types or {}).items():
        kinds["total"] += n
        cls = _resolve_type(name)
        if cls is not None and issubclass(cls, BaseException):
            kinds["exceptions"] += n
        elif cls is not None and future is not None and issubclass(cls, future):
            kinds["tasks"] += n
        elif name in _CALLABLE_TYPES or (
                cls is not None and any("__call__" in vars(k) for k in cls.__mro__[:-1])):
            kinds["callables"] += n
    return kinds


def _library_module(name, rules):
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    if module is None or not path:
        return True  # built-in or frozen
    return not _native._is_user_file(path, *rules)


def _named(line, functions):
    """`line` (a dict with filename and lineno) with the function running it, when the
    window's rows know it (the name the snapshot recorded for the site's frame)."""
    function = functions.get((line["filename"], line["lineno"]))
    if function:
        line["function"] = function
    return line


def _rows_at(by_key, sites):
    """(key, row) of the rows of `by_key` whose line is one of `sites` (dicts with filename
    and lineno)."""
    lines = {(site["filename"], site["lineno"]) for site in sites}
    return [(key, row) for key, row in by_key.items() if (row["filename"], row["lineno"]) in lines]


class LeakAnalyser:
    """Keeps the holder analyses of the current leak candidates and turns each window's
    rows into leak entries."""

    def __init__(self, library, include, exclude, timeout=30.0):
        self._library, self._include, self._exclude = library, include, exclude
        self._timeout = timeout
        self._analyses = {}  # site key -> (window analysed, analysis dict)
        self._bounded = {}   # site key -> (holder, pattern): growth a bounded cache holds
        self.pauses_ms = []  # application pause of each analysis (the fork), latest last

    def _analyse(self, window, candidates):
        stale = [key for key, *_ in candidates
                 if key not in self._analyses or window - self._analyses[key][0] >= REFRESH_WINDOWS]
        # Forget sites that stopped being candidates: the state is bounded by what leaks now.
        keep = {key for key, *_ in candidates}
        for key in list(self._analyses):
            if key not in keep:
                del self._analyses[key]
        if not stale:
            return
        # One analysis for all candidates: their holders are compared with each other.
        try:
            results = _native._analyse_holders([(f, n) for _, f, n in candidates], self._library,
                                               self._include, self._exclude, self._timeout)
        except Exception:  # the analysis must never take the watcher down
            log.exception("heaptrail: holder analysis failed")
            return
        for (key, _, _), result in zip(candidates, results):
            self._analyses[key] = (window, result)
            if result.get("error"):
                log.info("heaptrail: holder analysis of %s:%s: %s", result.get("filename"),
                         result.get("lineno"), result["error"])
        if results:
            self.pauses_ms.append(max(r.get("pause_ms", 0.0) for r in results))
            del self.pauses_ms[:-100]

    def _not_a_leak(self, entry, by_key):
        """Growth held by a cache with a size bound (still filling up): its sites are
        reported as warming up, with the holder and pattern that say why, not as a leak."""
        for key, row in _rows_at(by_key, entry["sites"] + [entry]):
            row["verdict"] = WARMING_UP
            row.pop("leak_site", None)
            row["holder"], row["pattern"] = entry["holder"], entry["pattern"]
            self._bounded[key] = (entry["holder"], entry["pattern"])
        while len(self._bounded) > MAX_BOUNDED_SITES:
            del self._bounded[next(iter(self._bounded))]

    def _settle_bounded(self, rows):
        """Sites a bounded cache held: once full, the detector calls them `fixed` (they
        stopped growing); they are a plateau. While still growing they stay warming up."""
        for row in rows:
            known = self._bounded.get(row["_key"])
            if known is None:
                continue
            if row["verdict"] == FIXED:
                row["verdict"] = PLATEAU
            elif row["verdict"] in (LEAK, PART_OF_LEAK):
                continue  # analysed again below: still the bounded cache, or a leak now
            row["holder"], row["pattern"] = known

    def entries(self, window, rows):
        """Analyses the rows whose trend verdict is `leak`, groups them by holder, rewrites
        their verdicts (one `leak` per entry, `part-of-leak` for the sites under it) and
        returns the report's `leaks` list."""
        self._settle_bounded(rows)
        candidates = [(row["_key"], row["filename"], row["lineno"]) for row in rows
                      if row["verdict"] == LEAK]
        if not candidates:
            self._analyses.clear()
            return []
        self._analyse(window, candidates)
        by_key = {row["_key"]: row for row in rows}
        payload = []
        for key, _, _ in candidates:
            row = by_key[key]
            analysis = self._analyses.get(key, (0, None))[1] or {
                "filename": row["filename"], "lineno": row["lineno"],
                "error": "not analysed"}
            holder = analysis.get("holder") or {}
            payload.append({
                "key": key, "filename": row["filename"], "lineno": row["lineno"],
                "size": row["size"], "count": row["count"],
                "bytes_per_second": max(row["bytes_per_second"], 0.0),
                "analysis": analysis, "kinds": element_kinds(holder.get("element_types")),
            })
        grouped = json.loads(_native._group_leaks(json.dumps(payload)))
        entries = grouped["entries"]
        for a in grouped["assignments"]:
            entry = entries[a["entry"]]
            row = by_key[a["key"]]
            row["verdict"] = LEAK if a["primary"] else PART_OF_LEAK
            if not a["primary"]:
                row["leak_site"] = f"{entry['filename']}:{entry['lineno']}"
        functions = {(row["filename"], row["lineno"]): row["function"] for row in rows
                     if row.get("function")}
        leaks = []
        for entry in entries:
            if entry["pattern"] == BOUNDED:
                self._not_a_leak(entry, by_key)
                continue
            line = by_key.get(entry["key"])
            if line is not None and line["verdict"] != LEAK:
                line["verdict"] = LEAK  # the owners' line of internal-storage growth
            root = entry["path"][0] if entry["path"] else None
            feeding = None
            if root and root["kind"] == "module" and _library_module(root["name"], (self._library, self._include, self._exclude)):
                feeding = _named({"filename": entry["filename"], "lineno": entry["lineno"]},
                                 functions)
            leak = {
                "site": _named({"filename": entry["filename"], "lineno": entry["lineno"]},
                               functions),
                "holder": entry["holder"],
                "holder_type": entry["holder_type"],
                "path": entry["path"],
                "pattern": entry["pattern"],
                "hint": entry["hint"],
                "size": entry["size"],
                "count": entry["count"],
                "bytes_per_second": round(entry["bytes_per_second"], 3),
                "sites": [_named(site, functions) for site in entry["sites"]],
                "feeding_line": feeding,
            }
            if entry.get("note"):
                leak["note"] = entry["note"]
            leaks.append(leak)
            for _, row in _rows_at(by_key, entry["sites"]):
                row["holder"], row["pattern"] = entry["holder"], entry["pattern"]
            if line is not None:
                line["holder"] = entry["holder"]
                line["pattern"] = entry["pattern"]
        return leaks
