"""`heaptrail attach PID`: the leak watcher in a Python process that is already running and
was started without heaptrail. _cli/session.py and remote.py deliver the request, the agent
(heaptrail._inject.agent) carries it out inside the process."""

import dataclasses
import sys

from ..._inject import INSTALLATION
from .. import remote
from ..errors import CliError
from ..session import HOW, Session, add_pid, add_timeout, check_positive
from ..watch_options import add_watch_options, watch_settings


def register(commands):
    attach = commands.add_parser(
        "attach",
        help="start the leak watcher inside a running Python process",
        description=(
            "Start heaptrail's leak watcher inside the running Python process PID, which was "
            "started without heaptrail (no restart, so the leak is still there). Every INTERVAL "
            "seconds the process snapshots its live memory and classifies each allocation site "
            "in your code (leak, suspect, warming-up, plateau, fixed), writing the same reports "
            "as `heaptrail run`; new leaks are logged by its `heaptrail` logger. Without "
            "--duration the watcher runs until `heaptrail detach PID` (which prints the "
            "verdicts) or the end of the process; with --duration it stops by itself and this "
            "command waits and prints the verdicts. " + HOW),
        epilog="example: heaptrail attach 4242 --interval 10 --report /tmp/leaks.jsonl "
               "--duration 300",
    )
    add_pid(attach)
    add_watch_options(
        attach,
        report_help="the process appends one JSON object per window to FILE (JSON Lines, "
                    "schema heaptrail.watch/2); a path as the process sees it",
        prometheus_help="the process serves Prometheus metrics there (a bare PORT binds "
                        "127.0.0.1)")
    attach.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                        help="stop watching after SECONDS and print the verdicts (default: "
                             "watch until `heaptrail detach`)")
    attach.add_argument("--replace", action="store_true",
                        help="if the process runs under `heaptrail run` (e.g. sampled, always "
                             "on), stop that watcher while this one runs and restart it, with "
                             "its own settings, when this one stops: how to switch a running "
                             "service to exact tracing with deeper frames for a hunt, and back")
    add_timeout(attach)
    attach.set_defaults(func=attach_command)


def attach_command(args):
    # The target writes the report, as its own user and in its own view of the files: the
    # agent says if it cannot.
    settings = watch_settings(args, check_report=False)
    check_positive("--duration", args.duration)
    session = Session(args)
    try:
        status = session.send("attach", duration=args.duration, replace=args.replace,
                              settings=dataclasses.asdict(settings),
                              fallback_path=INSTALLATION)
        pid = session.target.pid
        borrowed = (" (borrowed from this heaptrail's installation)" if status.get("borrowed")
                    else "")
        print(f"heaptrail attach: watching process {pid} ({status.get('executable')}, Python "
              f"{status.get('python')}) every {settings.interval:g} s with heaptrail "
              f"{status.get('heaptrail_version')} from {status.get('heaptrail')}{borrowed}")
        if status.get("replaced"):
            print(f"heaptrail attach: the watcher of `heaptrail run` in process {pid} is paused; "
                  "it restarts with its own settings when this one stops")
        if settings.report:
            print(f"heaptrail attach: report: {settings.report}")
            if not session.target.sees_same_file(settings.report):
                print(f"heaptrail attach: note: process {pid} sees another file system here (a "
                      f"container or a private /tmp); from here the report is "
                      f"{session.target.view(settings.report)}")
        if args.duration is None:
            print(f"heaptrail attach: new leaks are logged by the process's `heaptrail` logger; "
                  f"verdicts and stop: heaptrail detach {pid}")
            return 0
        print(f"heaptrail attach: waiting {args.duration:g} s for the verdicts (Ctrl-C leaves "
              f"the watcher running until then)", flush=True)
        try:
            final = remote.wait_for(session.dir, "final.json",
                                    args.duration + settings.interval + session.timeout)
        except KeyboardInterrupt:
            print(f"\nheaptrail attach: process {pid} is still being watched; the watcher stops "
                  f"by itself after {args.duration:g} s, or now with: heaptrail detach {pid}",
                  file=sys.stderr)
            return 130
        if final is None:
            raise CliError(f"the watcher in process {pid} did not report its end in time")
        if final.get("restored"):
            print("heaptrail attach: the watcher of `heaptrail run` is watching again, with its "
                  "own settings")
        if final.get("reason") == "detached":
            print(f"heaptrail attach: stopped early by heaptrail detach after "
                  f"{final.get('seconds')} s")
        print("\n".join(final.get("summary", [])))
        return 0
    finally:
        session.close()
