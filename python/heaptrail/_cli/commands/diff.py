"""`heaptrail diff OLD NEW`: what grew between two snapshots per allocation site, biggest
growth first, in tracemalloc's StatisticDiff format or as JSON."""

import json
import sys

from ..._classes import _format_size
from ..inputs import load_snapshot
from ..progress import Progress
from ..statistics import (DIFF_SCHEMA, add_statistics_options, check_options, filtered,
                          frames_json, limited, print_entry, print_rest)


def register(commands):
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
    add_statistics_options(diff)
    diff.set_defaults(func=diff_command)


def diff_command(args):
    check_options(args)
    old = filtered(load_snapshot(args.old, args.trust_pickle), args)
    new = filtered(load_snapshot(args.new, args.trust_pickle), args)
    with Progress(f"comparing {len(new.traces):,} traces with {len(old.traces):,}"):
        diffs = new.compare_to(old, args.key, args.cumulative)
    # Biggest growers first; among equal growth, the bigger site; shrinkers last.
    diffs.sort(key=lambda d: (-d.size_diff, -d.size, d.traceback))
    changed = [d for d in diffs if d.size_diff or d.count_diff]
    shown = limited(changed, args.limit)
    old_total, new_total = old._table.total_size, new._table.total_size
    if args.json:
        json.dump({
            "schema": DIFF_SCHEMA, "old": args.old, "new": args.new, "key_type": args.key,
            "cumulative": args.cumulative,
            "old_total_size": old_total, "new_total_size": new_total,
            "old_total_count": len(old.traces), "new_total_count": len(new.traces),
            "entries": len(changed),
            "stats": [{"traceback": frames_json(d.traceback), "size": d.size,
                       "size_diff": d.size_diff, "count": d.count, "count_diff": d.count_diff}
                      for d in shown],
        }, sys.stdout)
        print()
        return 0
    if not changed:
        print(f"no change from {args.old} to {args.new}"
              + (" in the blocks that match the filters" if args.include or args.exclude else ""))
    for index, d in enumerate(shown, 1):
        print_entry(index, str(d), d.traceback, args.key)
    print_rest(changed[len(shown):], lambda d: d.size_diff, lambda d: d.count_diff, sign=True)
    print(f"Total: {_format_size(old_total, False)} -> {_format_size(new_total, False)} "
          f"({_format_size(new_total - old_total, True)}), "
          f"{len(old.traces):,} -> {len(new.traces):,} blocks")
    return 0
