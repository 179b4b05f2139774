"""`heaptrail snapshot PID -o FILE`: a snapshot of the live memory of a running process in
which heaptrail is tracing, written by the process and moved to FILE."""

import os
import shutil

from ..._classes import _format_size
from ..errors import CliError
from ..session import HOW, Session, add_pid, add_timeout


def register(commands):
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
    add_pid(snapshot)
    snapshot.add_argument("-o", "--output", required=True, metavar="FILE",
                          help="the snapshot file to write (overwritten if it exists)")
    add_timeout(snapshot)
    snapshot.set_defaults(func=snapshot_command)


def snapshot_command(args):
    output = os.path.abspath(args.output)
    if os.path.isdir(output):
        raise CliError(f"{output} is a directory", 2)
    if not os.path.isdir(os.path.dirname(output)):
        raise CliError(f"no such directory: {os.path.dirname(output)}", 2)
    session = Session(args)
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
