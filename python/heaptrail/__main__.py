"""The `heaptrail` command line."""

import argparse
import os
import shutil
import subprocess
import sys

from ._settings import Settings

BOOTSTRAP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bootstrap")


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


def _nframe(text):
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 1..65535, not {value}")
    return value


def _seconds(text):
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {value}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="heaptrail",
        description="Find memory leaks in long-running Python processes.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run",
        help="run a command with heaptrail tracing every Python process it starts",
        description=(
            "Run CMD with heaptrail tracing inside every Python process it starts (the "
            "command itself, its subprocesses, forked workers). Each process takes a baseline "
            "snapshot once the warm-up is over and, when it exits, reports the lines whose "
            "live memory grew since then, biggest first, with their growth rate and the "
            "traceback of the biggest grower. Settings reach the processes through HEAPTRAIL_* "
            "environment variables."),
        epilog="example: heaptrail run -- python examples/leaky_service.py",
    )
    run.add_argument("--nframe", type=_nframe, default=Settings.nframe,
                     help=f"frames kept per traceback, 1..65535 (default {Settings.nframe})")
    run.add_argument("--warmup", type=_seconds, default=Settings.warmup, metavar="SECONDS",
                     help=f"seconds before the baseline snapshot (default {Settings.warmup:g})")
    run.add_argument("--top", type=_positive_int, default=Settings.top, metavar="N",
                     help=f"growing lines to report (default {Settings.top})")
    run.add_argument("--report", default="", metavar="FILE",
                     help="append reports to FILE instead of standard error "
                          "(forked workers write FILE.<pid>)")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...",
                     help="the command to run, after --")
    return parser


def run_command(args):
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        print("heaptrail run: no command given (usage: heaptrail run [options] -- CMD ...)",
              file=sys.stderr)
        return 2
    if shutil.which(cmd[0]) is None and not os.path.exists(cmd[0]):
        print(f"heaptrail run: command not found: {cmd[0]}", file=sys.stderr)
        return 127
    settings = Settings(nframe=args.nframe, warmup=args.warmup, top=args.top,
                        report=os.path.abspath(args.report) if args.report else "")
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


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return run_command(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
