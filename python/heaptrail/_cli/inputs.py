"""Reading the files the commands take: heaptrail snapshots, stdlib tracemalloc dumps (pickles,
only with --trust-pickle) and watcher reports (JSON Lines). Every failure becomes a CliError
that says what the file is and what to do."""

import os

from .._native import SnapshotFileError, _sniff_file
from .errors import CliError
from .progress import Progress

HEAPTRAIL = "heaptrail snapshot"
PICKLE = "tracemalloc dump"
WATCH_REPORT = "watcher report"


def file_kind(path):
    """What ``path`` holds, from its first bytes: HEAPTRAIL, PICKLE, WATCH_REPORT or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except IsADirectoryError:
        raise CliError(f"{path}: is a directory", 2) from None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}", 2) from None
    kind = _sniff_file(head)  # the snapshot loader's own test of the first bytes
    if kind == "heaptrail":
        return HEAPTRAIL
    if kind == "pickle":
        return PICKLE
    if head.lstrip().startswith(b"{"):
        return WATCH_REPORT
    return None


def add_trust_pickle(parser):
    parser.add_argument(
        "--trust-pickle", action="store_true",
        help="also read stdlib tracemalloc dumps (Snapshot.dump pickles). Unpickling can run "
             "code: use it only for files you trust. heaptrail only lets tracemalloc's own "
             "classes through.")


def load_snapshot(path, trust_pickle=False):
    """The heaptrail Snapshot in ``path`` (a heaptrail snapshot, or a tracemalloc dump when
    ``trust_pickle``)."""
    from .._snapshot import Snapshot
    from .._stdlib import load_tracemalloc_dump

    kind = file_kind(path)
    if kind == WATCH_REPORT:
        raise CliError(
            f"{path} is a watcher report (JSON Lines), not a snapshot; `heaptrail html` turns "
            f"a report into charts", 2)
    if kind == PICKLE and not trust_pickle:
        raise CliError(
            f"{path} is a pickle (a stdlib tracemalloc dump). Unpickling can run arbitrary "
            f"code, so heaptrail reads it only with --trust-pickle, for files you trust", 2)
    if kind is None:
        raise CliError(
            f"{path} is not a heaptrail snapshot, a tracemalloc dump or a watcher report "
            f"(unknown first bytes)", 2)
    size = os.path.getsize(path)
    with Progress(f"loading {path} ({kind}, {size / 1e6:.1f} MB)"):
        try:
            if kind == HEAPTRAIL:
                return Snapshot.load(path)
            return load_tracemalloc_dump(path, trust_pickle=True)
        except SnapshotFileError as exc:
            raise CliError(f"cannot load {path}: {exc}", 2) from None
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror or exc}", 2) from None
        except Exception as exc:  # a broken or hostile pickle: any unpickling error
            raise CliError(f"cannot load {path} as a tracemalloc dump: "
                           f"{type(exc).__name__}: {exc}", 2) from None
