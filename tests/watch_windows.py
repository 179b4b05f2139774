"""What the watcher tests read from a program's report windows (tests/programs run under
`heaptrail run`), shared by the exact-mode (test_watcher.py) and sampled-mode
(test_sampling.py) checks."""

import os

PROGRAMS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "programs")
# The tests run programs by either spelling of the path (symbolic links resolved or not).
_PREFIXES = tuple({PROGRAMS + os.sep, os.path.realpath(PROGRAMS) + os.sep})


def is_program_file(filename):
    """Is `filename` one of the test programs' files (a program or _service.py)?"""
    return filename.startswith(_PREFIXES)


def serving_from(windows):
    """The first window listing a site of the test programs' files: the program has started
    serving requests (each runs _service.py's request loop, whose churn is listed). Detection
    budgets count from there: how long the interpreter takes to start and import is the
    machine's, not the detector's (on a loaded machine a program importing prometheus_client
    started serving in window 4 and was flagged in window 11, seven windows later, as the
    others were)."""
    return next((w["window"] for w in windows
                 if any(is_program_file(s["filename"]) for s in w["sites"])), None)
