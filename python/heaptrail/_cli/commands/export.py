"""`heaptrail export`: a snapshot as a pprof heap profile, folded stacks or JSON."""

import argparse
import os
import sys

from ..errors import CliError
from ..inputs import add_trust_pickle, load_snapshot
from ..progress import Progress

FORMATS = ("pprof", "collapsed", "json")
VALUES = ("bytes", "blocks")

DESCRIPTION = """\
Write the live memory of a snapshot, per call stack, in a format other tools
read. FILE is a heaptrail snapshot (Snapshot.dump), or a stdlib tracemalloc
dump with --trust-pickle.

formats:
  pprof      gzipped profile.proto heap profile for `go tool pprof` and Grafana
             Pyroscope: sample types alloc_objects, alloc_space, inuse_objects,
             inuse_space (the default). A snapshot holds live blocks only, so
             alloc_* equal inuse_*.
  collapsed  folded stacks for flamegraph.pl, inferno, speedscope: one line per
             call stack, `root;...;leaf VALUE`, VALUE in live bytes (or live
             blocks with --value blocks), largest first.
  json       schema heaptrail.snapshot/1: totals, then stacks (size, count,
             frames most recent first), largest first.

Frames are named after the function that ran the line, `Cache.put (app.py:38)`,
as the snapshot recorded it when it was taken (right even if the source changed
or was never deployed). Snapshots written before heaptrail recorded names, and
stdlib dumps, get the function around the line in the source file if it is
still there (read, never run; --no-source turns this off), else `app.py:38`.

OUT is replaced if it exists, atomically (a failed export leaves the old file
as it was); heaptrail refuses to write over FILE itself. `-o -` (the default)
is stdout; pprof is binary and is never written to a terminal."""


def register(commands):
    export = commands.add_parser(
        "export",
        help="write a snapshot as a pprof profile, folded stacks (flame graphs) or JSON",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  heaptrail export snap.ht --format pprof -o heap.pb.gz && "
               "go tool pprof -top heap.pb.gz\n"
               "  heaptrail export snap.ht --format collapsed | flamegraph.pl > heap.svg\n"
               "  heaptrail export snap.ht --format json | jq '.stacks[0]'",
    )
    export.add_argument("file", metavar="FILE", help="the snapshot to export")
    # Choices are checked by the command, so a mistake is one clear line, not a usage dump.
    export.add_argument("--format", "-f", default="pprof", metavar="FORMAT",
                        help="pprof (default), collapsed or json")
    export.add_argument("-o", "--output", default="-", metavar="OUT",
                        help="where to write; '-' for stdout (default)")
    export.add_argument("--value", default="bytes", metavar="UNIT",
                        help="collapsed only: what a line's value counts, bytes (default) or "
                             "blocks")
    export.add_argument("--no-source", dest="read_sources", action="store_false",
                        help="do not read source files to name functions the snapshot did "
                             "not record; such frames are named file:line")
    add_trust_pickle(export)
    export.set_defaults(func=export_command)


def export_command(args):
    from ..._native import export_snapshot, export_snapshot_bytes

    if args.format not in FORMATS:
        raise CliError(f"unknown format {args.format!r} (choose pprof, collapsed or json)", 2)
    if args.value not in VALUES:
        raise CliError(f"unknown --value {args.value!r} (choose bytes or blocks)", 2)
    to_stdout = args.output == "-"
    if to_stdout and args.format == "pprof" and sys.stdout.isatty():
        raise CliError("pprof profiles are binary: write them to a file (-o heap.pb.gz) "
                       "or pipe them", 2)
    if not to_stdout:
        _check_output(args.output, args.file)

    snapshot = load_snapshot(args.file, args.trust_pickle)
    options = dict(value=args.value, read_sources=args.read_sources,
                   time_nanos=_mtime_nanos(args.file))
    where = "stdout" if to_stdout else args.output
    with Progress(f"exporting {len(snapshot.traces):,} traces as {args.format} to {where}"):
        if to_stdout:
            data = export_snapshot_bytes(snapshot._table, args.format, **options)
            try:
                sys.stdout.flush()
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            except BrokenPipeError:
                # The reader stopped early (`| head`): not an error of ours. Point stdout at
                # devnull so the interpreter's final flush does not complain either.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        try:
            export_snapshot(snapshot._table, args.format, args.output, **options)
        except OSError as exc:
            raise CliError(f"cannot write {args.output}: {exc.strerror or exc}", 1) from None
    return 0


def _check_output(out, source):
    """Refuse what would destroy the input or cannot be an output, before the (maybe long)
    load."""
    if os.path.isdir(out):
        raise CliError(f"{out} is a directory; give a file name with -o", 2)
    try:
        if os.path.exists(out) and os.path.samefile(out, source):
            raise CliError(f"refusing to write over the input file {source}", 2)
    except OSError:
        pass  # the input cannot be read: load_snapshot says so


def _mtime_nanos(path):
    """When the snapshot file was written: pprof's profile time (snapshots do not record when
    they were taken; they are normally dumped right away)."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None
