"""heaptrail's command line (entry point: heaptrail.__main__).

* ``commands/``: one module per verb (run, attach, detach, snapshot, report, diff, export,
  html), each with ``register(commands)``; ``COMMANDS`` lists them in the order of
  `heaptrail --help`.
* beside them, what several verbs share: ``errors`` (CliError, how every command fails),
  ``inputs`` (telling and loading snapshots, dumps and watcher reports), ``progress``,
  ``watch_options`` (the watcher's flags: run, attach), ``session`` and ``remote`` (a request
  to the agent in a running process, and its delivery through ptrace: attach, detach,
  snapshot), ``statistics`` (report, diff) and ``fleet`` (the fleet summary over many
  processes' reports: report, html).

The code that runs inside the attached process is not here: heaptrail._inject.agent.
"""

from .commands import COMMANDS

__all__ = ["COMMANDS"]
