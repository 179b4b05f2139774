"""`heaptrail report FILE` and `heaptrail diff OLD NEW`: the top allocation sites of a snapshot,
or what grew between two, in tracemalloc's line format or as JSON. Grouping, filtering and
diffing run in Rust (Snapshot.statistics / compare_to / filter_traces). `heaptrail report` over
watcher reports (a directory, several files, one report) prints the fleet summary (fleet.py)."""

import json
import sys

from .._classes import _format_size
from .._filters import Filter
from .. import _native
from .errors import CliError
from .fleet import INPUTS_HELP, fleet_report, is_fleet_input
from .inputs import add_trust_pickle, load_snapshot
from .progress import Progress

REPORT_SCHEMA = "heaptrail.report/1"
DIFF_SCHEMA = "heaptrail.diff/1"


def register(commands):
    report = commands.add_parser(
        "report",
        help="top allocation sites of a snapshot; the leaks of many watched processes",
        description=(
            "A snapshot: print the allocation sites holding the most live memory in FILE, "
            "biggest first, in tracemalloc's format (file:line: size=..., count=..., "
            "average=...). FILE is a heaptrail snapshot (Snapshot.dump, heaptrail snapshot PID) "
            "or, with --trust-pickle, a stdlib tracemalloc dump. "
            "Watcher reports (the JSON Lines files of `heaptrail run --report` or "
            "watch(report=...), told by their schema line): print the fleet summary, each leak "
            "(its line and pattern) once: in how many processes, the total and per-process "
            "growth rate, live memory, the holder most processes name, the pattern and its "
            "fix, when it was first and last reported; and how many processes have each "
            "process verdict. " + INPUTS_HELP + " Unreadable or foreign files and cut lines "
            "are skipped with a warning; the exit status is 2 only when nothing could be read. "
            "--limit and --json apply to both; --json prints one "
            f"{_native.FLEET_SCHEMA} document."),
        epilog="examples: heaptrail report --limit 5 --include '*/myapp/*' snap.heaptrail; "
               "heaptrail report /var/log/app/leaks/ (the reports of every worker); "
               "heaptrail report --json w-*.jsonl",
    )
    report.add_argument("file", metavar="FILE", nargs="+",
                        help="one snapshot; or watcher reports: directories and/or files")
    _add_common_options(report)
    report.set_defaults(func=report_command)

    diff = commands.add_parser(
        "diff",
        help="growth between two snapshots, biggest growers first",
        description=(
            "Print what changed from OLD to NEW per allocation site, biggest growth first "
            "(sites that shrank come last), in tracemalloc's StatisticDiff format "
            "(file:line: size=... (+...), count=... (+...), average=...)."),
        epilog="example: heaptrail diff --key traceback before.heaptrail after.heaptrail",
    )
    diff.add_argument("old", metavar="OLD", help="the earlier snapshot")
    diff.add_argument("new", metavar="NEW", help="the later snapshot")
    _add_common_options(diff)
    diff.set_defaults(func=diff_command)


def _add_common_options(parser):
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


def _check(args):
    if args.limit < 0:
        raise CliError(f"--limit must be >= 0, not {args.limit}", 2)
    if args.cumulative and args.key == "traceback":
        raise CliError("--cumulative applies to --key lineno or filename, not traceback", 2)


def _filtered(snapshot, args):
    filters = ([Filter(True, p, all_frames=args.all_frames) for p in args.include]
               + [Filter(False, p, all_frames=args.all_frames) for p in args.exclude])
    return snapshot.filter_traces(filters) if filters else snapshot


def _frames(traceback):
    """[[filename, lineno], ...] innermost first, as in the watcher's reports."""
    return [[f.filename, f.lineno] for f in reversed(traceback)]


def _shown(stats, limit):
    return stats[:limit] if limit else stats


