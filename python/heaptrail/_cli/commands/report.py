"""`heaptrail report FILE`: the top allocation sites of a snapshot, in tracemalloc's line
format or as JSON. Over watcher reports (a directory, several files, one report) it prints the
fleet summary (reading the reports: _cli/fleet.py)."""

import json
import sys

from ..._classes import _format_size
from ... import _native
from ..errors import CliError
from ..fleet import INPUTS_HELP, is_fleet_input, read_fleet
from ..inputs import load_snapshot
from ..progress import Progress
from ..statistics import (REPORT_SCHEMA, add_statistics_options, check_options, filtered,
                          frames_json, limited, plural, print_entry, print_rest)


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
    add_statistics_options(report)
    report.set_defaults(func=report_command)


def report_command(args):
    check_options(args)
    if is_fleet_input(args.file):
        return _fleet_report(args)
    args.file = args.file[0]
    snapshot = filtered(load_snapshot(args.file, args.trust_pickle), args)
    with Progress(f"grouping {len(snapshot.traces):,} traces by {args.key}"):
        stats = snapshot.statistics(args.key, args.cumulative)
    total_size = snapshot._table.total_size
    total_count = len(snapshot.traces)
    shown = limited(stats, args.limit)
    if args.json:
        json.dump({
            "schema": REPORT_SCHEMA, "file": args.file, "key_type": args.key,
            "cumulative": args.cumulative, "traceback_limit": snapshot.traceback_limit,
            "total_size": total_size, "total_count": total_count, "entries": len(stats),
            "stats": [{"traceback": frames_json(s.traceback), "size": s.size, "count": s.count}
                      for s in shown],
        }, sys.stdout)
        print()
        return 0
    if not stats:
        print(f"{args.file}: no live blocks" + (" match the filters" if args.include
                                                 or args.exclude else ""))
        return 0
    for index, stat in enumerate(shown, 1):
        print_entry(index, str(stat), stat.traceback, args.key)
    print_rest(stats[len(shown):], lambda s: s.size, lambda s: s.count)
    print(f"Total: {_format_size(total_size, False)} in {total_count:,} blocks, "
          f"{len(stats):,} {plural(args.key)}")
    return 0


def _refuse_snapshot_options(args):
    """--key, --cumulative, --include, --exclude and --all-frames shape a snapshot's
    statistics; over watcher reports they would be silently ignored."""
    given = [name for name, on in (("--key", args.key != "lineno"),
                                   ("--cumulative", args.cumulative),
                                   ("--include", args.include), ("--exclude", args.exclude),
                                   ("--all-frames", args.all_frames)) if on]
    if given:
        raise CliError(f"{', '.join(given)}: for a snapshot, not for watcher reports", 2)


def _fleet_report(args):
    """`heaptrail report` over watcher reports: the fleet summary, as text or JSON."""
    _refuse_snapshot_options(args)
    summary = read_fleet(args.file, "report")
    if args.json:
        print(summary.json(args.limit))
    else:
        sys.stdout.write(summary.text(args.limit))
    return 0
