"""`heaptrail attach PID`, `heaptrail detach PID`, `heaptrail snapshot PID -o FILE`: the leak
watcher in a Python process that is already running and was started without heaptrail.
remote.py delivers the request, agent.py carries it out inside the process."""

import dataclasses
import math
import os
import shutil
import sys
import time

from .._classes import _format_size
from . import remote
from .errors import CliError
from .watch_options import add_watch_options, watch_settings

DEFAULT_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0  # for the main thread to stop (ptrace) and each call made in it to return

HOW = (
    "How it works: heaptrail stops the process's main thread for a moment (ptrace, a few "
    "milliseconds; other threads carry on) and queues a pending call, which the interpreter "
    "runs in its main thread between two bytecodes, holding the GIL; nothing runs inside an "
    "allocation or a C call. The thread gets all its registers back and the process carries "
    "on, including when anything fails. Needs the right to trace the process (same user, or "
    "root; see kernel.yama.ptrace_scope), and heaptrail importable in the process's "
    "environment (if it is not and the process runs this heaptrail's Python version, this "
    "heaptrail's installation is used). Python 3.11 to 3.13 on x86-64 Linux; 3.14+ through "
    "sys.remote_exec.")


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
    _add_pid(attach)
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
    _add_timeout(attach)
    attach.set_defaults(func=attach_command)

    detach = commands.add_parser(
        "detach",
        help="stop the watcher that `heaptrail attach` started",
        description=(
            "Stop the leak watcher that `heaptrail attach` started in process PID, and print "
            "its verdicts (the last window's). Tracing stops too, unless the program traced "
            "memory itself before. The process carries on. " + HOW),
        epilog="example: heaptrail detach 4242",
    )
    _add_pid(detach)
    _add_timeout(detach)
    detach.set_defaults(func=detach_command)

    snapshot = commands.add_parser(
        "snapshot",
        help="write a snapshot of a running process in which heaptrail is tracing",
        description=(
            "Write a heaptrail snapshot of the live memory of process PID, in which heaptrail "
            "is tracing (`heaptrail attach`, `heaptrail run`, or heaptrail.start() / watch() "
            "in the program), to FILE: read it with `heaptrail report`, compare two with "
            "`heaptrail diff`, or turn it into a profile with `heaptrail export`. " + HOW),
        epilog="example: heaptrail snapshot 4242 -o before.heaptrail",
    )
    _add_pid(snapshot)
    snapshot.add_argument("-o", "--output", required=True, metavar="FILE",
                          help="the snapshot file to write (overwritten if it exists)")
    _add_timeout(snapshot)
    snapshot.set_defaults(func=snapshot_command)


def _add_pid(parser):
    parser.add_argument("pid", metavar="PID", help="id of the running Python process")


def _add_timeout(parser):
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help="how long to wait for the process to run the request in its main "
                             f"thread; the request is withdrawn after that (default "
                             f"{DEFAULT_TIMEOUT:g})")


def _positive(name, value):
    if value is not None and not (math.isfinite(value) and value > 0):
        raise CliError(f"{name} must be a positive number of seconds, not {value:g}", 2)


class _Session:
    """One request to the agent in the target: its directory, sending, cleaning up."""

    def __init__(self, args):
        self.pid = remote.parse_pid(args.pid)
        _positive("--timeout", args.timeout)
        self.timeout = args.timeout
        self.target = remote.Target(self.pid)
        self.dir = remote.RequestDir(self.target)

    def send(self, action, **fields):
        status = remote.send(self.target, self.dir, dict(fields, action=action), self.timeout,
                             stop_timeout=STOP_TIMEOUT)
        if not status.get("ok"):
            raise _status_error(self.target, status)
        return status

    def close(self):
        self.dir.remove()


def _status_error(target, status):
    kind, message = status.get("error"), status.get("message", "")
    where = f"process {target.pid}"
    if kind == "not-importable":
        python = status.get("python", "?")
        text = (f"heaptrail is not importable in {where} (Python {python}, "
                f"{status.get('executable') or target.exe}): {message}. ")
        mine = ".".join(map(str, sys.version_info[:2]))
        if python.split(".")[:2] != mine.split("."):
            text += (f"This heaptrail runs on Python {mine} and cannot be loaded into a "
                     f"{'.'.join(python.split('.')[:2])} process: ")
        return CliError(text + "install heaptrail in that process's environment "
                        f"({status.get('executable') or 'its python'} -m pip install heaptrail)")
    if kind == "already-attached":
        settings = status.get("settings", {})
        since = time.strftime("%H:%M:%S", time.localtime(status.get("since", 0)))
        report = f", report {settings['report']}" if settings.get("report") else ""
        return CliError(f"heaptrail attach is already watching {where} (since {since}, every "
                        f"{settings.get('interval', '?'):g} s{report}); stop it first with: "
                        f"heaptrail detach {target.pid}")
    if kind == "already-watching":
        hint = ("; to watch with other settings until detach, add --replace" if
                status.get("replaceable") else "")
        return CliError(f"{message} ({where}); `heaptrail snapshot {target.pid} -o FILE` works "
                        f"there{hint}")
    if kind == "not-tracing":
        return CliError(f"heaptrail is not tracing {where}; start it with: heaptrail attach "
                        f"{target.pid}")
    if kind == "watch-failed":
        return CliError(f"could not start the watcher in {where}: {message}")
    if kind == "not-attached":
        text = f"heaptrail attach is not watching {where}"
        if status.get("other_watcher"):
            text += ("; the heaptrail watcher there was started by `heaptrail run` or "
                     "heaptrail.watch() and stops with the process")
        return CliError(text)
    if kind == "snapshot-failed":
        return CliError(f"{message} ({where})")
    return CliError(f"heaptrail failed inside {where}: {message or kind}")


def attach_command(args):
    # The target writes the report, as its own user and in its own view of the files: the
    # agent says if it cannot.
    settings = watch_settings(args, check_report=False)
    _positive("--duration", args.duration)
    session = _Session(args)
    try:
        status = session.send("attach", duration=args.duration, replace=args.replace,
                              settings=dataclasses.asdict(settings),
            fallback_path=os.path.dirname(os.path.dirname(os.path.dirname(
                os.path.abspath(__file__)))))
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


def detach_command(args):
    session = _Session(args)
    try:
        status = session.send("detach")
        print(f"heaptrail detach: stopped watching process {session.target.pid} after "
              f"{status.get('seconds')} s ({status.get('windows')} windows)")
        if status.get("restored"):
            print("heaptrail detach: the watcher of `heaptrail run` is watching again, with its "
                  "own settings")
        print("\n".join(status.get("summary", [])))
        return 0
    finally:
        session.close()


def snapshot_command(args):
    output = os.path.abspath(args.output)
    if os.path.isdir(output):
        raise CliError(f"{output} is a directory", 2)
    if not os.path.isdir(os.path.dirname(output)):
        raise CliError(f"no such directory: {os.path.dirname(output)}", 2)
    session = _Session(args)
    try:
        status = session.send("snapshot")
        name = str(status.get("file"))
        if os.path.basename(name) != name:
            raise CliError(f"unexpected answer from process {session.target.pid}: {name!r}")
        try:
            shutil.move(session.dir.path(name), output)
        except OSError as exc:
            raise CliError(f"cannot write {output}: {exc}") from None
        print(f"heaptrail snapshot: wrote {output} from process {session.target.pid}: "
              f"{status.get('traces')} traces, {_format_size(status.get('traced_bytes', 0), False)}"
              f" traced, traceback limit {status.get('traceback_limit')}")
        return 0
    finally:
        session.close()