def report_command(args):
    _check(args)
    if is_fleet_input(args.file):
        return fleet_report(args)
    args.file = args.file[0]
    snapshot = _filtered(load_snapshot(args.file, args.trust_pickle), args)
    with Progress(f"grouping {len(snapshot.traces):,} traces by {args.key}"):
        stats = snapshot.statistics(args.key, args.cumulative)
    total_size = snapshot._table.total_size
    total_count = len(snapshot.traces)
    shown = _shown(stats, args.limit)
    if args.json:
        json.dump({
            "schema": REPORT_SCHEMA, "file": args.file, "key_type": args.key,
            "cumulative": args.cumulative, "traceback_limit": snapshot.traceback_limit,
            "total_size": total_size, "total_count": total_count, "entries": len(stats),
            "stats": [{"traceback": _frames(s.traceback), "size": s.size, "count": s.count}
                      for s in shown],
        }, sys.stdout)
        print()
        return 0
    if not stats:
        print(f"{args.file}: no live blocks" + (" match the filters" if args.include
                                                 or args.exclude else ""))
        return 0
    for index, stat in enumerate(shown, 1):
        _print_entry(index, str(stat), stat.traceback, args.key)
    _print_rest(stats[len(shown):], lambda s: s.size, lambda s: s.count)
    print(f"Total: {_format_size(total_size, False)} in {total_count:,} blocks, "
          f"{len(stats):,} {_plural(args.key)}")
    return 0


def diff_command(args):
    _check(args)
    old = _filtered(load_snapshot(args.old, args.trust_pickle), args)
    new = _filtered(load_snapshot(args.new, args.trust_pickle), args)
    with Progress(f"comparing {len(new.traces):,} traces with {len(old.traces):,}"):
        diffs = new.compare_to(old, args.key, args.cumulative)
    # Biggest growers first; among equal growth, the bigger site; shrinkers last.
    diffs.sort(key=lambda d: (-d.size_diff, -d.size, d.traceback))
    changed = [d for d in diffs if d.size_diff or d.count_diff]
    shown = _shown(changed, args.limit)
    old_total, new_total = old._table.total_size, new._table.total_size
    if args.json:
        json.dump({
            "schema": DIFF_SCHEMA, "old": args.old, "new": args.new, "key_type": args.key,
            "cumulative": args.cumulative,
            "old_total_size": old_total, "new_total_size": new_total,
            "old_total_count": len(old.traces), "new_total_count": len(new.traces),
            "entries": len(changed),
            "stats": [{"traceback": _frames(d.traceback), "size": d.size,
                       "size_diff": d.size_diff, "count": d.count, "count_diff": d.count_diff}
                      for d in shown],
        }, sys.stdout)
        print()
        return 0
    if not changed:
        print(f"no change from {args.old} to {args.new}"
              + (" in the blocks that match the filters" if args.include or args.exclude else ""))
    for index, d in enumerate(shown, 1):
        _print_entry(index, str(d), d.traceback, args.key)
    _print_rest(changed[len(shown):], lambda d: d.size_diff, lambda d: d.count_diff, sign=True)
    print(f"Total: {_format_size(old_total, False)} -> {_format_size(new_total, False)} "
          f"({_format_size(new_total - old_total, True)}), "
          f"{len(old.traces):,} -> {len(new.traces):,} blocks")
    return 0


def _print_entry(index, line, traceback, key):
    if key != "traceback":
        print(line)
        return
    # tracemalloc's str() names a traceback by its oldest frame; here the frames follow,
    # innermost (the allocating line) first, so the heading keeps only the numbers.
    print(f"#{index} {line[len(str(traceback)) + 2:]}")
    for frame in reversed(traceback):
        print(f"    {frame.filename}:{frame.lineno}")


def _print_rest(rest, size, count, sign=False):
    if rest:
        print(f"{len(rest):,} other: size={_format_size(sum(map(size, rest)), sign)}, "
              f"count={sum(map(count, rest)):{'+' if sign else ''},}")


def _plural(key):
    return {"lineno": "lines", "traceback": "tracebacks", "filename": "files"}[key]
