"""heaptrail's command-line commands, one module each; every module has ``register(commands)``
that adds its sub-parser(s) and sets ``func`` to the function that runs the command."""

from . import attach, export, html, report, run

COMMANDS = [run, attach, report, export, html]
