"""What `heaptrail report` and `heaptrail diff` share: their options (grouping key, filters,
--limit, --json), checking them, filtering a snapshot, and printing entries in tracemalloc's
line format or as JSON rows. Grouping, filtering and diffing run in Rust
(Snapshot.statistics / compare_to / filter_traces)."""

from .._classes import _format_size
from .._filters import Filter
from .. import _native
from .errors import CliError
from .inputs import add_trust_pickle

REPORT_SCHEMA = "heaptrail.report/1"
DIFF_SCHEMA = "heaptrail.diff/1"


def add_statistics_options(parser):
    parser.add_argument(
        "--key", choices=("lineno", "traceback", "filename"), default="lineno",
        help="group by line (default), by whole traceback, or by file")
    parser.add_argument(
        "--cumulative", action="store_true",
        help="count each block in every frame of its traceback, not only the innermost "
             "(with --key lineno or filename)")
    parser.add_argument("--limit", type=int, default=10, metavar="N",
                        help="show the N biggest entries (default 10; 0 shows all)")
    parser.add_argument(
        "--include", action="append", default=[], metavar="PATTERN",
        help="keep only blocks allocated in files matching this fnmatch pattern (repeatable)")
    parser.add_argument(
        "--exclude", action="append", default=[], metavar="PATTERN",
        help="drop blocks allocated in files matching this fnmatch pattern (repeatable)")
    parser.add_argument(
        "--all-frames", action="store_true",
        help="--include/--exclude match any frame of the traceback, not only the innermost")
    parser.add_argument("--json", action="store_true",
                        help=f"print one JSON object (schemas {REPORT_SCHEMA} / {DIFF_SCHEMA}; "
                             f"`report` over watcher reports: {_native.FLEET_SCHEMA})")
    add_trust_pickle(parser)


def check_options(args):
    if args.limit < 0:
        raise CliError(f"--limit must be >= 0, not {args.limit}", 2)
    if args.cumulative and args.key == "traceback":
        raise CliError("--cumulative applies to --key lineno or filename, not traceback", 2)


def filtered(snapshot, args):
    filters = ([Filter(True, p, all_frames=args.all_frames) for p in args.include]
               + [Filter(False, p, all_frames=args.all_frames) for p in args.exclude])
    return snapshot.filter_traces(filters) if filters else snapshot


def frames_json(traceback):
    """[[filename, lineno], ...] innermost first, as in the watcher's reports."""
    return [[f.filename, f.lineno] for f in reversed(traceback)]


def limited(stats, limit):
    return stats[:limit] if limit else stats


def print_entry(index, line, traceback, key):
    if key != "traceback":
        print(line)
        return
    # tracemalloc's str() names a traceback by its oldest frame; here the frames follow,
    # innermost (the allocating line) first, so the heading keeps only the numbers.
    print(f"#{index} {line[len(str(traceback)) + 2:]}")
    for frame in reversed(traceback):
        print(f"    {frame.filename}:{frame.lineno}")


def print_rest(rest, size, count, sign=False):
    if rest:
        print(f"{len(rest):,} other: size={_format_size(sum(map(size, rest)), sign)}, "
              f"count={sum(map(count, rest)):{'+' if sign else ''},}")


def plural(key):
    return {"lineno": "lines", "traceback": "tracebacks", "filename": "files"}[key]
