"""The leak watcher's options, shared by `heaptrail run` and `heaptrail attach`: the same flags,
defaults and range checks (Settings.check, the rules HEAPTRAIL_* variables follow too)."""

import os

from .._settings import Settings
from .errors import CliError


def add_watch_options(parser, report_help, prometheus_help):
    """--interval, --report, --prometheus, --nframe, --top, --include, --exclude. The two help
    texts differ by who writes the report and serves the metrics."""
    parser.add_argument("--interval", type=float, default=Settings.interval, metavar="SECONDS",
                        help=f"seconds between two windows (default {Settings.interval:g})")
    parser.add_argument("--report", default="", metavar="FILE", help=report_help)
    parser.add_argument("--prometheus", default="", metavar="HOST:PORT", help=prometheus_help)
    parser.add_argument("--nframe", type=int, default=Settings.nframe,
                        help=f"frames kept per traceback, 1..65535 (default {Settings.nframe})")
    parser.add_argument("--top", type=int, default=Settings.top, metavar="N",
                        help=f"sites listed per window besides leaks and suspects "
                             f"(default {Settings.top})")
    parser.add_argument("--include", default="", metavar="PATTERNS",
                        help="comma-separated fnmatch patterns of files that are your code even "
                             "if installed as a package")
    parser.add_argument("--exclude", default="", metavar="PATTERNS",
                        help="comma-separated fnmatch patterns of files never to blame")


def watch_settings(args):
    """The checked Settings the options ask for (the report path made absolute); a bad value is
    a CliError with exit status 2."""
    try:
        settings = Settings(interval=args.interval, nframe=args.nframe, top=args.top,
                            report=os.path.abspath(args.report) if args.report else "",
                            prometheus=args.prometheus, include=args.include,
                            exclude=args.exclude)
        settings.check()
    except ValueError as exc:
        raise CliError(str(exc), 2) from None
    return settings
