"""The fleet summary's inputs (`heaptrail report` and `heaptrail html` over many processes'
watcher reports): directories and files in, the report files and the problems out. Reading,
summing up and rendering are Rust's (heaptrail_core::fleet through `_native._read_fleet`); this
module finds the files and turns every problem into a warning, or into one error when nothing
usable was read."""

import os
import sys

from .. import _native
from .errors import CliError
from .inputs import HEAPTRAIL, PICKLE, WATCH_REPORT, file_kind

INPUTS_HELP = (
    "Watcher reports of many processes: a directory (every watcher report file in it, "
    "not in its subdirectories; rotated copies FILE.1, FILE.2 ... are read with their FILE, as "
    "older windows of the same processes; other files are skipped with a warning), or several "
    "report files, or one report file written by several processes (the workers of `heaptrail "
    "run`). A process is a pid in a report file; each counts with its latest window.")

_NAMES_SHOWN = 5


def is_fleet_input(paths):
    """Whether ``paths`` are watcher reports (a directory, several files, one report) rather
    than one snapshot, which keeps the command's snapshot behaviour."""
    if len(paths) > 1 or os.path.isdir(paths[0]):
        return True
    try:
        return file_kind(paths[0]) == WATCH_REPORT
    except CliError:  # unreadable: the snapshot path says so as it always did
        return False


def _sniff(path):
    """WATCH_REPORT, HEAPTRAIL, PICKLE or None; WATCH_REPORT also for empty and unreadable
    files, which the reader then names with the reason."""
    try:
        if os.path.getsize(path) == 0:
            return WATCH_REPORT
        return file_kind(path)
    except (CliError, OSError):
        return WATCH_REPORT


def _names(names):
    shown = ", ".join(names[:_NAMES_SHOWN])
    return shown + (f" and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else "")


def _scan(directory):
    """The report files in ``directory``, sorted, and the problems met."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        return [], [f"cannot read the directory {directory}: {exc.strerror or exc}"]
    found, others = [], []
    for name in names:
        path = os.path.join(directory, name)
        if os.path.isdir(path):
            continue
        (found if _sniff(path) == WATCH_REPORT else others).append(path)
    if not found:
        why = (f"its files are not watcher reports: {_names([os.path.basename(p) for p in others])}"
               if others else "it is empty" if not names else "it has only directories")
        return [], [f"{directory}: no watcher report in this directory ({why})"]
    problems = []
    if others:
        problems.append(f"{directory}: skipped {len(others)} "
                        f"{'file' if len(others) == 1 else 'files'} that are not watcher "
                        f"reports: {_names([os.path.basename(p) for p in others])}")
    return found, problems


def find_reports(paths):
    """The report files named by ``paths`` (directories expanded, each file once) and the
    problems met on the way."""
    files, problems, seen = [], [], set()
    for path in paths:
        if os.path.isdir(path):
            found, met = _scan(path)
        else:
            kind = _sniff(path)
            if kind in (HEAPTRAIL, PICKLE):
                found, met = [], [f"{path} is a {kind}, not a watcher report; skipped (give it "
                                  f"alone to read it)"]
            else:
                found, met = [path], []
        problems += met
        for file in found:
            real = os.path.realpath(file)
            if real not in seen:
                seen.add(real)
                files.append(file)
    return files, problems


def read_fleet(paths, command):
    """The `_native.FleetSummary` of the reports at ``paths``. Problems are warnings on stderr
    (``heaptrail COMMAND: warning: ...``); when no window could be read at all, a CliError:
    the problem itself when there was one, else a line that says so after the warnings."""
    files, problems = find_reports(paths)
    summary = _native._read_fleet(files) if files else None
    if summary is not None:
        problems += [f"{path}: {reason}; file skipped" for path, reason in summary.skipped_files]
    if summary is None or summary.windows == 0:
        if len(problems) == 1:
            raise CliError(problems[0].removesuffix("; file skipped"), 2)
        warn(command, problems)
        raise CliError(f"no window could be read from {_names(list(paths))}", 2)
    warn(command, problems + summary.warnings)
    return summary


def warn(command, messages):
    for message in messages:
        print(f"heaptrail {command}: warning: {message}", file=sys.stderr)
