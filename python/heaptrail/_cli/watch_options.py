"""The leak watcher's options, shared by `heaptrail run` and `heaptrail attach`: the same flags,
defaults and range checks (Settings.check, the rules HEAPTRAIL_* variables follow too)."""

import argparse
import os
from dataclasses import replace

from .. import _native
from .._settings import Settings, parse_bytes
from .errors import CliError


def _bytes_option(text):
    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_watch_options(parser, report_help, prometheus_help):
    """--interval, --report, --prometheus, --pyroscope*, --nframe, --top, --include, --exclude,
    --sample. The two help texts differ by who writes the report and serves the metrics."""
    # Defaults are None: an option not given falls back to its HEAPTRAIL_* variable, then to
    # the Settings default.
    parser.add_argument("--interval", type=float, metavar="SECONDS",
                        help=f"seconds between two windows (default {Settings.interval:g}, or "
                             "HEAPTRAIL_INTERVAL)")
    parser.add_argument("--report", metavar="FILE", help=report_help)
    parser.add_argument("--report-max-bytes", type=int, metavar="BYTES",
                        help=f"rotate the report past this size: FILE -> FILE.1 -> ... "
                             f"(default {Settings.report_max_bytes >> 20} MiB; 0: never)")
    parser.add_argument("--report-keep", type=int, metavar="N",
                        help=f"rotated reports kept (default {Settings.report_keep}; 0: the "
                             "file is emptied instead)")
    parser.add_argument("--prometheus", metavar="HOST:PORT", help=prometheus_help)
    parser.add_argument("--pyroscope", metavar="URL",
                        help="push each window's heap profile to the Pyroscope server at URL "
                             "(http[s]://HOST:PORT, e.g. http://localhost:4040; or "
                             "HEAPTRAIL_PYROSCOPE). Basic auth from HEAPTRAIL_PYROSCOPE_USER and "
                             "HEAPTRAIL_PYROSCOPE_PASSWORD (or user:password@ in URL), the "
                             "tenant (X-Scope-OrgID) from HEAPTRAIL_PYROSCOPE_TENANT")
    parser.add_argument("--pyroscope-app", metavar="NAME",
                        help="application name in Pyroscope, its service_name (default: the "
                             "program's name, e.g. the script or `-m` module; or "
                             "HEAPTRAIL_PYROSCOPE_APP)")
    parser.add_argument("--pyroscope-labels", metavar="NAME=VALUE,...",
                        help="extra labels of every profile pushed, besides host and pid "
                             "(e.g. env=prod,region=eu; or HEAPTRAIL_PYROSCOPE_LABELS)")
    parser.add_argument("--nframe", type=int,
                        help=f"frames kept per traceback, 1..65535 (default {Settings.nframe})")
    parser.add_argument("--top", type=int, metavar="N",
                        help=f"sites listed per window besides leaks and suspects "
                             f"(default {Settings.top})")
    parser.add_argument("--include", metavar="PATTERNS",
                        help="comma-separated fnmatch patterns of files that are your code even "
                             "if installed as a package")
    parser.add_argument("--exclude", metavar="PATTERNS",
                        help="comma-separated fnmatch patterns of files never to blame")
    default = _native.DEFAULT_SAMPLE_RATE
    parser.add_argument("--sample", nargs="?", const=default, type=_bytes_option,
                        metavar="BYTES",
                        help=f"sampled mode, for production: trace one allocation per BYTES "
                             f"allocated on average (default {default >> 10}K when given "
                             "without a value; 512K, 1M, 65536 ...) and report unbiased "
                             "estimates, at a fraction of exact tracing's cost; 0: exact "
                             "(default, or HEAPTRAIL_SAMPLE)")


def watch_settings(args, check_report=True):
    """The checked Settings the options ask for, each option not given taken from its
    HEAPTRAIL_* variable (the report path made absolute and, if `check_report`, checked to be
    writable from here): a bad value is a CliError with exit status 2 that names the option or
    variable."""
    try:
        settings = Settings.from_environment(
            strict=True, interval=args.interval, nframe=args.nframe, top=args.top,
            report=args.report, prometheus=args.prometheus, include=args.include,
            exclude=args.exclude, report_max_bytes=args.report_max_bytes,
            report_keep=args.report_keep, sample=args.sample, pyroscope=args.pyroscope,
            pyroscope_app=args.pyroscope_app, pyroscope_labels=args.pyroscope_labels)
    except ValueError as exc:
        raise CliError(str(exc), 2) from None
    if settings.report:
        settings = replace(settings, report=os.path.abspath(settings.report))
        if check_report:
            check_writable(settings.report)
    return settings


def check_writable(path):
    """The report must be writable before anything starts: otherwise every process would run
    without its watcher while the command looked fine."""
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise CliError(f"cannot write the report {path}: {exc.strerror or exc}", 2) from None
