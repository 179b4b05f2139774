"""`heaptrail html`: one self-contained HTML page (nothing fetched from the network) of a
snapshot, a watcher report, or many processes' watcher reports (the fleet page). The page is
rendered in Rust (heaptrail_core::html); this module checks the arguments, picks the input's
kind, shows progress and writes the file."""

import os
import sys

from ... import _native
from ..errors import CliError
from ..fleet import INPUTS_HELP, read_fleet
from ..inputs import HEAPTRAIL, PICKLE, WATCH_REPORT, add_trust_pickle, file_kind, load_snapshot
from ..progress import Progress

DEFAULT_LIMIT = 30


def register(commands):
    html = commands.add_parser(
        "html",
        help="turn a snapshot or a watcher report into a self-contained HTML page",
        description=(
            "Write one HTML file that shows FILE, to open in any browser: it needs no network "
            "(no fonts, scripts or images from elsewhere) and can be attached to a ticket. "
            "For a snapshot (heaptrail's own, or a stdlib tracemalloc dump with --trust-pickle): "
            "totals, a flame graph of live memory by call stack and the lines holding the most "
            "memory. For a watcher report (the JSON Lines file of `heaptrail run --report`): per "
            "process, a chart of each leaking or suspect site's size over time with its "
            "verdict, RSS against traced memory, the sites of the last window (verdict, growth "
            "rate, what holds the memory) and a flame graph of the last window's tracebacks. "
            "A report written by several processes gets one section per process (the 8 most "
            "severe; --pid picks one). Invalid lines after the first are skipped with a "
            "warning; a file whose first line is not a report window is refused. "
            "A directory or several report files get the fleet page: each leak once with the "
            "number of processes that show it, the total and per-process growth rates, live "
            "memory, the holder, the pattern and its fix; the process verdicts; every process "
            "at its latest window. " + INPUTS_HELP),
        epilog="examples: heaptrail html leaks.jsonl -o leaks.html; heaptrail html "
               "/var/log/app/leaks/ (writes /var/log/app/leaks.html)",
    )
    html.add_argument("file", metavar="FILE", nargs="+",
                      help="a heaptrail snapshot, a tracemalloc dump, or a watcher report; or "
                           "a directory of watcher reports, or several")
    html.add_argument("-o", "--output", metavar="OUT",
                      help="the HTML file to write (default: FILE with its extension replaced "
                           "by .html, next to FILE; DIR.html for a directory; required for "
                           "several inputs)")
    html.add_argument("--title", help="the page title (default: from FILE's name)")
    html.add_argument("--limit", type=int, default=DEFAULT_LIMIT, metavar="N",
                      help=f"rows in the tables of lines and sites (default {DEFAULT_LIMIT})")
    html.add_argument("--pid", type=int, metavar="PID",
                      help="watcher reports: show only this process's windows")
    add_trust_pickle(html)
    html.set_defaults(func=html_command)


def default_output(path):
    root, _ext = os.path.splitext(path)
    return root + ".html"


def html_command(args):
    if args.limit < 1:
        raise CliError(f"--limit must be at least 1, not {args.limit}", 2)
    if args.pid is not None and not 0 <= args.pid < 2**32:
        raise CliError(f"--pid must be a process id, not {args.pid}", 2)
    limit = min(args.limit, 2**31)  # any larger number means "all rows" just as well
    if len(args.file) > 1 or os.path.isdir(args.file[0]):
        return _fleet_html(args, limit)
    path = args.file[0]
    out = args.output or default_output(path)
    kind = file_kind(path)
    if kind is None and os.path.getsize(path) == 0:
        raise CliError(f"{path} is empty", 2)
    if os.path.abspath(out) == os.path.abspath(path):
        raise CliError(f"the page would overwrite {path}; choose another file with -o", 2)
    if args.pid is not None and kind != WATCH_REPORT:
        raise CliError("--pid applies to watcher reports only", 2)
    name = os.path.basename(path)
    source = os.path.abspath(path)

    if kind == WATCH_REPORT:
        title = args.title or f"Leak report: {name}"
        with Progress(f"reading {path} and rendering the page"):
            try:
                page, warnings = _native._render_report_html(
                    path, title, f"watcher report {source}", limit, args.pid)
            except ValueError as exc:
                raise CliError(f"{path}: {exc}", 2) from None
            except OSError as exc:
                raise CliError(f"cannot read {path}: {exc.strerror or exc}", 2) from None
        for warning in warnings:
            print(f"heaptrail html: warning: {path}: {warning}", file=sys.stderr)
    else:
        # load_snapshot refuses unknown files and pickles without --trust-pickle.
        snapshot = load_snapshot(path, args.trust_pickle)
        title = args.title or f"Live memory: {name}"
        what = {HEAPTRAIL: "heaptrail snapshot", PICKLE: "tracemalloc dump"}.get(kind, kind)
        with Progress("rendering the page"):
            page = _native._render_snapshot_html(snapshot._table, title, f"{what} {source}",
                                                 limit)
    write_atomically(out, page)
    print(f"wrote {out}")
    return 0


def _fleet_html(args, limit):
    """The fleet page of a directory or several report files."""
    if args.pid is not None:
        raise CliError("--pid applies to one watcher report file, not to a directory or "
                       "several files", 2)
    if args.output:
        out = args.output
    elif len(args.file) == 1:
        out = os.path.normpath(args.file[0]) + ".html"  # next to the directory, not in it
    else:
        raise CliError("several inputs: name the page with -o OUT", 2)
    if os.path.isdir(out):
        raise CliError(f"{out} is a directory; give the page's file name with -o", 2)
    if any(os.path.abspath(out) == os.path.abspath(p) for p in args.file):
        raise CliError(f"the page would overwrite {out}; choose another file with -o", 2)
    with Progress("reading the reports"):
        summary = read_fleet(args.file, "html")
    sources = ", ".join(os.path.abspath(p) for p in args.file[:3])
    sources += f" and {len(args.file) - 3} more" if len(args.file) > 3 else ""
    title = args.title or "Fleet leak report: " + ", ".join(
        os.path.basename(os.path.normpath(p)) for p in args.file[:3])
    with Progress("rendering the page"):
        page = summary.html(title, f"watcher reports {sources}", limit)
    write_atomically(out, page)
    print(f"wrote {out}")
    return 0


def write_atomically(out, text):
    """Write ``text`` to ``out`` whole or not at all (heaptrail_core::atomic_file: a synced
    temporary file renamed over it), so that a failure never leaves a half-written page nor
    destroys an older one."""
    try:
        _native.write_file_atomically(out, text.encode("utf-8"))
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror or exc}", 1) from None
