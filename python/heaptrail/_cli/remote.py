"""Running heaptrail's agent (heaptrail._inject.agent) inside another, running Python process,
for `heaptrail attach`, `detach` and `snapshot` (session.py makes the requests).

How: for Python 3.11 to 3.13, heaptrail's native ``_queue_pending_call`` (Rust,
``python_api/remote_call/``) stops the target's main thread for a moment with ptrace and queues a pending
call that runs the agent's code (the module says why that is a safe point); on Python 3.14+
``sys.remote_exec`` does the same. The agent answers through JSON files in a fresh directory
made for one request. The directory is made through /proc/PID/root, so it is the target's own /tmp even when the target
runs in a container or with a private /tmp, and it belongs to the target's user (chown'ed when
heaptrail runs as root) so the target can write there.

Every failure leaves the target running: the stopped thread gets its registers back and is
released on every path, errors included.
"""

import errno
import inspect
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from .. import _native
from .._inject import agent
from .errors import CliError

SUPPORTED = ((3, 11), (3, 13))  # the versions a pending call is queued into with ptrace
POLL = 0.05


class Target:
    """A process to run the agent in, checked to exist and to be ours to trace."""

    def __init__(self, pid):
        self.pid = pid
        self.proc = f"/proc/{pid}"
        status = _read_status(self.proc)
        if status is None:
            raise CliError(f"no process with PID {pid}")
        if status.get("State", "").startswith("Z"):
            raise CliError(f"process {pid} has exited (it is a zombie waiting for its parent)")
        if status.get("Tgid", str(pid)) != str(pid):
            raise CliError(f"{pid} is a thread of process {status['Tgid']}: give that PID", 2)
        if "VmSize" not in status:
            raise CliError(f"process {pid} ({status.get('Name', '?')}) is a kernel thread, not "
                           "a Python process")
        self.name = status.get("Name", "?")
        self.uid = int(status.get("Uid", "0").split()[1])   # effective ids
        self.gid = int(status.get("Gid", "0").split()[1])
        self.tracer = int(status.get("TracerPid", "0"))
        try:
            self.exe = os.readlink(f"{self.proc}/exe")
        except OSError:
            self.exe = None

    def alive(self):
        status = _read_status(self.proc)
        return status is not None and not status.get("State", "").startswith("Z")

    def describe(self):
        return f"process {self.pid} ({self.exe or self.name})"

    def view(self, path):
        """`path` as seen from here when the target means it: through its root directory."""
        return f"{self.proc}/root{path}"

    def sees_same_file(self, path):
        """Whether `path` names the same directory for the target as for us (false in a
        container or with a private /tmp)."""
        directory = os.path.dirname(path)
        try:
            return os.path.samefile(directory, self.view(directory))
        except OSError:
            return False


def _read_status(proc):
    try:
        with open(f"{proc}/status", encoding="utf-8", errors="replace") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except (FileNotFoundError, ProcessLookupError):
        return None


def parse_pid(text):
    if not re.fullmatch(r"[0-9]+", text or "") or int(text) <= 0:
        raise CliError(f"PID must be a positive process id, not {text!r}", 2)
    pid = int(text)
    if pid == os.getpid():
        raise CliError("PID is heaptrail's own process", 2)
    return pid


def ptrace_advice(target):
    """Why the kernel may refuse to let us trace `target`, and what to do about it."""
    reasons = []
    if target.tracer:
        reasons.append(f"process {target.tracer} is already tracing it (a debugger, strace or "
                       "a profiler); only one tracer at a time")
    if os.geteuid() != 0 and target.uid != os.geteuid():
        reasons.append(f"it belongs to uid {target.uid}; run heaptrail as that user or as root "
                       "(sudo)")
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            scope = f.read().strip()
    except OSError:
        scope = None
    if scope == "1":
        reasons.append("kernel.yama.ptrace_scope is 1, so only a process's ancestors may trace "
                       "it: run heaptrail with sudo (or with CAP_SYS_PTRACE), or allow it with "
                       "`sudo sysctl kernel.yama.ptrace_scope=0`")
    elif scope == "2":
        reasons.append("kernel.yama.ptrace_scope is 2: only root (CAP_SYS_PTRACE) may trace; "
                       "run heaptrail with sudo")
    elif scope == "3":
        reasons.append("kernel.yama.ptrace_scope is 3: tracing is disabled until reboot")
    if not reasons:
        reasons.append("the process may have made itself non-traceable (setuid or setcap "
                       "programs, prctl(PR_SET_DUMPABLE, 0)); in a container, tracing needs "
                       "CAP_SYS_PTRACE (docker run --cap-add SYS_PTRACE)")
    return "; ".join(reasons)


