"""heaptrail's verbs, one module each. Every module has ``register(commands)``, which adds its
sub-parser to ``commands`` (argparse's sub-parsers) with a one-line ``help`` and sets ``func``
to the function that runs it: ``func(args)`` returns the exit status, and reports a failure by
raising ``CliError`` (never by printing it and exiting itself)."""

from . import attach, detach, diff, export, html, report, run, snapshot

COMMANDS = [run, attach, detach, snapshot, report, diff, export, html]
"""In the order `heaptrail --help` lists them: watch a program (run, attach, detach), take a
snapshot of it, read snapshots and reports (report, diff), turn them into other formats
(export, html)."""
