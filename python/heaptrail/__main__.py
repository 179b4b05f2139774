"""The `heaptrail` command line: one module per verb in heaptrail._cli.commands."""

import argparse
import sys

from . import __version__
from ._cli import COMMANDS
from ._cli.errors import CliError


def build_parser():
    parser = argparse.ArgumentParser(
        prog="heaptrail",
        description="Find memory leaks in long-running Python processes: watch a running "
                    "program (run, attach), read snapshots (report, diff) and turn them into "
                    "profiles and reports (export, html).",
        epilog="`heaptrail COMMAND --help` explains each command.",
    )
    parser.add_argument("--version", action="version", version=f"heaptrail {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(commands)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as exc:
        print(f"heaptrail {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
