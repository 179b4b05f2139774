"""One request to heaptrail's agent in a running process, shared by `heaptrail attach`,
`detach` and `snapshot`: the PID and --timeout options, the request's directory and delivery
(remote.py), and the agent's refusals turned into CliErrors that say what to do."""

import math
import sys
import time

from . import remote
from .errors import CliError

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


def add_pid(parser):
    parser.add_argument("pid", metavar="PID", help="id of the running Python process")


def add_timeout(parser):
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help="how long to wait for the process to run the request in its main "
                             f"thread; the request is withdrawn after that (default "
                             f"{DEFAULT_TIMEOUT:g})")


def check_positive(name, value):
    if value is not None and not (math.isfinite(value) and value > 0):
        raise CliError(f"{name} must be a positive number of seconds, not {value:g}", 2)


class Session:
    """One request to the agent in the target: its directory, sending, cleaning up."""

    def __init__(self, args):
        self.pid = remote.parse_pid(args.pid)
        check_positive("--timeout", args.timeout)
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