def check_payload_value(value):
    """Values sent to the target are written into its code as literals: only these types, whose
    repr() is a literal that reads back as the same value."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float) and math.isfinite(value):
        return
    if isinstance(value, list):
        for item in value:
            check_payload_value(item)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"payload keys must be str, not {key!r}")
            check_payload_value(item)
        return
    raise TypeError(f"cannot send {value!r} to the target")


def build_code(request):
    """The Python source the target runs: the agent, then ``_agent_main(request)``, in a fresh
    namespace (a pending call runs code in __main__: this statement binds no name there), and
    nothing may escape from it: an exception from a pending call would surface in the target's
    main thread."""
    check_payload_value(request)
    try:
        source = inspect.getsource(agent)
    except OSError as exc:
        raise CliError(f"cannot read heaptrail's agent source: {exc}") from None
    inner = f"{source}\n_agent_main({request!r})\n"
    # ascii(): the code is plain ASCII whatever the paths contain.
    return (f"try:\n"
            f"    exec(compile({ascii(inner)}, '<heaptrail agent>', 'exec'), "
            f"{{'__name__': '__heaptrail_agent__'}})\n"
            f"except BaseException:\n"
            f"    pass\n")


class RequestDir:
    """A fresh directory for one request, in the target's view of the file system."""

    def __init__(self, target):
        self.target = target
        last = None
        for base in ("/tmp", "/var/tmp", "/dev/shm"):
            try:
                self.local = tempfile.mkdtemp(prefix="heaptrail-", dir=target.view(base))
            except PermissionError as exc:
                raise CliError(f"not permitted to trace {target.describe()} ({exc.strerror} on "
                               f"its files): " + ptrace_advice(target)) from None
            except OSError as exc:
                last = exc
                continue
            self.remote = base + self.local[len(target.view(base)):]
            break
        else:
            raise CliError(f"cannot make a directory the target can write in ({last})")
        if os.geteuid() == 0 and target.uid != 0:
            os.chown(self.local, target.uid, target.gid)

    def path(self, name):
        return os.path.join(self.local, name)

    def read(self, name):
        """The agent's JSON answer `name`, or None if it has not written it yet."""
        try:
            with open(self.path(name), encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise CliError(f"unreadable answer from the target ({exc})") from None
        if not isinstance(data, dict):
            raise CliError("unreadable answer from the target (not a JSON object)")
        return data

    def withdraw(self):
        """Take the request back, unless the agent has started on it (see agent.CLAIM): True
        if withdrawn, so that the agent does nothing when it runs later."""
        try:
            os.close(os.open(self.path(agent.CLAIM), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            return True
        except FileExistsError:
            return False

    def remove(self):
        shutil.rmtree(self.local, ignore_errors=True)


def wait_for(request_dir, name, seconds):
    """Poll for the agent's answer `name` for up to `seconds`; None if it did not come."""
    deadline = time.monotonic() + seconds
    while True:
        answer = request_dir.read(name)
        if answer is not None:
            return answer
        if not request_dir.target.alive():
            raise CliError(f"{request_dir.target.describe()} exited")
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL)


def python_version_from_maps(target):
    """(major, minor) guessed from the libpython or python executable the process maps, or
    None: a hint only; the real version is read from the process's memory."""
    names = [target.exe or ""]
    try:
        with open(f"{target.proc}/maps", encoding="utf-8", errors="replace") as f:
            names += [line.split()[-1] for line in f if "/" in line]
    except OSError:
        pass
    for name in names:
        found = re.search(r"(?:libpython|/python)(\d+)\.(\d+)", name)
        if found:
            return int(found.group(1)), int(found.group(2))
    return None


def queue_pending_call(target, code, timeout):
    """Queue `code` (or, without it, only read the version) in the target: the answer of
    ``_native._queue_pending_call`` (a dict), or CliError when it cannot be done here."""
    queue = getattr(_native, "_queue_pending_call", None)
    if queue is None:
        raise CliError(f"heaptrail attach reaches Python 3.11 to 3.13 on x86-64 Linux only (this "
                       f"machine: {os.uname().machine}); Python 3.14+ works through "
                       "sys.remote_exec")
    return queue(target.pid, code.encode("ascii") if code else None, timeout)


def version_text(hexversion):
    return f"{hexversion >> 24}.{(hexversion >> 16) & 0xFF}.{(hexversion >> 8) & 0xFF}"


def send(target, request_dir, request, timeout, stop_timeout=None):
    """Deliver `request` to the agent in `target` and return its status answer: `timeout` is
    how long the target has to start on it once queued, `stop_timeout` how long its main
    thread has to stop (and each call made there to return) while it is queued."""
    request = dict(request, dir=request_dir.remote, cli_version=list(sys.version_info[:2]))
    code = build_code(request)
    guess = python_version_from_maps(target)
    if guess is not None and guess >= (3, 14):
        _remote_exec(target, request_dir, code, guess, timeout)
    else:
        _check_answer(target, queue_pending_call(target, code, stop_timeout or timeout))
    status = wait_for(request_dir, "status.json", timeout)
    if status is not None:
        return status
    if request_dir.withdraw():
        raise CliError(
            f"{target.describe()} has not run Python code in its main thread for {timeout:g} s "
            "(it may be blocked in a system call or in C code, or joining other threads). The "
            "request was withdrawn: it will do nothing when the main thread runs Python code "
            "again. Try again later or with a longer --timeout.")
    # The agent claimed the request just now: its answer is on its way.
    status = wait_for(request_dir, "status.json", max(timeout, 10))
    if status is None:
        raise CliError(f"{target.describe()} started on the request but did not answer")
    return status


def _check_answer(target, answer):
    error = answer.get("error")
    if error is None and answer.get("queued"):
        return
    if error == "attach":
        if answer.get("errno") == errno.ESRCH or not target.alive():
            raise CliError(f"process {target.pid} exited")
        if answer.get("errno") in (errno.EPERM, errno.EACCES):
            raise CliError(f"not permitted to trace {target.describe()}: "
                           + ptrace_advice(_fresh(target)))
        raise CliError(f"could not trace {target.describe()}: "
                       f"{os.strerror(answer.get('errno') or 0)}")
    if error == "exited":
        raise CliError(f"process {target.pid} exited")
    if error == "not-python":
        raise CliError(f"{target.describe()} is not a Python process (no Python interpreter "
                       "found in its memory)")
    if error == "old-python":
        guess = python_version_from_maps(target)
        which = f"Python {guess[0]}.{guess[1]}" if guess else "a Python older than 3.11"
        raise CliError(f"{target.describe()} runs {which}; heaptrail attach supports 3.11 to 3.13"
                       " (and 3.14+ through sys.remote_exec)")
    version = version_text(answer.get("version", 0))
    if error == "unsupported":
        raise CliError(f"{target.describe()} runs Python {version}; heaptrail attach supports "
                       "3.11 to 3.13 (and 3.14+ through sys.remote_exec)")
    if error == "not-initialized":
        raise CliError(f"the Python interpreter in {target.describe()} is not initialized yet "
                       "(or is shutting down); try again in a moment")
    if error == "mmap-failed":
        raise CliError(f"could not map memory in {target.describe()} for the request")
    if error is None:
        raise CliError(f"the pending-call queue of {target.describe()} is full; try again")
    if error == "timeout":
        raise CliError(f"{answer.get('message', 'timed out')} in {target.describe()}; nothing "
                       "was queued and the process carries on")
    raise CliError(f"could not queue the request in {target.describe()}: "
                   f"{answer.get('message', error)}")


def _fresh(target):
    """The target re-read: who traces it now (a refusal may be due to a debugger that
    attached after we first looked)."""
    try:
        return Target(target.pid)
    except CliError:
        return target


def _remote_exec(target, request_dir, code, version, timeout):
    """Python 3.14+: the interpreter's own safe-point mechanism, driven from an interpreter of
    the same version (the target's own executable if it is one)."""
    wanted = f"python{version[0]}.{version[1]}"
    candidates = [target.view(target.exe)] if target.exe and "python" in target.exe else []
    candidates.append(shutil.which(wanted))
    script = request_dir.path("agent.py")
    with open(script, "w", encoding="ascii") as f:
        f.write(code)
    if os.geteuid() == 0 and target.uid != 0:
        os.chown(script, target.uid, target.gid)
    driver = ("import sys\n"
              "if sys.version_info[:2] != (int(sys.argv[3]), int(sys.argv[4])) or "
              "not hasattr(sys, 'remote_exec'): sys.exit(3)\n"
              "sys.remote_exec(int(sys.argv[1]), sys.argv[2])\n")
    for python in filter(None, candidates):
        try:
            done = subprocess.run([python, "-I", "-c", driver, str(target.pid),
                                   request_dir.remote + "/agent.py", str(version[0]),
                                   str(version[1])],
                                  capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 3:
            continue
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["failed"])[-1]
            if "ermission" in last or "not permitted" in last:
                raise CliError(f"not permitted to trace {target.describe()}: "
                               + ptrace_advice(target))
            raise CliError(f"sys.remote_exec into {target.describe()} failed: {last}")
        return
    raise CliError(f"{target.describe()} runs Python {version[0]}.{version[1]}: reaching it "
                   f"needs sys.remote_exec from a {wanted} interpreter, and none was found "
                   "(put it on PATH)")
