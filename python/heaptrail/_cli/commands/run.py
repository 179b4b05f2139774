"""`heaptrail run`: run a command with the leak watcher inside every Python process it starts."""

import argparse
import os
import shutil
import subprocess

from ..._inject import BOOTSTRAP
from ..errors import CliError
from ..watch_options import add_watch_options, watch_settings


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
    add_watch_options(
        run,
        report_help="append one JSON object per window to FILE (JSON Lines, schema "
                    "heaptrail.watch/2); forked workers append to it too (each line has its pid)",
        prometheus_help="serve Prometheus metrics there (a bare PORT binds 127.0.0.1)")
    # Ranges are checked once, by Settings.check() (the same rules apply to HEAPTRAIL_*).
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...",
                     help="the command to run, after --")
    run.set_defaults(func=run_command)


def run_command(args):
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise CliError("no command given (usage: heaptrail run [options] -- CMD ...)", 2)
    settings = watch_settings(args)
    if shutil.which(cmd[0]) is None and not os.path.exists(cmd[0]):
        raise CliError(f"command not found: {cmd[0]}", 127)
    env = dict(os.environ)
    env.update(settings.to_environment())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [BOOTSTRAP, env.get("PYTHONPATH")]))
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        raise CliError(f"cannot run {cmd[0]}: {exc.strerror or exc}", 126) from None
