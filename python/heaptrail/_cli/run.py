"""`heaptrail run`: run a command with the leak watcher inside every Python process it starts."""

import argparse
import os
import shutil
import subprocess
import sys

from .._settings import Settings

BOOTSTRAP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_bootstrap")


def register(commands):
    run = commands.add_parser(
        "run",
        help="run a command with heaptrail's leak watcher in every Python process it starts",
        description=(
            "Run CMD with heaptrail's leak watcher inside every Python process it starts (the "
            "command itself, its Python subprocesses, forked workers). Every INTERVAL seconds "
            "each process snapshots its live memory, follows each allocation site in your code "
            "over time and classifies it (leak, suspect, warming-up, plateau, fixed). New leaks "
            "are logged as they are found; at exit each process prints its verdicts with the "
            "leaking lines, their growth rates and what holds the memory. Settings reach the "
            "processes through HEAPTRAIL_* environment variables."),
        epilog="example: heaptrail run --interval 2 --report leaks.jsonl -- python app.py",
    )
    run.add_argument("--interval", type=float, default=Settings.interval, metavar="SECONDS",
                     help=f"seconds between two windows (default {Settings.interval:g})")
    run.add_argument("--report", default="", metavar="FILE",
                     help="append one JSON object per window to FILE (JSON Lines, schema "
                          "heaptrail.watch/1); forked workers write FILE.<pid>")
    run.add_argument("--prometheus", default="", metavar="HOST:PORT",
                     help="serve Prometheus metrics there (a bare PORT binds 127.0.0.1)")
    run.add_argument("--nframe", type=int, default=Settings.nframe,
                     help=f"frames kept per traceback, 1..65535 (default {Settings.nframe})")
    run.add_argument("--top", type=int, default=Settings.top, metavar="N",
                     help=f"sites listed per window besides leaks and suspects (default {Settings.top})")
    run.add_argument("--include", default="", metavar="PATTERNS",
                     help="comma-separated fnmatch patterns of files that are your code even if "
                          "installed as a package")
    run.add_argument("--exclude", default="", metavar="PATTERNS",
                     help="comma-separated fnmatch patterns of files never to blame")
    # Ranges are checked once, by Settings.check() (the same rules apply to HEAPTRAIL_*).
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...",
                     help="the command to run, after --")
    run.set_defaults(func=run_command)


def run_command(args):
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        print("heaptrail run: no command given (usage: heaptrail run [options] -- CMD ...)",
              file=sys.stderr)
        return 2
    try:
        settings = Settings(interval=args.interval, nframe=args.nframe, top=args.top,
                            report=os.path.abspath(args.report) if args.report else "",
                            prometheus=args.prometheus, include=args.include, exclude=args.exclude)
        settings.check()
    except ValueError as exc:
        print(f"heaptrail run: {exc}", file=sys.stderr)
        return 2
    if shutil.which(cmd[0]) is None and not os.path.exists(cmd[0]):
        print(f"heaptrail run: command not found: {cmd[0]}", file=sys.stderr)
        return 127
    env = dict(os.environ)
    env.update(settings.to_environment())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [BOOTSTRAP, env.get("PYTHONPATH")]))
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"heaptrail run: cannot run {cmd[0]}: {exc}", file=sys.stderr)
        return 126
